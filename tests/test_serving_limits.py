"""A greedy analyst against the secure views: no query may take the shared machine over.

Real gold (written through the real Lake), real DuckDB views, real queries. Each bound of the
serving YAML's `query_limits` -- run time, DuckDB memory, query length, nesting depth, result
rows -- stops a query that passes it with one line naming the limit, both through `query()` and
through `pos-lakehouse query` (non-zero exit, no traceback), while ordinary queries still answer.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import duckdb
import pytest
import yaml
from conftest import DEFS_DIR
from serving_data import days_ago, fact_rows, prod_rows, write_gold

from pos_lakehouse.serving.duckdb_views import _reader_connection, build_views, database_path, query
from pos_lakehouse.serving.limits import QueryLimitExceeded, QueryLimits, nesting_depth
from pos_lakehouse.serving.policy import AccessPolicy

DEFS = DEFS_DIR
RETAILERS = {"cds_1001": 110011, "cds_1002": 110012}  # marche_fr's and kaufhalle_de's codes and keys
DAYS, SITES, PRODUCTS, UNITS = 100, 3, 4, 10.0

# Runs for hours at this size (1,200^3 concatenations compared): only an interrupt ends it in a test.
FOREVER = (
    "select count(*) as n from store_day_fact a, store_day_fact b, store_day_fact c "
    "where a.prod_id || b.site_id || c.prod_id = 'no such thing'"
)
# Every pair of rows' ids in one list: ~1.4 M strings held at once, however many threads.
HUNGRY = "select list(a.prod_id || b.prod_id || a.site_id || b.site_id) as l from store_day_fact a, store_day_fact b"


def _nested(levels: int) -> str:
    sql = "select count(*) as n from store_day_fact"
    for i in range(levels):
        sql = f"select * from ({sql}) t{i}"  # noqa: S608
    return sql


def _deep_cases(depth: int) -> dict[str, str]:
    """One query per construct the parsers recurse on, each `depth` levels deep (`count(*)` is one)."""
    n = depth - 1
    return {
        "subqueries": _nested(n),
        "brackets": "select " + "(" * n + "count(*)" + ")" * n + " as n from store_day_fact",
        "functions": "select " + "abs(" * n + "count(*)" + ")" * n + " as n from store_day_fact",
        "case": "select " + "case when true then " * n + "count(*)" + " end" * n + " as n from store_day_fact",
    }


@pytest.fixture
def gold(lake):
    today = days_ago(0)
    days = [today - timedelta(days=100 + d) for d in range(DAYS)]  # old: nothing masked, nothing to confuse counts
    for code, key in RETAILERS.items():
        write_gold(lake, "store_day_fact", fact_rows(code, key, days, sites=SITES, products=PRODUCTS, units=UNITS))
        write_gold(lake, "prod_dim", prod_rows(code, key, PRODUCTS))
    policy = AccessPolicy.model_validate(
        {
            "retailers": {code: {"name": f"r{code[-1]}", "secure_group_key": key} for code, key in RETAILERS.items()},
            "groups": {"admins": {"all_retailers": True}, "one": {"secure_group_keys": [RETAILERS["cds_1001"]]}},
            "users": {"ada": ["admins"], "claire": ["one"]},
        }
    )
    build_views(lake, policy)
    return lake, policy


def _refused(lake, policy, sql: str, limits: QueryLimits, names: str) -> str:
    with pytest.raises(QueryLimitExceeded) as stopped:
        query(lake, policy, "claire", sql, limits)
    message = str(stopped.value)
    assert "\n" not in message and names in message, message
    return message


def test_a_query_past_the_timeout_is_interrupted(gold):
    lake, policy = gold
    message = _refused(lake, policy, FOREVER, QueryLimits(timeout_seconds=1), "timeout_seconds")
    assert "longer than 1 s" in message
    # The connection was interrupted, not abandoned: the next query answers at once, with the right count.
    assert query(lake, policy, "claire", "select count(*) as n from store_day_fact", QueryLimits(timeout_seconds=1))["n"][0] == (
        DAYS * SITES * PRODUCTS
    )


def test_a_memory_hungry_query_stops_at_the_memory_limit(gold):
    lake, policy = gold
    limits = QueryLimits(memory_limit="32MB", threads=1, timeout_seconds=300)
    _refused(lake, policy, HUNGRY, limits, "memory_limit")
    # The limits are the engine's settings, locked: a statement past the parser could not raise them.
    con = _reader_connection(database_path(lake), "claire", ["store_day_fact"], limits)
    try:
        assert con.execute("select current_setting('threads')").fetchone()[0] == 1
        assert con.execute("select current_setting('memory_limit')").fetchone()[0].replace(" ", "") in ("32.0MB", "30.5MiB", "32MB")
        with pytest.raises(duckdb.Error):
            con.execute("set memory_limit = '20GB'")
    finally:
        con.close()


def test_over_long_and_over_deep_queries_are_refused_before_parsing(gold):
    lake, policy = gold
    limits = QueryLimits()
    in_list = ", ".join(f"'{i:08d}'" for i in range(12_000))  # the 2 MB IN-list, scaled to the limit
    _refused(lake, policy, f"select count(*) from store_day_fact where prod_id in ({in_list})", limits, "max_sql_chars")  # noqa: S608
    # 200 nested subqueries (3 KB of SQL) overflowed the parser's stack with a 2,900-line traceback.
    message = _refused(lake, policy, _nested(200), limits, "max_nesting_depth")
    assert "201 levels" in message  # 200 subqueries and count(*)
    for name, sql in _deep_cases(limits.max_nesting_depth + 1).items():
        assert nesting_depth(sql) == limits.max_nesting_depth + 1, name
        _refused(lake, policy, sql, limits, "max_nesting_depth")
    # Constructs that nest without brackets are caught as the parser's stack runs out: one line still.
    _refused(lake, policy, "select " + "not " * 3000 + "true from store_day_fact", limits, "max_nesting_depth")
    # Brackets in strings and comments are not nesting.
    assert nesting_depth("select '((((((' /* ((((( */ from store_day_fact -- ((((") == 0


def test_too_many_result_rows_are_refused(gold):
    lake, policy = gold
    _refused(lake, policy, "select * from store_day_fact", QueryLimits(max_result_rows=DAYS * SITES * PRODUCTS - 1), "max_result_rows")


def test_ordinary_queries_answer_within_the_limits(gold):
    lake, policy = gold
    rows = DAYS * SITES * PRODUCTS
    tight = QueryLimits(timeout_seconds=30, memory_limit="64MB", threads=1, max_result_rows=rows)
    for limits in (QueryLimits(), tight):
        assert query(lake, policy, "ada", "select count(*) as n from store_day_fact", limits)["n"][0] == 2 * rows
        assert query(lake, policy, "claire", "select * from store_day_fact", limits).height == rows
        by_day = query(lake, policy, "claire", "select date, sum(pos_sales_units) as u from store_day_fact group by 1", limits)
        assert by_day.height == DAYS and float(by_day["u"].sum()) == DAYS * SITES * PRODUCTS * UNITS
        joined = "select count(*) as n from store_day_fact d join prod_dim p on d.prod_id = p.prod_id"
        assert query(lake, policy, "claire", joined, limits)["n"][0] == rows
        # Nesting up to the limit is fine, in every construct.
        for name, sql in _deep_cases(limits.max_nesting_depth).items():
            assert query(lake, policy, "claire", sql, limits)["n"][0] == rows, name


# ---- the CLI: one line, non-zero exit, no traceback -------------------------------------------------
@pytest.fixture
def short_limits_defs(tmp_path, monkeypatch):
    """A copy of the defs folder whose serving YAML sets short, small limits (the live folder is not touched)."""
    root = tmp_path / "defs"
    for part in ("retailers", "serving", "gold"):
        shutil.copytree(DEFS / part, root / part)
    serving = root / "serving" / "defs.yaml"
    doc = yaml.safe_load(serving.read_text())
    doc["attributes"]["query_limits"] = {**doc["attributes"].get("query_limits", {}), "timeout_seconds": 2, "memory_limit": "32MB"}
    serving.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("POS_LAKEHOUSE_DEFS_DIR", str(root))
    return root


def _cli(capsys, sql: str) -> tuple[int, str]:
    from pos_lakehouse.cli import main

    code = main(["query", "--as", "ada", sql])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == "", captured
    return code, captured.err.strip()


@pytest.mark.parametrize(
    ("sql", "limit"),
    [
        (FOREVER, "timeout_seconds"),
        (HUNGRY, "memory_limit"),
        (_nested(200), "max_nesting_depth"),
        ("select 1 as n from store_day_fact where prod_id in (" + ", ".join(["'x'"] * 40_000) + ")", "max_sql_chars"),  # noqa: S608
    ],
    ids=["timeout", "memory", "nesting", "length"],
)
def test_the_cli_answers_each_limit_with_one_line(gold, short_limits_defs, capsys, sql, limit):
    code, err = _cli(capsys, sql)
    assert code != 0
    assert err.startswith("error: ") and "\n" not in err and limit in err, err


def test_the_cli_still_answers_ordinary_queries(gold, short_limits_defs, capsys):
    from pos_lakehouse.cli import main

    assert main(["query", "--as", "ada", "--format", "csv", "select count(*) as n from store_day_fact"]) == 0
    out = capsys.readouterr().out
    assert out.split() == ["n", str(2 * DAYS * SITES * PRODUCTS)]


def test_copying_the_readers_rows_is_under_the_memory_limit_too(gold):
    """The views a query names are copied into the reader's database first: that copy is bounded as well."""
    lake, policy = gold
    _refused(lake, policy, "select count(*) as n from store_day_fact", QueryLimits(memory_limit="1MB"), "memory_limit")


@pytest.mark.parametrize(
    "bad",
    [{"timeout_seconds": 0}, {"memory_limit": "lots"}, {"threads": 0}, {"max_nesting_depth": 100}, {"max_result_rows": 0}, {"typo": 1}],
    ids=lambda b: next(iter(b)),
)
def test_limits_out_of_range_are_refused_when_the_yaml_loads(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        QueryLimits.model_validate(bad)
