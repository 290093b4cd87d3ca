"""No secret in any log: credentials planted in every pulled source's settings never reach a file or the screen.

The API URL carries user-info and a `token=` parameter, the API token is a marker, the PostgreSQL
URL's password is one (the real server on loopback is given that password). The pulled retailers
then run through `pos-lakehouse run` and their own Dagster jobs, with the sources reachable and
unreachable, on an on-disk Dagster instance. Afterwards no marker may appear in any file of the data
root (bronze, quarantine, bookmarks, logs/runs.log), of DAGSTER_HOME (run, event and tick storage),
or in what the process printed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from conftest import DEFS_DIR
from own_defs import execute_ingest
from test_database_retailer import postgres_url  # noqa: F401 - the module's real PostgreSQL server

from pos_lakehouse.demo.api_simulator import ApiSimulator, ShopNowData
from pos_lakehouse.demo.retailer_db import write_highstreet_uk
from pos_lakehouse.ingest.reachability import SourcesUnreachable
from pos_lakehouse.redaction import redact, scrub

DEFS = DEFS_DIR
URL_PASSWORD = "urlpw-MARKER-7f3a9"
URL_TOKEN = "urltoken-MARKER-51c2e"
API_TOKEN = "apitoken-MARKER-d84b0"
DB_PASSWORD = "dbpw-MARKER-26e1f"
MARKERS = (URL_PASSWORD, URL_TOKEN, API_TOKEN, DB_PASSWORD)
PULLED = ("shopnow_us", "highstreet_uk")


def _hits(folder: Path) -> dict[str, list[str]]:
    """Marker -> files under `folder` holding it (bytes, so binary stores such as SQLite and Parquet count too)."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for marker in MARKERS:
                if marker.encode() in data:
                    found.setdefault(marker, []).append(str(path.relative_to(folder)))
    return found


@pytest.fixture
def pulled_defs(tmp_path, monkeypatch):
    """A copy of the defs folder with the API's retries made quick (the live folder is not touched)."""
    root = tmp_path / "defs"
    shutil.copytree(DEFS, root, ignore=shutil.ignore_patterns("__pycache__"))
    shop = root / "retailers" / "shopnow_us" / "defs.yaml"
    doc = yaml.safe_load(shop.read_text())
    doc["attributes"]["delivery"]["api"].update({"max_retries": 2, "backoff_seconds": 0.0, "timeout_seconds": 5})
    shop.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("POS_LAKEHOUSE_DEFS_DIR", str(root))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return root


@pytest.fixture
def marked_postgres(postgres_url):  # noqa: F811
    """The loopback PostgreSQL warehouse, its role's password set to a marker."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS products, stores, daily_sales, inventory"))
        conn.execute(sa.text(f"ALTER ROLE highstreet PASSWORD '{DB_PASSWORD}'"))
    engine.dispose()
    return sa.engine.make_url(postgres_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def _execute_ingest_jobs(instance: dg.DagsterInstance) -> list[str]:
    """Each pulled retailer's ingest job, as its sensor would launch it, recorded in the on-disk instance."""
    from pos_lakehouse.definitions import build_definitions

    defs = build_definitions()
    errors = []
    for name, code in (("shopnow_us", "cds_1004"), ("highstreet_uk", "cds_1005")):
        result = execute_ingest(defs, name, instance=instance, partition_key=code, raise_on_error=False)
        if not result.success:
            failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
            error, text = failure.event_specific_data.error, ""
            while error is not None:
                text += error.message + "".join(error.stack)
                error = error.cause
            errors.append(text)
    return errors


def _poll(instance: dg.DagsterInstance, lake) -> list[str]:
    """What the poll sensors (one per polling interval, over every pulled retailer) say on a tick."""
    from pos_lakehouse.definitions import build_definitions

    defs = build_definitions()
    said = []
    for sensor in (s for s in defs.sensors if s.name.endswith("_poll_sensor")):
        with dg.build_sensor_context(instance=instance, resources={"lake": lake}) as context:
            try:
                result = sensor(context)
            except SourcesUnreachable as failed:  # a configured source that does not answer fails the tick
                said.append(str(failed))
                continue
        skip = result.skip_reason if isinstance(result, dg.SensorResult) else result
        said.append(skip.skip_message if isinstance(skip, dg.SkipReason) else repr(result))
    assert said, "no poll sensor found"
    return said


