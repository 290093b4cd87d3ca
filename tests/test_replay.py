"""Replay after a fix: silver and gold derived again from bronze with the current YAML, and a file an
earlier YAML rejected read again -- each in one run of the retailer's assets, as its deliveries run.

The retailer lives in a defs folder of the test's own (infrastructure folders copied, the retailer
written here), so the test does not depend on the shipped retailers.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from own_defs import csv_file, defs_folder, retailer_yaml, run_ingest

from pos_lakehouse.layers.replay import ReplayError, plan_replay
from pos_lakehouse.retailer import load_retailer_specs
from pos_lakehouse.runner.replay import replay_hints, replay_run_id, run_config

CODE = "cds_1996"


def _defs(tmp_path: Path, target: str | None, units: str = "Unidades") -> Path:
    columns = {
        "Fecha": "date",
        "Tienda": "site_id",
        "Articulo": "prod_id",
        units: "pos_sales_units",
        **({"Importe": target} if target else {}),
    }
    files = [csv_file("ventas", "ventas_*.csv", ["prod_dim", "site_dim", "store_day_fact"])]
    return defs_folder(tmp_path / "defs", {"replay_es": retailer_yaml("replay_es", 1996, files=files, columns={"ventas": columns})})


def _deliver(data_root: Path, name: str, days_ago: int) -> tuple[int, Decimal]:
    folder = data_root / "landing" / "replay_es"
    folder.mkdir(parents=True, exist_ok=True)
    day = (date.today() - timedelta(days=days_ago)).isoformat()
    rows = [(f"S{i % 2}", f"P{i}", i + 1, Decimal(f"{i + 1}.50")) for i in range(4)]
    (folder / name).write_text("Fecha;Tienda;Articulo;Unidades;Importe\n" + "".join(f"{day};{s};{p};{u};{v}\n" for s, p, u, v in rows))
    return sum(r[2] for r in rows), sum(r[3] for r in rows)


def _run(defs_dir: Path, instance, config: dict) -> dg.ExecuteInProcessResult:
    return run_ingest(defs_dir, instance, "replay_es", CODE, config)


def _gold(lake) -> dict:
    frame = lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == CODE).collect()
    return {
        "units": frame["pos_sales_units"].sum(),
        "sales": frame["pos_sales_value_lc"].sum(),
        "returns": frame["pos_returns_value_lc"].sum(),
        "rows": frame.height,
    }


def test_a_replay_derives_silver_and_gold_again_with_the_corrected_mapping(tmp_path, data_root, lake, instance):
    units, value = _deliver(data_root, "ventas_1.csv", 3)
    units2, value2 = _deliver(data_root, "ventas_2.csv", 2)
    # The first YAML forgot the sales value (bronze keeps the column; silver does not map it).
    defs_dir = _defs(tmp_path, None)
    for name in ("ventas_1.csv", "ventas_2.csv"):  # two deliveries, two runs
        assert _run(defs_dir, instance, {"ops": {"replay_es_bronze": {"config": {"files": [name]}}}}).success
    before = _gold(lake)
    assert before["rows"] == 8 and before["units"] == units + units2 and before["sales"] in (None, 0)

    defs_dir = _defs(tmp_path, "pos_sales_value_lc")
    spec = next(s for s in load_retailer_specs(defs_dir / "retailers"))
    # Delivered again after the fix, the same bytes are skipped: the summary says how to replay them.
    since = time.time()
    assert _run(defs_dir, instance, {"ops": {"replay_es_bronze": {"config": {"files": ["ventas_2.csv"]}}}}).success
    [hint] = replay_hints(lake, [spec], instance, since)
    assert "1 file(s) skipped as already in bronze" in hint and "replay --retailer replay_es --file ventas_2.csv" in hint
    assert _gold(lake)["sales"] in (None, 0)
    plan = plan_replay(lake, spec, file="ventas_2.csv")
    assert list(plan.replay_from) == ["ventas"] and not plan.files
    result = _run(defs_dir, instance, run_config(spec, plan))
    assert result.success
    after = _gold(lake)
    # The second file's store-day was read again with the current YAML; the first one's was not.
    assert after["rows"] == 8 and after["sales"] == value2 and after["units"] == units + units2

    whole = plan_replay(lake, spec)
    assert whole.replay_from == {"ventas": -1}
    assert _run(defs_dir, instance, run_config(spec, whole)).success
    again = _gold(lake)
    assert again["sales"] == value + value2 and again["units"] == units + units2 and again["rows"] == 8
    # The unmapped column rode along in the dimensions' extra_attributes; mapped now, no stale copy stays.
    for table in ("prod_dim", "site_dim"):
        extras = pl.read_delta(lake.silver("replay_es", table))["extra_attributes"]
        assert extras.len() > 0 and not extras.str.contains("Importe").any(), (table, extras.to_list())
    # The same plan under the same YAML has one run id; another YAML gives another.
    assert replay_run_id(spec, whole) == replay_run_id(spec, plan_replay(lake, spec))
    assert replay_run_id(spec, whole) != replay_run_id(spec.model_copy(update={"columns": {"ventas": {}}}), whole)


def test_a_file_rejected_by_an_old_yaml_is_read_again_by_a_replay_once_fixed(tmp_path, data_root, lake, instance):
    units, value = _deliver(data_root, "ventas_1.csv", 3)
    defs_dir = _defs(tmp_path, "pos_sales_value_lc", units="Unidads")
    first = _run(defs_dir, instance, {"ops": {"replay_es_bronze": {"config": {"files": ["ventas_1.csv"]}}}})
    assert not first.success  # the file is rejected: the run fails
    typo = next(s for s in load_retailer_specs(defs_dir / "retailers"))
    assert replay_hints(lake, [typo]) == []  # same YAML: nothing to replay yet

    defs_dir = _defs(tmp_path, "pos_sales_value_lc")
    spec = next(s for s in load_retailer_specs(defs_dir / "retailers"))
    [hint] = replay_hints(lake, [spec])
    assert "pos-lakehouse replay --retailer replay_es" in hint and "--file ventas_1.csv" in hint
    plan = plan_replay(lake, spec)
    assert plan.files == ["ventas_1.csv"]
    assert _run(defs_dir, instance, run_config(spec, plan)).success
    assert _gold(lake)["units"] == units and _gold(lake)["sales"] == value
    assert replay_hints(lake, [spec]) == []
    with pytest.raises(ReplayError, match="neither in bronze nor among the rejected files"):
        plan_replay(lake, spec, file="ventas_9.csv")


@pytest.mark.slow
def test_the_replay_command_launches_one_run_on_the_instance_and_the_same_replay_once(tmp_path, monkeypatch):
    """`pos-lakehouse replay` as a person runs it: its run is on the instance (the UI's), tagged, and
    the same replay under the same YAML is not launched twice."""
    import os
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    data = tmp_path / "data"
    units, value = _deliver(data, "ventas_1.csv", 3)
    defs_dir = _defs(tmp_path, None, units="Unidads")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POS_LAKEHOUSE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), POS_LAKEHOUSE_DATA=str(data), POS_LAKEHOUSE_DEFS_DIR=str(defs_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get():  # created (and migrated) before the commands open it
        pass

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pos_lakehouse.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)

    first = cli("run")
    assert first.returncode == 1 and "did you mean `Unidades`?" in first.stdout
    _defs(tmp_path, "pos_sales_value_lc")
    replayed = cli("replay", "--retailer", "replay_es")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "rejected under an earlier YAML are read again: ventas_1.csv" in replayed.stdout
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"pos_lakehouse/replay": "all"}))
        assert [(r.tags.get("pos_lakehouse/ingest"), r.status) for r in runs] == [("replay_es", dg.DagsterRunStatus.SUCCESS)]
        assert {k.path[1] for k in runs[0].asset_selection or []} == {"replay_es"}
        assert runs[0].tags["dagster/partition"] == CODE
    from pos_lakehouse.storage.lake import Lake

    gold = _gold(Lake(root=str(data)))
    assert gold["units"] == units and gold["sales"] == value
    # One file's replay, then the same again: launched once.
    for _ in range(2):
        again = cli("replay", "--retailer", "replay_es", "--file", "ventas_1.csv")
        assert again.returncode == 0, again.stdout + again.stderr
    assert "the same replay under the same YAML is run" in again.stdout
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs(filters=dg.RunsFilter(tags={"pos_lakehouse/replay": "file ventas_1.csv"}))) == 1
    unknown = cli("replay", "--retailer", "replay_es", "--file", "ventas_9.csv")
    assert unknown.returncode == 2 and "neither in bronze nor among the rejected files" in unknown.stderr
