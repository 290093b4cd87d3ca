"""`pos-lakehouse onboard` end to end: proposals from the file demo retailers' own files pass `dg check defs`,
and run on those files they give the gold the shipped YAMLs give.

Business settings no file can tell (id, security key, country, currency, antitrust, engine) are
taken from the shipped YAMLs for the comparison; both sides run on Polars (bigbox_us ships on
Spark, whose gold equals Polars' -- tests/test_spark_parity.py). Everything else -- file kinds,
formats, mapping, grain, cadence, snapshots, SCD2 -- is the proposal's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from conftest import PROJECT_ROOT, spec_named
from demo_defs import write_demo_defs

from pos_lakehouse.demo.file_retailers import write_bigbox_us, write_kaufhalle_de, write_polder_nl, write_prairie_ca, write_sakura_jp
from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.layers.gold import GOLD_TABLES
from pos_lakehouse.onboarding.profile import propose
from pos_lakehouse.onboarding.render import render
from pos_lakehouse.storage.lake import Lake

RETAILERS = ("marche_fr", "kaufhalle_de", "bigbox_us", "polder_nl", "prairie_ca", "sakura_jp")
BUSINESS = ("retailer_id", "secure_group_key", "country", "currency", "antitrust", "mask_younger_than_days", "description")
# When a row was written differs between two runs; what it holds must not.
# When each run read the files: the lineage stamps and the delivery calendar's arrivals (and the due
# times of days delivered with a retailer's first files, which start at its first arrival).
VOLATILE = ("_ingested_at", "_updated_at", "first_arrival", "last_arrival", "due_at")


def _write_small_deliveries(landing: Path, expected: Path) -> None:
    write_marche_fr(landing / "marche_fr", expected, days=21, n_products=15, n_stores=3)
    write_kaufhalle_de(landing / "kaufhalle_de", expected, weeks=2, n_products=20, n_stores=3)
    write_bigbox_us(landing / "bigbox_us", expected, days=14, n_products=20, n_stores=3)
    write_polder_nl(landing / "polder_nl", expected, weeks=2, n_products=20, n_stores=3)
    write_prairie_ca(landing / "prairie_ca", expected, weeks=2, n_products=20, n_stores=3)
    write_sakura_jp(landing / "sakura_jp", expected, days=3, n_products=20, n_stores=3)


def _on_polars(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["engine"] = "polars"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def _gold(root: Path, code: str) -> dict[str, pl.DataFrame]:
    lake = Lake(root=str(root))
    out = {}
    for table in GOLD_TABLES:
        if not lake.exists(lake.gold(table)):
            continue
        frame = lake.scan(lake.gold(table)).filter(pl.col("data_provider_code") == code).collect().drop(VOLATILE, strict=False)
        if frame.height:
            out[table] = frame.select(sorted(frame.columns)).sort(pl.all())
    return out


def _settle(defs_dir: Path, data: Path, monkeypatch) -> None:
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.headless import Headless

    monkeypatch.setenv("POS_LAKEHOUSE_DATA", str(data))
    monkeypatch.setenv("POS_LAKEHOUSE_DEFS_DIR", str(defs_dir))
    with dg.DagsterInstance.ephemeral() as instance:
        runs = Headless(build_definitions(), instance, quiet=True).settle()
    assert runs and all(r.success for r in runs), [r.error for r in runs if not r.success]


def _columns_differing(a: pl.DataFrame | None, b: pl.DataFrame | None) -> list[str] | str:
    if a is None or b is None or a.height != b.height or a.columns != b.columns:
        return f"rows {None if a is None else a.height} vs {None if b is None else b.height}"
    return [c for c in a.columns if not a[c].equals(b[c])]


@pytest.mark.slow
def test_proposals_pass_dg_check_defs_and_give_the_shipped_gold(data_root, tmp_path, monkeypatch):
    _write_small_deliveries(data_root / "landing", data_root / "expected")

    # The proposals, as `onboard` writes them, in a defs folder of their own: `dg check defs` accepts it.
    proposed_defs = write_demo_defs(tmp_path / "proposed_defs", retailers=RETAILERS)  # their YAMLs replaced below
    for name in RETAILERS:
        shipped = spec_named(name)
        text = render(
            propose(data_root / "landing" / name, name, retailer_id=shipped.retailer_id, secure_group_key=shipped.secure_group_key)
        )
        (proposed_defs / "retailers" / name / "defs.yaml").write_text(text)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "POS_LAKEHOUSE_DEFS_DIR": str(proposed_defs), "POS_LAKEHOUSE_DATA": str(data_root)}
    dg_exe = str(Path(sys.executable).parent / "dg")
    check = subprocess.run([dg_exe, "check", "defs"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert check.returncode == 0, check.stdout + check.stderr

    # The business settings from the shipped YAMLs, then the same files through both.
    for name in RETAILERS:
        path = proposed_defs / "retailers" / name / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["attributes"].update(spec_named(name).model_dump(include=set(BUSINESS)))
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    shipped_defs = write_demo_defs(tmp_path / "shipped_defs", retailers=RETAILERS)
    _on_polars(shipped_defs / "retailers" / "bigbox_us" / "defs.yaml")
    proposed_data = tmp_path / "proposed_data"
    shutil.copytree(data_root / "landing", proposed_data / "landing")

    _settle(shipped_defs, data_root, monkeypatch)
    _settle(proposed_defs, proposed_data, monkeypatch)

    differing = {}
    for name in RETAILERS:
        code = spec_named(name).data_provider_code
        shipped, proposed = _gold(data_root, code), _gold(proposed_data, code)
        assert shipped, f"{name}: no gold from the shipped YAML"
        tables = sorted(set(shipped) | set(proposed))
        bad = [t for t in tables if t not in shipped or t not in proposed or not shipped[t].equals(proposed[t])]
        if bad:
            differing[name] = {t: _columns_differing(shipped.get(t), proposed.get(t)) for t in bad}
        print(
            f"{name}: gold {'differs in ' + ', '.join(bad) if bad else 'identical'} ({', '.join(f'{t} {shipped[t].height}' for t in sorted(shipped))})"
        )
    assert differing == {}
