"""Shared fixtures: a fresh data root per test, the code location loaded against it, and a headless driver.

Every test process loads its own copy of the demo's defs folder (`DEFS_DIR`, through
`POS_LAKEHOUSE_DEFS_DIR`, which subprocesses inherit), never the package's: a retailer onboarded
there is invisible to the suite.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import dagster as dg
import pytest

from pos_lakehouse.storage.lake import Lake

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

_OWN_DEFS = Path(tempfile.mkdtemp(prefix="pos_lakehouse_test_defs_"))
atexit.register(shutil.rmtree, _OWN_DEFS, True)


def _own_defs() -> Path:
    from demo_defs import write_demo_defs

    return write_demo_defs(_OWN_DEFS / "defs")


DEFS_DIR = _own_defs()
RETAILERS_DIR = DEFS_DIR / "retailers"
os.environ["POS_LAKEHOUSE_DEFS_DIR"] = str(DEFS_DIR)
# Every JVM the tests start (the loopback cluster's daemons and executor, a step's local Spark
# server) lives for minutes and runs tiny jobs: the quick JIT compiler alone (C1) halves the cold
# start of their first queries, where the optimizing one (C2) spends CPU it never earns back.
# The java launcher reads this variable itself; nothing in the project sets it.
os.environ.setdefault("JDK_JAVA_OPTIONS", "-XX:TieredStopAtLevel=1")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("POS_LAKEHOUSE_DATA", str(root))
    monkeypatch.setenv("POS_LAKEHOUSE_ENV", "local")
    # Retailers whose landing folder is on SFTP (kaufhalle_de) read <root>/landing through a real SFTP server
    # on loopback, as in `pos-lakehouse demo`; it is stopped when the test ends.
    from pos_lakehouse.demo.simulators import serve_sftp_landing

    with serve_sftp_landing(root / "landing", monkeypatch.setenv):
        yield root


@pytest.fixture
def lake(data_root: Path) -> Lake:
    return Lake(root=str(data_root))


@pytest.fixture
def defs(data_root: Path) -> dg.Definitions:
    from pos_lakehouse.definitions import build_definitions

    return build_definitions()


@pytest.fixture
def instance() -> dg.DagsterInstance:
    # In-memory run and event storage: the same Dagster APIs, without a SQLite file write per event.
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def headless(defs: dg.Definitions, instance: dg.DagsterInstance):
    from pos_lakehouse.demo.headless import Headless

    return Headless(defs, instance, quiet=True)


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A standalone master, a worker and a Spark Connect server on loopback (`spark_cluster.py`),
    started once per test process (about half a minute) for every test that needs a Spark: they
    all run on one worker (the `spark` group), one after the other."""
    from spark_cluster import spark_cluster as start

    # No test runs a classic application on it: the Connect server's executor takes both cores.
    with start(tmp_path_factory.mktemp("spark_cluster"), connect_cores=2) as started:
        yield started


def spec_named(name: str):
    from pos_lakehouse.retailer import load_retailer_specs

    return next(s for s in load_retailer_specs(RETAILERS_DIR) if s.name == name)


def pytest_collection_modifyitems(items):
    # Tests that drive the code location headless (sensors, runs, automation) are the long end-to-end
    # ones: `-m "not slow"` leaves them out of the fast subset.
    for item in items:
        if "headless" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        # The suite runs in parallel workers (pytest-xdist, `--dist loadgroup`). Spark tests each start a
        # JVM that wants both cores: kept on one worker, one after the other, while the other worker
        # runs everything else.
        if item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.xdist_group("spark"))
    # The Spark group is the longest unit of work: handed out first, the other worker gets through
    # the rest meanwhile instead of idling at the end while Spark finishes.
    items.sort(key=lambda item: item.get_closest_marker("spark") is None)
