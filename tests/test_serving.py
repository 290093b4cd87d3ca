"""Gold for analysts: secure DuckDB views (row-level security, antitrust masking), catalog, Unity Catalog SQL."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import duckdb
import polars as pl
import pytest
import sqlglot
from conftest import RETAILERS_DIR
from serving_data import days_ago, fact_rows, prod_rows, write_gold
from sqlglot import exp

from pos_lakehouse.layers.gold import GOLD_TABLES
from pos_lakehouse.retailer import load_retailer_specs
from pos_lakehouse.serving import duckdb_views
from pos_lakehouse.serving.catalog import gold_catalog, to_markdown
from pos_lakehouse.serving.duckdb_views import QueryRejected, build_views, database_path, query
from pos_lakehouse.serving.policy import AccessPolicy, PolicyError, load_policy
from pos_lakehouse.serving.render import mask_rules
from pos_lakehouse.serving.unity_catalog import render
from pos_lakehouse.transform import canonical

COUNT_BY_RETAILER = "select data_provider_code, count(*) as n from store_day_fact group by 1 order by 1"
# (code, secure group key, days delivered); 2 sites x 3 products a day
WRITTEN = {"cds_1001": (110011, 3), "cds_1002": (110012, 2), "cds_1003": (110013, 1)}


def _today() -> date:  # noqa: F821 - the views' notion of today (DuckDB's current_date)
    return duckdb.execute("select current_date").fetchone()[0]


@pytest.fixture
def three_retailers(lake):
    """Gold facts and products of three retailers, plus a row with a secure group key no policy knows."""
    today = _today()
    for code, (key, days) in WRITTEN.items():
        write_gold(lake, "store_day_fact", fact_rows(code, key, [days_ago(100 + d, today) for d in range(days)]))
        write_gold(lake, "prod_dim", prod_rows(code, key))
    write_gold(lake, "store_day_fact", fact_rows("cds_1999", 999999, [days_ago(100, today)]))
    return lake


def _counts(df: pl.DataFrame) -> dict[str, int]:
    return dict(df.select(df.columns[0], df.columns[1]).iter_rows())


def test_policy_takes_every_retailer_from_its_yaml():
    policy = load_policy()
    specs = load_retailer_specs(RETAILERS_DIR)
    assert set(policy.retailers) == {s.data_provider_code for s in specs}
    for spec in specs:
        access = policy.retailers[spec.data_provider_code]
        assert access.secure_group_key == spec.secure_group_key
        assert access.masks == (spec.antitrust != "none")
        if access.masks:
            assert access.mask_younger_than_days == spec.mask_younger_than_days
    # highstreet_uk's YAML and the serving rules agree now: masked, and its silver has the twins.
    assert policy.retailers["cds_1005"].masks and policy.retailers["cds_1005"].masked_measures == "value"
    assert {"ada", "claire", "guest"} <= set(policy.users) and policy.users["guest"] == ()
    assert not policy.ungranted_retailers()  # every shipped retailer is in some regional group


def test_row_level_security_per_user(three_retailers):
    lake, policy = three_retailers, load_policy()
    build_views(lake, policy)
    rows = {code: 6 * days for code, (_, days) in WRITTEN.items()}

    # Admin: every retailer the policy knows; the row with an unknown key stays invisible (fail closed).
    assert _counts(query(lake, policy, "ada", COUNT_BY_RETAILER)) == rows
    # Category managers: only their groups' retailers, whole partitions of them.
    assert _counts(query(lake, policy, "claire", COUNT_BY_RETAILER)) == {c: rows[c] for c in ("cds_1001", "cds_1002")}
    assert _counts(query(lake, policy, "noah", COUNT_BY_RETAILER)) == {"cds_1003": rows["cds_1003"]}
    assert set(query(lake, policy, "claire", "select distinct secure_group_key from prod_dim")["secure_group_key"]) == {110011, 110012}
    # Known user without a group: no rows, on every view.
    for table in GOLD_TABLES:
        assert query(lake, policy, "guest", f"select count(*) as n from {table}")["n"][0] == 0
    # Unknown user: an error, not an empty result.
    with pytest.raises(PolicyError, match="unknown user 'mallory'"):
        query(lake, policy, "mallory", COUNT_BY_RETAILER)
    # Opening the file without naming a reader shows nothing either.
    with duckdb.connect(str(database_path(lake)), read_only=True) as con:
        assert con.execute("select count(*) from store_day_fact").fetchone()[0] == 0


def test_query_cli_as_user(three_retailers, capsys):
    from pos_lakehouse.cli import main

    assert main(["query", "--as", "claire", COUNT_BY_RETAILER]) == 0
    out = capsys.readouterr().out
    assert "cds_1001" in out and "cds_1002" in out and "cds_1003" not in out
    assert main(["query", "--as", "nobody", COUNT_BY_RETAILER]) == 2
    assert "unknown user" in capsys.readouterr().err


def test_queries_cannot_step_around_the_views(three_retailers):
    lake, policy = three_retailers, load_policy()
    gold_file = next(iter(build_views(lake, policy).tables["store_day_fact"].files))
    for sql in (
        f"select * from read_parquet('{gold_file}')",
        "set variable pos_reader = 'ada'",
        "select count(*) from store_day_fact; set variable pos_reader = 'ada'",
        "select getvariable('pos_reader')",
        "attach '/tmp/x.duckdb'",
    ):
        with pytest.raises(QueryRejected):
            query(lake, policy, "guest", sql)


def test_views_follow_gold_changes(three_retailers):
    lake, policy = three_retailers, load_policy()
    build_views(lake, policy)
    assert duckdb_views.is_current(lake, policy)
    write_gold(lake, "store_day_fact", fact_rows("cds_1001", 110011, [days_ago(200, _today())]))
    assert not duckdb_views.is_current(lake, policy)
    # `query` notices the new Delta version and rebuilds before reading.
    assert _counts(query(lake, policy, "claire", COUNT_BY_RETAILER))["cds_1001"] == 6 * 4
    assert duckdb_views.is_current(lake, policy)
    # A changed policy makes the views stale too.
    assert not duckdb_views.is_current(lake, _masking_policy())


def test_policy_file_is_validated(tmp_path):
    bad = tmp_path / "policy.yaml"
    # Retailers belong to their own YAMLs: a policy that lists them is refused, not half-read.
    bad.write_text("retailers: {cds_1001: {name: marche_fr, secure_group_key: 110011}}\ngroups: {}\n")
    with pytest.raises(PolicyError, match="`retailers` does not belong here"):
        load_policy(bad)
    bad.write_text("groups: {eu: {secure_group_keys: [110011, 123]}}\n")
    with pytest.raises(PolicyError, match="grants keys no retailer in the policy has: \\[123\\]"):
        load_policy(bad)
    bad.write_text("groups: {eu: {secure_group_keys: [110011]}}\nusers: {bob: [nosuchgroup]}\n")
    with pytest.raises(PolicyError, match="undefined group"):
        load_policy(bad)


def _masking_policy(masked_measures: str = "all", days: int = 28) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "retailers": {
                "cds_1001": {
                    "name": "marche_fr",
                    "secure_group_key": 110011,
                    "competition_sensitive": True,
                    "mask_younger_than_days": days,
                    "masked_measures": masked_measures,
                },
                "cds_1002": {"name": "kaufhalle_de", "secure_group_key": 110012},
            },
            "groups": {"admins": {"all_retailers": True}},
            "users": {"ada": ["admins"]},
        }
    )


def _block_end(d: date) -> date:  # noqa: F821 - last day of the two-month masking block
    end_month = ((d.month - 1) // 2) * 2 + 2
    first_next = date(d.year + (end_month == 12), end_month % 12 + 1, 1)
    return first_next - timedelta(days=1)


def test_masking_switches_whole_blocks_at_the_threshold(lake):
    today = _today()
    # A block that ended 40 to 100 days ago; records on its first and last day.
    end = _block_end(today - timedelta(days=100))
    if (today - end).days < 40:
        end = _block_end(end - timedelta(days=70))
    block = [end, end - timedelta(days=50)]
    for code, key in (("cds_1001", 110011), ("cds_1002", 110012)):
        write_gold(
            lake, "store_day_fact", fact_rows(code, key, block, sites=1, products=1, units=10, masked_units=7, value=100, masked_value=70)
        )
    sql = (
        "select data_provider_code, date, pos_sales_units, pos_sales_value_lc, pos_sales_value_usd, "
        "at_masked_pos_sales_units from store_day_fact order by 1, 2"
    )
    age = (today - end).days  # the block's age: the age of its youngest day

    # Threshold one day above the block's age: the block is not wholly older -> every day of it masked,
    # the oldest (50 days older than the threshold) as much as the youngest.
    policy = _masking_policy("all", age + 1)
    build_views(lake, policy)
    rows = query(lake, policy, "ada", sql).to_dicts()
    masked = [r for r in rows if r["data_provider_code"] == "cds_1001"]
    assert [(r["pos_sales_units"], r["pos_sales_value_lc"], r["pos_sales_value_usd"]) for r in masked] == [
        (Decimal("7"), Decimal("70"), Decimal("77"))
    ] * 2
    assert all(r["at_masked_pos_sales_units"] == Decimal("7") for r in masked)  # the twin stays its own column
    # Not competition-sensitive: always real.
    assert {r["pos_sales_units"] for r in rows if r["data_provider_code"] == "cds_1002"} == {Decimal("10")}

    # Threshold equal to the block's age: the whole block is old enough -> every day real.
    policy = _masking_policy("all", age)
    build_views(lake, policy)
    assert {(r["pos_sales_units"], r["pos_sales_value_lc"]) for r in query(lake, policy, "ada", sql).to_dicts()} == {
        (Decimal("10"), Decimal("100"))
    }

    # `value` sensitivity masks money and the units it is a price times (units x the last real price would
    # give the value back); the view SQL of `value` and `all` differ in stock on order only.
    policy = _masking_policy("value", age + 1)
    build_views(lake, policy)
    young = query(
        lake, policy, "ada", "select distinct pos_sales_units, pos_sales_value_lc from store_day_fact where data_provider_code = 'cds_1001'"
    ).rows()
    assert young == [(Decimal("7"), Decimal("70"))]
    assert policy.retailers["cds_1001"].masked_columns() and "inventory_qty_on_order" not in policy.retailers["cds_1001"].masked_columns()


def test_catalog_lists_every_gold_table(three_retailers, tmp_path, capsys):
    lake = three_retailers
    catalog = gold_catalog(lake)
    assert [t.name for t in catalog] == list(GOLD_TABLES)
    facts = next(t for t in catalog if t.name == "store_day_fact")
    assert facts.exists and facts.partition_columns == ["data_provider_code"] and facts.last_update is not None
    assert {r.data_provider_code: r.rows for r in facts.retailers} == {
        **{c: 6 * d for c, (_, d) in WRITTEN.items()},
        "cds_1999": 6,
    }
    described = {c.name: c.description for c in facts.columns}
    assert described["pos_sales_units"] == canonical.STORE_DAY_FACT.column("pos_sales_units").description
    text = to_markdown(catalog, {"cds_1001": "marche_fr"})
    for name in GOLD_TABLES:
        assert f"## {name}" in text
    assert "| marche_fr | cds_1001 | 18 |" in text and "not created yet" in text  # week/month facts absent here

    from pos_lakehouse.cli import main

    out = tmp_path / "catalog.md"
    assert main(["catalog", "--markdown", str(out)]) == 0
    assert all(f"## {name}" in out.read_text() for name in GOLD_TABLES)
    assert main(["catalog"]) == 0
    assert "## store_day_fact" in capsys.readouterr().out


def _column_names(node: exp.Expression) -> set[str]:
    return {c.name for c in node.find_all(exp.Column)}


def test_uc_sql_parses_as_databricks_and_enforces_the_policy(capsys):
    from pos_lakehouse.cli import main

    policy = load_policy()
    assert main(["uc-sql"]) == 0
    sql = capsys.readouterr().out
    assert sql == render(policy)
    statements = [s for s in sqlglot.parse(sql, read="databricks") if s is not None]
    # sqlglot has no grammar for `GRANT USE CATALOG`; everything else parses into real expressions.
    commands = [s for s in statements if isinstance(s, exp.Command)]
    assert all(s.sql(dialect="databricks").upper().startswith("GRANT USE CATALOG ON CATALOG") for s in commands), commands

    views = {s.this.this.name: s for s in statements if isinstance(s, exp.Create) and s.kind == "VIEW"}
    assert set(views) == set(GOLD_TABLES)
    groups_with_keys = {g for g in policy.groups if policy.group_keys(g)}
    for name, view in views.items():
        table = view.this.this
        assert (table.catalog, table.db) == ("pos", "gold_secure")
        select = view.expression
        assert isinstance(select, exp.Select)
        source = select.args["from_"].this
        assert (source.catalog, source.db, source.name) == ("pos", "gold", name)
        # Row filter: one is_account_group_member term per group, each with exactly that group's keys.
        where = select.args["where"].this
        terms = list(where.flatten()) if isinstance(where, exp.Or) else [where]
        seen = {}
        for term in terms:
            member = next(f for f in term.find_all(exp.Anonymous) if f.name.lower() == "is_account_group_member")
            keys = next(term.find_all(exp.In))
            seen[member.expressions[0].name] = tuple(sorted(int(k.name) for k in keys.expressions))
        assert seen == {g: policy.group_keys(g) for g in groups_with_keys}
        # Masking: a CASE for every masked measure, choosing the at_masked_ twin on record age.
        cases = {c.parent.alias: c for c in select.find_all(exp.Case) if isinstance(c.parent, exp.Alias)}
        columns = [c.name for c in canonical.TABLES[name].columns]
        expected = {r.column: r for r in mask_rules(policy, name, columns)}
        assert set(cases) == set(expected)
        if name in canonical.FACTS:
            assert expected, "competition-sensitive retailers must mask fact measures"
        for measure, case in cases.items():
            when = case.args["ifs"][0]
            assert when.args["true"].name == f"at_masked_{measure}" and case.args["default"].name == measure
            assert {d.sql(dialect="databricks").lower() for d in when.this.find_all(exp.DateDiff)}
            codes = {lit.name for eq in when.this.find_all(exp.EQ) for lit in eq.find_all(exp.Literal)}
            assert codes == {code for code, _ in expected[measure].thresholds}
        assert len(select.expressions) == len(columns)
    grants = [s for s in statements if isinstance(s, exp.Grant)]
    granted = {(g.args["securable"].name, g.args["principals"][0].name) for g in grants if g.args.get("kind") == "VIEW"}
    assert granted == {(v, g) for v in GOLD_TABLES for g in groups_with_keys}
    # Analysts get the views only: no grant touches the gold schema, and every privilege on it and
    # on each gold table is revoked from every reader group.
    assert all(g.args["securable"].db != "gold" and g.args["securable"].name != "gold" for g in grants)
    assert {g.args.get("kind") for g in grants} == {"VIEW", "SCHEMA"}
    revokes = [s for s in statements if isinstance(s, exp.Revoke)]
    revoked = {(r.args["kind"], r.args["securable"].sql(dialect="databricks"), r.args["principals"][0].name) for r in revokes}
    assert revoked == {("SCHEMA", "`pos`.`gold`", g) for g in groups_with_keys} | {
        ("TABLE", f"`pos`.`gold`.`{t}`", g) for t in GOLD_TABLES for g in groups_with_keys
    }
    assert all([p.sql() for p in r.args["privileges"]] == ["ALL PRIVILEGES"] for r in revokes)
    assert "EXTERNAL LOCATION `gold_files`" in render(policy, gold_location="gold_files")


def test_uc_masking_condition_is_the_block_rule():
    """The Databricks CASE, run (transpiled) on dates around block ends, masks exactly whole young blocks."""
    policy = load_policy()
    view = next(
        s
        for s in sqlglot.parse(render(policy), read="databricks")
        if isinstance(s, exp.Create) and s.kind == "VIEW" and s.this.this.name == "store_day_fact"
    )
    case = next(c for c in view.expression.find_all(exp.Case) if c.parent.alias == "pos_sales_value_lc")
    condition = case.args["ifs"][0].this.sql(dialect="duckdb")
    today = date.today()
    for code, retailer in sorted(policy.masked_retailers().items()):
        for age in range(0, 200, 3):
            d = today - timedelta(days=age)
            got = duckdb.execute(
                f"select {condition} from (select ?::VARCHAR as data_provider_code, ?::DATE as date)", [code, d]
            ).fetchone()[0]
            assert got == ((today - _block_end(d)).days < retailer.mask_younger_than_days), (code, d)
