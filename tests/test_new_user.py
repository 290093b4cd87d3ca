"""A new user's first hour: every CLI mistake answered in one line, readable query output, scaffolding that
validates, honest UI metadata, JSON documents and empty incremental files, and `run` on a landing folder
filled by hand (no demo generator)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import uuid
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from conftest import PROJECT_ROOT, spec_named
from demo_defs import SHIPPED_DEFS, copy_project
from jsonschema import Draft202012Validator
from test_serving import three_retailers  # noqa: F401 - fixture: gold rows of three retailers

from pos_lakehouse.cli import main
from pos_lakehouse.cli.query import render_frame
from pos_lakehouse.components.retailer_pipeline import RetailerPipeline
from pos_lakehouse.components.retailer_scaffold import TEMPLATE
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.ingest.readers import DeliveryError, json_records, read_raw
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.retailer import FileFormat, RetailerSpec

KNOWN = "marche_fr, kaufhalle_de, bigbox_us"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


# ---- wrong input: one line, non-zero exit ----------------------------------------------------------
@pytest.mark.parametrize("command", ["demo", "run"])
def test_unknown_retailer_is_named_with_the_known_ones(command, data_root, capsys):
    assert main([command, "--retailer", "foo"]) == 2
    line = _one_error_line(capsys)
    assert "unknown retailer 'foo'" in line and KNOWN in line
    assert not (data_root / "landing" / "_corporate").exists() and not (data_root / "expected").exists()  # nothing generated


@pytest.mark.parametrize("argv", [["query", "--as", "claire", "select 1"], ["reconcile"], ["run"], ["catalog"]], ids=lambda a: a[0])
def test_missing_data_root_is_an_error_and_creates_nothing(argv, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("POS_LAKEHOUSE_DATA", str(missing))
    assert main(argv) == 2
    assert f"data root {missing} does not exist" in _one_error_line(capsys)
    assert not missing.exists()


def test_query_before_any_gold_says_so(data_root, capsys):
    assert main(["query", "--as", "claire", "select * from store_day_fact"]) == 2
    assert "no gold tables" in _one_error_line(capsys)
    assert not (data_root / "serving").exists()


def test_reconcile_without_expected_totals_says_so(data_root, capsys):
    assert main(["reconcile"]) == 2
    assert "no expected totals" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("selec * form store_day_fact", 'syntax error at or near "selec"'),
        ("select * from store_dya_fact", "store_dya_fact"),
        ("select no_such_column from store_day_fact", "no_such_column"),
        ("select 'it\\'s' from store_day_fact", "error: "),
    ],
    ids=["bad-sql", "unknown-table", "unknown-column", "backslash-quote"],
)
def test_query_mistakes_get_one_line(three_retailers, capsys, sql, expected):  # noqa: F811
    assert main(["query", "--as", "claire", sql]) == 2
    line = _one_error_line(capsys)
    assert expected in line
    if "store_dya_fact" in sql:
        assert "prod_dim, site_dim, store_day_fact" in line  # the secure views are listed
    if "no_such_column" in sql:
        assert "columns of store_day_fact: date, site_id, prod_id" in line


def test_query_formats_and_max_rows(three_retailers, capsys):  # noqa: F811
    sql = "select data_provider_code, date, site_id, prod_id, pos_sales_units from store_day_fact order by all"
    assert main(["query", "--as", "claire", sql, "--format", "csv", "--max-rows", "5"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "data_provider_code,date,site_id,prod_id,pos_sales_units" and len(lines) == 6
    assert "30 row(s) as claire; showing 5" in err
    assert main(["query", "--as", "claire", sql, "--format", "json", "--max-rows", "0"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 30 and {r["data_provider_code"] for r in records} == {"cds_1001", "cds_1002"}


def test_wide_results_fit_the_terminal():
    wide = pl.DataFrame({f"attribute_number_{i}": [f"value {i} of a long product name"] * 3 for i in range(22)})
    text = render_frame(wide, "table", 100)
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "of 22 columns fit the terminal" in text
    shown = text.splitlines()[1]
    assert "attribute_number_0" in shown and "attribute_number_1" in shown  # whole names, not 3-character stubs
    assert render_frame(wide, "csv", 100).splitlines()[0].count(",") == 21


def test_broken_pipe_is_quiet(three_retailers, monkeypatch, capsys):  # noqa: F811
    class ClosedPipe:
        """stdout after the reader (e.g. `| head`) has gone."""

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise OSError("no descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["query", "--as", "ada", "select * from store_day_fact", "--format", "csv"]) == 141
    assert capsys.readouterr().err == ""  # no traceback, no message: the reader asked for no more


def test_dev_passes_every_option_to_dg_dev(monkeypatch, data_root):
    import contextlib

    import pos_lakehouse.cli.dev as cli
    import pos_lakehouse.demo.simulators as simulators

    calls = []
    monkeypatch.setattr(cli, "_foreground", lambda cmd, cwd=None: calls.append(cmd) or 0)
    monkeypatch.setattr(simulators, "start_demo_services", lambda root: contextlib.nullcontext())
    assert main(["dev", "--port", "3111", "--host", "0.0.0.0", "--verbose"]) == 0
    assert calls[0][1:] == ["dev", "--port", "3111", "--host", "0.0.0.0", "--verbose"]
    assert main(["dev", "--", "--port", "3112"]) == 0
    assert calls[1][1:] == ["dev", "--port", "3112"]


# ---- scaffolding and YAML validation ---------------------------------------------------------------
def _scaffolded(name="tryout") -> dict:
    return yaml.safe_load(TEMPLATE.format(name=name, retailer_id=1099, secure_group_key=110099))


def test_template_is_a_valid_daily_parquet_retailer():
    doc = _scaffolded()
    assert doc["type"] == "pos_lakehouse.components.RetailerPipeline"
    spec = RetailerSpec.model_validate(doc["attributes"])
    assert spec.cadence == "daily" and spec.delivery.files[0].format.type == "parquet"
    assert spec.scd2 == {"prod_dim": ["prod_name"], "site_dim": ["site_name"]}
    schema = RetailerPipeline.get_model_cls().model_json_schema()
    assert list(Draft202012Validator(schema).iter_errors(doc["attributes"])) == []


def test_schema_errors_name_the_field_and_the_allowed_values():
    attrs = _scaffolded()["attributes"]
    attrs["delivery"]["channel"] = "landng"
    schema = RetailerPipeline.get_model_cls().model_json_schema()
    errors = list(Draft202012Validator(schema).iter_errors(attrs))
    assert [list(e.absolute_path) for e in errors] == [["delivery", "channel"]]
    assert errors[0].message == "'landng' is not one of ['landing', 'sftp', 'api', 'database']"


def test_scd2_attribute_that_is_never_mapped_is_an_error_at_load():
    attrs = _scaffolded()["attributes"]
    attrs["scd2"]["prod_dim"] = ["prod_name", "brand"]
    with pytest.raises(ValueError, match=r"scd2.prod_dim: tracks \['brand'\], but no file holding prod_dim maps"):
        RetailerSpec.model_validate(attrs)
    attrs["scd2"]["prod_dim"] = ["prod_nmae"]
    with pytest.raises(ValueError, match=r"not prod_dim attributes; allowed: gtin, prod_name, brand"):
        RetailerSpec.model_validate(attrs)


def test_readme_onboarding_example_loads():
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("## Onboarding a retailer", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    spec = RetailerSpec.model_validate(yaml.safe_load(block)["attributes"])
    mapped = set().union(*(m.values() for m in spec.columns.values()))
    assert all(a in mapped for attrs in spec.scd2.values() for a in attrs)


@pytest.mark.slow
def test_scaffolded_yaml_passes_dg_check_defs(tmp_path):
    # Scaffolded into a copy of the project, so that tests loading the shipped retailers at the same
    # moment (the suite runs in parallel workers) never see a half-written newcomer.
    project, env = copy_project(tmp_path / "project")
    env["DAGSTER_HOME"] = str(tmp_path)
    name = f"tryout_{uuid.uuid4().hex[:6]}"
    folder = project / "src" / "pos_lakehouse" / "defs" / "retailers" / name
    dg_exe = str(Path(sys.executable).parent / "dg")
    done = subprocess.run(
        [dg_exe, "scaffold", "defs", "pos_lakehouse.components.RetailerPipeline", f"retailers/{name}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"name: {name}" in (folder / "defs.yaml").read_text()
    assert not (SHIPPED_DEFS / "retailers" / name).exists()
    check = subprocess.run([dg_exe, "check", "defs"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    # The check loaded the copy (with the newcomer), not the checkout.
    loaded = subprocess.run(
        [sys.executable, "-c", "import pos_lakehouse; print(pos_lakehouse.__file__)"], cwd=project, env=env, capture_output=True, text=True
    )
    assert loaded.stdout.strip() == str(project / "src" / "pos_lakehouse" / "__init__.py")


# ---- what the UI shows ---------------------------------------------------------------------------------
def test_gold_partitions_only_for_retailers_that_deliver_the_grain(defs):
    def keys(table):
        return set(defs.resolve_assets_def(dg.AssetKey(["gold", table])).partitions_def.get_partition_keys())

    polder = spec_named("polder_nl")
    assert polder.cadence == "weekly" and "store_day_fact" not in polder.silver_tables
    assert polder.data_provider_code not in keys("store_day_fact")
    assert polder.data_provider_code not in keys("store_month_fact")
    assert polder.data_provider_code in keys("store_week_fact") and polder.data_provider_code in keys("prod_dim")
    assert spec_named("marche_fr").data_provider_code in keys("store_day_fact")


# ---- formats: JSON documents, empty incremental files -----------------------------------------------
def test_json_array_and_record_path(tmp_path):
    rows = [{"day": "2026-11-01", "store": "S1", "units": 3, "tags": ["a"]}, {"day": "2026-11-01", "store": "S2", "extra": None}]
    plain = tmp_path / "sales.json"
    plain.write_text(json.dumps(rows))
    frame = read_raw(plain, FileFormat(type="json")).collect()
    assert frame.columns == ["day", "store", "units", "tags", "extra"]
    assert frame["units"].to_list() == ["3", None] and frame["tags"][0] == '["a"]'
    assert all(t == pl.String for t in frame.dtypes)

    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"meta": {"page": 1}, "data": {"items": rows}}))
    assert read_raw(wrapped, FileFormat(type="json", record_path="data.items")).collect().height == 2
    with pytest.raises(DeliveryError, match="set `format.record_path`"):
        read_raw(wrapped, FileFormat(type="json"))
    with pytest.raises(DeliveryError, match=r"no key `rows` in `data` \(has: items\)"):
        read_raw(wrapped, FileFormat(type="json", record_path="data.rows"))
    with pytest.raises(DeliveryError, match="element 2 of the document is a int"):
        json_records("[{}, 3]", None, "x.json")


def _spec_with(tmp_kind: dict, incremental: bool) -> RetailerSpec:
    base = spec_named("kaufhalle_de").model_dump()
    base["delivery"] = {"channel": "landing", "files": [{**tmp_kind, "incremental": incremental}]}
    base["columns"] = {"changes": {"Artikel": "prod_id", "Bezeichnung": "prod_name"}}
    base["scd2"] = {"prod_dim": ["prod_name"]}
    return RetailerSpec.model_validate(base)


@pytest.mark.parametrize(
    ("file_name", "content", "fmt"),
    [
        ("changes_1.csv", "Artikel;Bezeichnung\n", {"type": "csv", "separator": ";"}),
        ("changes_2.csv", "", {"type": "csv", "separator": ";"}),
        ("changes_3.json", '{"data": {"items": []}}', {"type": "json", "record_path": "data.items"}),
    ],
    ids=["header-only-csv", "zero-bytes", "empty-json-array"],
)
def test_empty_file_is_nothing_new_only_where_the_kind_is_incremental(lake, data_root, file_name, content, fmt):
    folder = data_root / "landing" / "kaufhalle_de"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name).write_text(content)
    landing = LocalLandingZone(root=str(data_root / "landing"))
    kind = {"name": "changes", "match": "changes_*", "holds": ["prod_dim"], "format": fmt}

    [accepted] = ingest_files(lake, landing, _spec_with(kind, incremental=True), [file_name])
    assert accepted.status == "empty" and "nothing new" in accepted.describe()
    assert not lake.exists(lake.bronze("kaufhalle_de", "changes"))

    [rejected] = ingest_files(lake, landing, _spec_with(kind, incremental=False), [file_name])
    assert rejected.status == "rejected" and rejected.reason in ("header_only", "empty_file", "no_records")


# ---- `run`: what is in landing now, through sensors and automation -----------------------------------
def _closed_period_days() -> list[date]:
    """Two days in a month (and week) that ended in the past, relative to today."""
    first_of_month = date.today().replace(day=1)
    last_of_earlier_month = (first_of_month - timedelta(days=1)).replace(day=1) - timedelta(days=1)
    return [last_of_earlier_month - timedelta(days=1), last_of_earlier_month]


def _marche_delivery(folder: Path, day: date, stores: int = 2, products: int = 3) -> float:
    """One day of marche_fr's Parquet export, built here (not by the demo generator); returns the units sold."""
    rows = [
        {
            "date_vente": day.isoformat(),
            "code_magasin": f"M{s:03d}",
            "nom_magasin": f"Magasin {s}",
            "gln_magasin": None,
            "ville": "Lyon",
            "region": "ARA",
            "format_magasin": "super",
            "code_article": f"A{p:05d}",
            "ean": None,
            "libelle_article": f"Article {p}",
            "marque": "Maison",
            "categorie": "Epicerie",
            "qte_vendue": float(s + p + 1),
            "ca_ttc_eur": float(2 * (s + p + 1)),
            "qte_retournee": 0.0,
            "montant_retour_eur": 0.0,
            "stock_fin_journee": 10.0,
            "qte_en_commande": 0.0,
        }
        for s in range(stores)
        for p in range(products)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(folder / f"marche_fr_pos_{day:%Y%m%d}.parquet")
    return sum(r["qte_vendue"] for r in rows)


_UI_QUERY = """
query RunsAndAsset($filter: RunsFilter!, $asset: AssetKeyInput!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId pipelineName repositoryOrigin { repositoryLocationName repositoryName } } }
  }
  assetOrError(assetKey: $asset) { __typename ... on Asset { assetMaterializations(limit: 10) { runId } } }
}
"""


def _ui_view(instance: dg.DagsterInstance, origin, asset_path: list[str]) -> dict:
    """A job page's runs (the asset job, filtered by the code location's repository tag and the
    retailer's tag) and an asset page's materializations, through the webserver's GraphQL schema."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    repository = f"{origin.repository_origin.repository_name}@{origin.location_name}"
    tags = [{"key": ".dagster/repository", "value": repository}, {"key": "retailer", "value": "marche_fr"}]
    variables = {"filter": {"pipelineName": "__ASSET_JOB", "tags": tags}, "asset": {"path": asset_path}}
    # Run and event storage are all these two fields read: no code location needs loading.
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as process:
        result = execute_dagster_graphql(process.create_request_context(), _UI_QUERY, variables)
    assert result.data["runsOrError"]["__typename"] == "Runs" and result.data["assetOrError"]["__typename"] == "Asset"
    return result.data


@pytest.mark.slow
def test_run_processes_a_hand_filled_landing_folder_to_gold(data_root, lake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    units = sum(_marche_delivery(data_root / "landing" / "marche_fr", d) for d in _closed_period_days())

    assert main(["run", "--retailer", "marche_fr"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    run_lines = [line for line in out.splitlines() if line.strip().startswith("ok ")]
    assert run_lines and all(line.split()[1].endswith("s") for line in run_lines)  # a duration on every run line
    assert "0 failed" in out and "logs/" in out

    gold = lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == "cds_1001").collect()
    assert gold.height == 12 and float(gold["pos_sales_units"].sum()) == units
    assert sorted(set(gold["date"].to_list())) == _closed_period_days()
    assert lake.scan(lake.gold("store_month_fact")).filter(pl.col("data_provider_code") == "cds_1001").collect().height == 6

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        by_sensor = [r for r in runs if r.tags.get("dagster/sensor_name") == "retailer_landing_sensor"]
        automated = [r for r in runs if r.tags.get("dagster/auto_materialize") == "true"]
        assert len(by_sensor) == 1 and by_sensor[0].tags.get("dagster/run_key")
        # Launched by the daemon from the code location `dg dev` serves (named after the project), so
        # the UI lists it with the runs of that code location's asset job (on its assets' pages), found
        # by the retailer's tag: the filter below is the one those pages use, plus the tag.
        origin = by_sensor[0].remote_job_origin
        assert (
            origin is not None and origin.location_name == tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["name"]
        )
        page = instance.get_runs(
            filters=dg.RunsFilter(
                job_name="__ASSET_JOB",
                tags={".dagster/repository": f"{origin.repository_origin.repository_name}@{origin.location_name}", "retailer": "marche_fr"},
            )
        )
        assert [r.run_id for r in page] == [by_sensor[0].run_id]
        assert all(r.remote_job_origin is not None for r in runs)
        assert automated and all(r.tags.get("dagster/sensor_name") == "serving_automation" for r in automated)
        assert all(
            r.tags.get("dagster/from_automation_condition") == "true" and r.tags.get("dagster/asset_evaluation_id") for r in automated
        )
        assert {r.run_id for r in runs} == {r.run_id for r in by_sensor + automated}  # nothing "manually launched"
        # What the UI asks (its GraphQL API, as the webserver serves it): the run has its code location's
        # origin, is among that location's asset job's runs, and on the materializations of its assets.
        seen = _ui_view(instance, origin, ["silver", "marche_fr", "store_day_fact"])
        [listed] = seen["runsOrError"]["results"]
        assert listed["runId"] == by_sensor[0].run_id and listed["pipelineName"] == "__ASSET_JOB"
        assert listed["repositoryOrigin"] == {
            "repositoryLocationName": origin.location_name,
            "repositoryName": origin.repository_origin.repository_name,
        }
        assert by_sensor[0].run_id in {m["runId"] for m in seen["assetOrError"]["assetMaterializations"]}

    # Nothing new in landing: a second `run` has nothing to do and succeeds.
    assert main(["run", "--retailer", "marche_fr"]) == 0
    assert "0 runs, 0 failed" in capsys.readouterr().out


@pytest.mark.slow
def test_run_exits_non_zero_with_a_summary_when_a_run_fails(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    folder = data_root / "landing" / "marche_fr"
    folder.mkdir(parents=True)
    (folder / f"marche_fr_pos_{date.today() - timedelta(days=40):%Y%m%d}.parquet").write_bytes(b"PAR1 not really parquet")
    assert main(["run", "--retailer", "marche_fr"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "1 failed" in out
    summary = [line for line in out.splitlines() if line.startswith("failed: marche_fr_ingest")]
    assert len(summary) == 1 and "rejected" in summary[0]


def test_jvm_output_goes_to_the_spark_log_and_ivy_failures_are_named(tmp_path):
    from pos_lakehouse.spark.session import _ivy_failure, _jvm_output_to

    log = tmp_path / "logs" / "spark.log"
    script = "import sys; print('ivy report on stdout'); print('log4j on stderr', file=sys.stderr)"
    with _jvm_output_to(str(log)):
        # A child started inside the block (as the JVM is) writes to the log, not to the console.
        subprocess.run([sys.executable, "-c", script], check=True)
    text = log.read_text()
    assert "ivy report on stdout" in text and "log4j on stderr" in text
    assert _ivy_failure(str(log)) is None
    log.write_text(
        text + 'Exception in thread "main" java.lang.RuntimeException: [unresolved dependency: '
        "org.apache.parquet#parquet-hadoop;1.16.0: not found]\n"
    )
    assert "unresolved dependency: org.apache.parquet#parquet-hadoop;1.16.0" in _ivy_failure(str(log))
