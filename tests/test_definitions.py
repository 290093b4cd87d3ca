"""The code location loads, `dg check defs` accepts it, and components build what a retailer YAML promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
from conftest import DEFS_DIR, PROJECT_ROOT, RETAILERS_DIR


def test_definitions_load(defs: dg.Definitions):
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "bronze/marche_fr/pos_daily" in keys
    assert {"silver/marche_fr/prod_dim", "silver/marche_fr/site_dim", "silver/marche_fr/store_day_fact"} <= keys
    assert {"gold/prod_dim", "gold/site_dim", "gold/store_day_fact"} <= keys
    sensor_names = {s.name for s in defs.sensors}
    assert {"retailer_landing_sensor", "every_300s_poll_sensor"} <= sensor_names
    # One landing sensor for every file-delivering retailer, not one per retailer.
    # Its runs select a retailer's assets of the code location's asset job: no job per retailer.
    landing = defs.resolve_sensor_def("retailer_landing_sensor")
    assert landing.asset_selection is not None
    landing_keys = landing.asset_selection.resolve(defs.resolve_asset_graph())
    assert {dg.AssetKey(["bronze", "marche_fr", "pos_daily"]), dg.AssetKey(["silver", "marche_fr", "store_day_fact"])} <= landing_keys
    assert not [j for j in defs.jobs or [] if getattr(j, "name", "").endswith("_ingest")]
    assert {"serving_automation", "catch_up_sensor", "reference_refresh_sensor"} <= set(sensor_names)
    gold = defs.resolve_assets_def(dg.AssetKey(["gold", "store_day_fact"]))
    assert "cds_1001" in gold.partitions_def.get_partition_keys()
    silver = defs.resolve_assets_def(dg.AssetKey(["silver", "marche_fr", "store_day_fact"]))
    spec = next(s for s in silver.specs if s.key.path[-1] == "store_day_fact")
    # Silver is carried by the delivery's own run (bronze + silver, gold from the silver step), not by automation.
    assert spec.automation_condition is None
    assert spec.key in landing_keys
    assert spec.freshness_policy is not None
    # A retailer's silver columns come with its materializations: the definitions (which the daemon
    # re-reads each minute) stay small at hundreds of retailers; gold's eight tables carry theirs.
    assert "dagster/column_schema" not in spec.metadata
    gold_spec = next(iter(gold.specs))
    assert {c.name for c in gold_spec.metadata["dagster/column_schema"].columns} >= {"prod_key", "site_key", "pos_sales_units"}


def test_dg_check_defs(tmp_path: Path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "POS_LAKEHOUSE_DATA": str(tmp_path / "data")}
    proc = subprocess.run(["dg", "check", "defs"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_retailer_component_through_component_tree(data_root):
    from pos_lakehouse.components import RetailerPipeline
    from pos_lakehouse.definitions import component_tree

    tree = component_tree(DEFS_DIR)
    component = tree.load_component(Path("retailers") / "marche_fr", expected_type=RetailerPipeline)
    assert component.retailer_id == 1001 and component.data_provider_code == "cds_1001"
    defs = tree.build_defs_at_path(Path("retailers") / "marche_fr")
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert keys == {
        "bronze/marche_fr/pos_daily",
        "silver/marche_fr/prod_dim",
        "silver/marche_fr/site_dim",
        "silver/marche_fr/store_day_fact",
        "silver/marche_fr/store_week_fact",
        "silver/marche_fr/store_month_fact",
        "silver/marche_fr/delivery_calendar",
    }
    checks = {c.name for a in defs.assets for c in a.check_specs}
    assert {
        "structure_and_keys",
        "one_current_version",
        "facts_reference_dimension_versions",
        "valid_gtin",
        "deliveries_complete",
    } <= checks
    assert not defs.jobs  # its runs select its assets in the code location's asset job
    assert not defs.sensors  # its landing sensor is the one over every retailer, built at the root
    assert (RETAILERS_DIR / "marche_fr" / "defs.yaml").exists()


def test_definitions_load_without_the_libraries_only_steps_use(tmp_path: Path):
    """Loading the code location (every code-server start, `dg check defs`) does not import what only a
    running step needs -- pandera and pandas, DuckDB and sqlglot, asyncssh, pyarrow and numpy, PySpark --
    nor Jinja: no retailer file uses a template, so none is compiled."""
    code = (
        "import sys, dagster\n"
        "from pos_lakehouse.definitions import build_definitions\n"
        "build_definitions().resolve_asset_graph()\n"
        "heavy = ('pandera', 'pandas', 'duckdb', 'sqlglot', 'asyncssh', 'pyarrow', 'numpy', 'pyspark', 'jinja2')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "POS_LAKEHOUSE_DATA": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_defs_built_once_per_load_and_again_after_an_edit(tmp_path: Path, data_root, monkeypatch):
    """Dagster calls `defs()` twice when it loads the code location; the second call reuses the first
    build unless a defs file or the environment changed in between."""
    from pos_lakehouse.definitions import defs

    defs_dir = tmp_path / "defs"
    shutil.copytree(DEFS_DIR, defs_dir)
    monkeypatch.setenv("POS_LAKEHOUSE_DEFS_DIR", str(defs_dir))
    first = defs()
    assert defs() is first

    path = defs_dir / "retailers" / "marche_fr" / "defs.yaml"
    path.write_text(path.read_text().replace("cadence: daily", "cadence: weekly"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    edited = defs()
    assert edited is not first
    key = dg.AssetKey(["silver", "marche_fr", "store_day_fact"])
    assert first.resolve_assets_def(key).tags_by_key[key]["freshness"] == "warn-30h_fail-48h"
    assert edited.resolve_assets_def(key).tags_by_key[key]["freshness"] == "warn-8d_fail-9d"
    assert defs() is edited

    monkeypatch.setenv("POS_LAKEHOUSE_DATA", str(tmp_path / "other_data"))
    assert defs() is not edited


def test_a_retailers_run_worker_builds_that_retailer_only(data_root):
    """The run launcher tells a retailer's run worker its retailer (the run's tag, its selection within
    that retailer's assets): the worker builds that retailer's assets, and runs steps in its own process."""
    from conftest import spec_named

    from pos_lakehouse.definitions import component_tree, retailer_definitions
    from pos_lakehouse.sensors.targets import ingest_keys, ingest_tags, retailer_of

    tree = component_tree(DEFS_DIR)
    defs = retailer_definitions("marche_fr", tree)
    assert defs is not None and retailer_definitions("no_such_retailer", tree) is None
    built = {k for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    assert {k.path[1] for k in built} == {"marche_fr"}
    assert built == set(ingest_keys(spec_named("marche_fr")))
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == dg.in_process_executor.name

    spec = spec_named("marche_fr")
    run = dg.DagsterRun(job_name="__ASSET_JOB", tags=ingest_tags(spec), asset_selection=frozenset(ingest_keys(spec)))
    assert retailer_of(run) == "marche_fr"
    # A selection beyond the retailer's bronze and silver (a gold table's catch-up) loads the whole code location.
    wider = dg.DagsterRun(
        job_name="__ASSET_JOB", tags=ingest_tags(spec), asset_selection=frozenset([dg.AssetKey(["gold", "store_day_fact"])])
    )
    assert retailer_of(wider) is None


def test_a_serving_views_run_worker_builds_the_views_only(data_root):
    """The automation's run of the serving views is told so by the run launcher: its worker builds the
    views and the resources, not the retailers' assets; any other selection builds everything."""
    from pos_lakehouse.definitions import component_tree, serving_definitions
    from pos_lakehouse.launcher import RUN_RETAILER_ENV, RUN_SERVING_ENV, worker_env

    defs = serving_definitions(component_tree(DEFS_DIR))
    assert defs is not None
    built = {k for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    assert built == {dg.AssetKey(["serving", "gold_views"])}
    assert set(defs.resources or {}) >= {"lake"}
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == dg.in_process_executor.name

    views = dg.DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset(built))
    assert worker_env(views).get(RUN_SERVING_ENV) == "1" and RUN_RETAILER_ENV not in worker_env(views)
    wider = dg.DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset([*built, dg.AssetKey(["gold", "store_day_fact"])]))
    assert RUN_SERVING_ENV not in worker_env(wider) and RUN_RETAILER_ENV not in worker_env(wider)
