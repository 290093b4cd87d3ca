"""The package works as installed from a wheel: no checkout around it, no pyproject.toml above it.

The package is copied alone into a site-packages-like folder and run from an unrelated directory
in a fresh interpreter: the code location loads, local state goes to the current directory (never
into site-packages), and neither the code location nor the CLI's help imports the demo.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import DEFS_DIR, PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "pos_lakehouse"

_PROBE = """
import json, sys, warnings
warnings.simplefilter("ignore")
import pos_lakehouse
from pos_lakehouse.definitions import build_definitions
from pos_lakehouse import settings
defs = build_definitions()
print(json.dumps({
    "package": pos_lakehouse.__file__,
    "checkout": str(settings.checkout_root()),
    "data_root": settings.current_settings().data_root,
    "assets": len(list(defs.resolve_asset_graph().get_all_asset_keys())),
    "partitions": sorted(next(a for a in defs.assets if a.key.path == ["gold", "store_day_fact"]).partitions_def.get_partition_keys()),
    "demo": sorted(m for m in sys.modules if m.startswith("pos_lakehouse.demo")),
}))
"""


def _installed(tmp_path: Path) -> tuple[Path, Path, dict]:
    site = tmp_path / "site-packages"
    # The package as built, with the demo's defs folder (not whatever has been onboarded into the checkout's).
    shutil.copytree(PACKAGE, site / "pos_lakehouse", ignore=shutil.ignore_patterns("__pycache__", "defs"))
    shutil.copytree(DEFS_DIR, site / "pos_lakehouse" / "defs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pyproject.toml").write_text('[project]\nname = "someone_elses_project"\n')  # not ours: must not be read
    env = {k: v for k, v in os.environ.items() if not k.startswith("POS_LAKEHOUSE_")}
    env.update(PYTHONPATH=str(site), DAGSTER_HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return site, elsewhere, env


def test_the_code_location_loads_from_an_installed_package_without_the_demo(tmp_path):
    site, elsewhere, env = _installed(tmp_path)
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["package"] == str(site / "pos_lakehouse" / "__init__.py")  # the copy, not the checkout
    assert seen["checkout"] == "None"
    assert seen["data_root"] == str((elsewhere / "data").resolve())
    assert seen["assets"] > 50 and "cds_1001" in seen["partitions"] and len(seen["partitions"]) >= 7
    assert seen["demo"] == []
    assert not any(site.rglob("data")) and not (site / ".dagster_home").exists()


def test_the_cli_help_runs_from_an_installed_package(tmp_path):
    _, elsewhere, env = _installed(tmp_path)
    code = "import sys\nfrom pos_lakehouse.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.startswith('pos_lakehouse.demo')))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage: pos-lakehouse" in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


def test_dev_without_a_checkout_or_the_demo_extra_opens_the_ui_alone(tmp_path, monkeypatch, capsys):
    """`pos-lakehouse dev` from a product install: `dagster dev` on the module, and no demo sources
    (their packages are the `demo` extra) -- instead of failing on the first missing import."""
    import pos_lakehouse.cli.dev as cli
    import pos_lakehouse.demo.simulators as simulators
    from pos_lakehouse.cli import main

    calls = []
    monkeypatch.setattr(cli, "checkout_root", lambda: None)
    monkeypatch.setattr(cli, "DEMO_PACKAGES", ("fastapi", "no_such_demo_package_here"))
    monkeypatch.setattr(cli, "_foreground", lambda command, cwd=None: calls.append((command, cwd, Path(command[3]).read_text())) or 0)
    monkeypatch.setattr(simulators, "start_demo_services", lambda *a, **k: (_ for _ in ()).throw(AssertionError("demo started")))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("POS_LAKEHOUSE_DATA", str(tmp_path / "data"))
    assert main(["dev", "--port", "3111"]) == 0
    ((command, cwd, workspace),) = calls
    assert command[1:3] == ["dev", "-w"] and command[4:] == ["--port", "3111"] and Path(command[0]).name == "dagster"
    # The code location `dg dev` serves in a checkout: same module, same location name (the project's).
    (entry,) = yaml.safe_load(workspace)["load_from"]
    assert entry["python_module"]["module_name"] == "pos_lakehouse.definitions"
    assert entry["python_module"]["location_name"] == "pos_lakehouse"
    assert cwd is None
    assert "no_such_demo_package_here not installed" in capsys.readouterr().err