@pytest.mark.slow  # two `run`s and four job executions against real servers
def test_no_marker_reaches_a_file_or_the_screen(data_root, pulled_defs, marked_postgres, monkeypatch, capfd):
    from pos_lakehouse.cli import main
    from pos_lakehouse.storage.lake import Lake

    lake = Lake(root=str(data_root))
    data = ShopNowData(n_products=12, n_stores=3, density=0.3)
    data.add_days(2)
    write_highstreet_uk(marked_postgres, data_root / "expected", days=2, n_products=10, n_stores=3, density=0.3).dispose()
    monkeypatch.setenv("SHOPNOW_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("HIGHSTREET_DB_URL", marked_postgres)
    with ApiSimulator(data, token=API_TOKEN) as sim:
        # Reachable: both sources read through `run`, with the marked token and password.
        monkeypatch.setenv("SHOPNOW_API_URL", sim.base_url)
        assert main(["run", "--retailer", "highstreet_uk", "--retailer", "shopnow_us"]) == 0
        assert lake.row_count(lake.bronze("highstreet_uk", "daily_sales")) > 0
        assert lake.row_count(lake.bronze("shopnow_us", "sales_daily")) == len(data.collection("sales_daily"))
        # Reachable, with user-info in the API URL (the server refuses it), run as the sensors would launch it.
        monkeypatch.setenv("SHOPNOW_API_URL", sim.base_url.replace("http://", f"http://apiuser:{URL_PASSWORD}@"))
        with dg.DagsterInstance.get() as instance:
            reachable_errors = _execute_ingest_jobs(instance)

    # Unreachable: the same credentials, nothing listening.
    monkeypatch.setenv("SHOPNOW_API_URL", f"http://apiuser:{URL_PASSWORD}@127.0.0.1:9/?token={URL_TOKEN}")
    monkeypatch.setenv("HIGHSTREET_DB_URL", marked_postgres.replace(f":{sa.engine.make_url(marked_postgres).port}/", ":9/"))
    unreachable_exit = main(["run", "--retailer", "highstreet_uk", "--retailer", "shopnow_us"])
    with dg.DagsterInstance.get() as instance:
        unreachable_errors = _execute_ingest_jobs(instance)
        sensor_says = _poll(instance, lake)

    captured = capfd.readouterr()
    printed = captured.out + captured.err + "".join(reachable_errors + unreachable_errors + sensor_says)
    assert (data_root / "logs" / "runs.log").stat().st_size > 0
    assert {m: printed.count(m) for m in MARKERS if m in printed} == {}
    assert _hits(data_root) == {}
    assert _hits(pulled_defs.parent / "dagster_home") == {}
    # The greps saw the failures: the instance's storage holds them, with the source's address masked.
    stored = b"".join(p.read_bytes() for p in (pulled_defs.parent / "dagster_home").rglob("*") if p.is_file())
    assert b"apiuser:***@127.0.0.1:9" in stored and b"highstreet:***@127.0.0.1:9" in stored
    # ... while the failures still name their source: host and port, with the credentials masked.
    assert len(unreachable_errors) == 2, unreachable_errors
    assert any("apiuser:***@127.0.0.1:9" in e for e in unreachable_errors), unreachable_errors
    assert any("highstreet:***@127.0.0.1:9" in e for e in unreachable_errors), unreachable_errors
    assert all("cannot ask" in s and "127.0.0.1:9" in s for s in sensor_says), sensor_says
    # Unreachable is a failure: `run` names both retailers in its summary and exits non-zero.
    assert unreachable_exit == 1
    failed_lines = [line for line in captured.out.splitlines() if line.startswith("failed:")]
    named = "\n".join(line for line in failed_lines if "source unreachable for" in line)
    assert "highstreet_uk" in named and "shopnow_us" in named, failed_lines


def test_the_rule_masks_each_kind_of_credential(monkeypatch):
    monkeypatch.setenv("SOME_API_TOKEN", API_TOKEN)
    samples = {
        f"GET http://apiuser:{URL_PASSWORD}@127.0.0.1:9/v1/products": "GET http://apiuser:***@127.0.0.1:9/v1/products",
        f"https://api.example/v1?limit=1&token={URL_TOKEN}&cursor=2": "https://api.example/v1?limit=1&token=***&cursor=2",
        f"host=db user=hs password={DB_PASSWORD} dbname=w": "host=db user=hs password=*** dbname=w",
        f"host=db password='{DB_PASSWORD} x' dbname=w": "host=db password=*** dbname=w",
        f"postgresql+psycopg://hs:{DB_PASSWORD}@db:5432/w": "postgresql+psycopg://hs:***@db:5432/w",
        "Authorization: Bearer abcdefghijklmnop": "Authorization: ***",
        "{'Authorization': 'Basic YWxhZGRpbjpvcGVuc2VzYW1l', 'Accept': 'json'}": "{'Authorization': '***', 'Accept': 'json'}",
        f"the server said: unknown key {API_TOKEN}": "the server said: unknown key ***",
        "sftp://hs@127.0.0.1:22/in: token_env=SHOPNOW_API_TOKEN": "sftp://hs@127.0.0.1:22/in: token_env=SHOPNOW_API_TOKEN",
    }
    for text, masked in samples.items():
        assert redact(text) == masked
        assert redact(masked) == masked

    # An exception chain: every link's text is masked, ours in place, a library's by a stand-in naming its type.
    try:
        try:
            raise ConnectionError(f"cannot reach http://u:{URL_PASSWORD}@h/")
        except ConnectionError as inner:
            raise RuntimeError("pull failed") from inner
    except RuntimeError as outer:
        clean = scrub(outer)
    texts = []
    link = clean
    while link is not None:
        texts.append(f"{type(link).__name__}: {link}")
        link = link.__cause__
    assert len(texts) == 2 and not any(URL_PASSWORD in t for t in texts), texts
    assert "builtins.ConnectionError: cannot reach http://u:***@h/" in texts[1]
