"""Local secure gold views: a DuckDB database file with one view per gold table.

Each view returns only the rows whose `secure_group_key` the reader may see and, for
competition-sensitive retailers, shows the `at_masked_*` measures instead of the real ones while
the record's two-month masking block is not wholly older than the retailer's threshold (a CASE
on the block's age; the rule and why it cannot be inverted: docs/serving.md).

How it reads Delta without the network: DuckDB's `delta` extension downloads on first use, so the
views read the gold tables' *current* Parquet files, listed through `deltalake` (the add actions
of the latest version; the partition value comes from the Delta log, not from the path). A view
is therefore a snapshot of one Delta version: the `serving/gold_views` asset rebuilds the file
after every gold change, and `query` rebuilds it first when a gold table or the policy moved on
(`is_current`). The file is written beside the target and swapped in with an atomic rename, so
a reader never sees a half-built database and never waits on a writer's lock.

Who reads: DuckDB has no principals. In the file, the reader is the `pos_reader` variable
(`SET VARIABLE pos_reader = 'claire'`), looked up in `access.reader_keys` (users -> groups ->
keys from the policy); unset or unknown, the views return no rows. That is for development only:
anyone who opens the file can set the variable or read the Parquet files the views name.

`query()` (`pos-lakehouse query --as USER`) is the guarded way in. The statement must pass an
allow-list on its parsed form (one query; every table reference a secure view or a CTE in scope;
no table functions, file paths, other schemas or catalogs, settings or file-reading functions).
Then it runs in an in-memory DuckDB that holds only the reader's rows of the views it names:
they are copied out of the file as the reader, the file is detached, and external access is
disabled and the configuration locked before the reader's SQL runs -- so a statement the parser
misreads still finds no file it may open and no rows beyond the reader's. The statement is bounded
in length, nesting, time, memory, threads and result rows (`limits.py`). Production enforcement
is Unity Catalog (see `unity_catalog.py`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import duckdb
import polars as pl
import sqlglot
import sqlglot.errors
from sqlglot import exp

from pos_lakehouse.layers.gold import GOLD_TABLES, PARTITION_COLUMN
from pos_lakehouse.serving.limits import (
    QueryLimits,
    check_text,
    fetch_bounded,
    interrupt_after,
    out_of_memory,
    timed_out,
    too_deep,
)
from pos_lakehouse.serving.policy import AccessPolicy, policy_hash
from pos_lakehouse.serving.render import literal, quote, select_list
from pos_lakehouse.settings import local_serving_dir
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.storage.object_store import is_remote, local_path, mirror
from pos_lakehouse.transform import canonical

READER_VARIABLE = "pos_reader"
DATABASE_NAME = "gold.duckdb"


def database_path(lake: Lake) -> Path:
    """`<data root>/serving/gold.duckdb`; DuckDB needs a local file, so with an object-store data root
    it is `<local serving dir>/gold.duckdb` (`settings.local_serving_dir`)."""
    if is_remote(lake.root):
        return local_serving_dir(lake.root) / DATABASE_NAME
    return local_path(lake.root) / "serving" / DATABASE_NAME


@dataclass
class TableSnapshot:
    table: str
    delta_version: int | None
    files: list[str] = field(default_factory=list)
    rows: int = 0


@dataclass
class ViewsBuild:
    path: Path
    policy_hash: str
    tables: dict[str, TableSnapshot]

    @property
    def files(self) -> list[str]:
        return [f for t in self.tables.values() for f in t.files]


# ---- DuckDB types for Delta / canonical columns ------------------------------------------------
def duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({dtype.precision or 38}, {dtype.scale or 0})"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    simple = {
        pl.String: "VARCHAR",
        pl.Int64: "BIGINT",
        pl.Int32: "INTEGER",
        pl.Int16: "SMALLINT",
        pl.Int8: "TINYINT",
        pl.Float64: "DOUBLE",
        pl.Float32: "FLOAT",
        pl.Boolean: "BOOLEAN",
        pl.Date: "DATE",
    }
    for pl_type, name in simple.items():
        if dtype == pl_type:
            return name
    return "VARCHAR"


# ---- reading one gold table's current version --------------------------------------------------
def _current_files(lake: Lake, table_name: str) -> tuple[pl.Schema, int | None, dict[str, list[str]], int]:
    """Schema, Delta version, data files per partition value, and row count of the table's latest version."""
    dt = lake.snapshot(lake.gold(table_name))
    if dt is None:
        return canonical.TABLES[table_name].schema, None, {}, 0
    schema = pl.scan_delta(dt).collect_schema()
    actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    by_partition: dict[str, list[str]] = {}
    rows = 0
    if actions.height:
        base = dt.table_uri.removeprefix("file://").rstrip("/")
        part_col = f"partition.{PARTITION_COLUMN}"
        for path, code, n in actions.select("path", part_col, "num_records").iter_rows():
            by_partition.setdefault(code, []).append(f"{base}/{unquote(path)}")
            rows += int(n or 0)
    if is_remote(lake.root):
        # DuckDB's httpfs/delta extensions are downloaded at run time, which production and CI
        # cannot rely on: the views read a local mirror of the current (immutable) data files,
        # refreshed with only the files added since the last build.
        cache = database_path(lake).parent / "files" / table_name
        remote = [f for fs in by_partition.values() for f in fs]
        local = dict(zip(remote, mirror(remote, cache)))
        by_partition = {code: [local[f] for f in fs] for code, fs in by_partition.items()}
    return schema, dt.version(), by_partition, rows


def _parquet_columns(files: list[str]) -> set[str]:
    import pyarrow.parquet as pq

    return {name for f in files for name in pq.read_schema(f).names}


def source_sql(schema: pl.Schema, by_partition: dict[str, list[str]]) -> str:
    """SQL reading the table's current files; partition values from the Delta log, absent columns as NULL."""
    columns = list(schema)
    if not by_partition:
        typed = ", ".join(f"CAST(NULL AS {duckdb_type(schema[c])}) AS {quote(c, 'duckdb')}" for c in columns)
        return f"SELECT {typed} WHERE false"
    parts = []
    for code, files in sorted(by_partition.items()):
        present = _parquet_columns(files)
        select = []
        for c in columns:
            target = duckdb_type(schema[c])
            if c == PARTITION_COLUMN:
                select.append(f"CAST({literal(code)} AS VARCHAR) AS {quote(c, 'duckdb')}")
            elif c in present:
                select.append(f"CAST({quote(c, 'duckdb')} AS {target}) AS {quote(c, 'duckdb')}")
            else:  # added to the Delta schema after these files were written
                select.append(f"CAST(NULL AS {target}) AS {quote(c, 'duckdb')}")
        file_list = ", ".join(literal(f) for f in files)
        parts.append(f"SELECT {', '.join(select)} FROM read_parquet([{file_list}], union_by_name = true, hive_partitioning = false)")
    return "\nUNION ALL\n".join(parts)


def secure_view_sql(policy: AccessPolicy, table_name: str, schema: pl.Schema, by_partition: dict[str, list[str]]) -> str:
    columns = list(schema)
    reader_filter = (
        f"{quote('secure_group_key', 'duckdb')} IN (SELECT secure_group_key FROM access.reader_keys "
        f"WHERE reader = getvariable('{READER_VARIABLE}'))"
    )
    return (
        f"CREATE VIEW main.{quote(table_name, 'duckdb')} AS\n"
        f"SELECT {', '.join(select_list(policy, table_name, columns, 'duckdb'))}\n"
        f"FROM (\n{source_sql(schema, by_partition)}\n) AS gold\n"
        f"WHERE {reader_filter}"
    )


# ---- building the database ----------------------------------------------------------------------
def build_views(lake: Lake, policy: AccessPolicy, tables: list[str] | tuple[str, ...] = GOLD_TABLES) -> ViewsBuild:
    """(Re)create the DuckDB file: the policy tables, and one secure view per gold table."""
    path = database_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    build = ViewsBuild(path, policy_hash(policy), {})
    con = duckdb.connect(str(tmp))
    try:
        _write_policy_tables(con, policy)
        built_at = datetime.now(UTC)
        for name in tables:
            schema, version, by_partition, rows = _current_files(lake, name)
            snap = TableSnapshot(name, version, [f for fs in by_partition.values() for f in fs], rows)
            build.tables[name] = snap
            con.execute(secure_view_sql(policy, name, schema, by_partition))
            description = canonical.TABLES[name].description
            con.execute(f"COMMENT ON VIEW main.{quote(name, 'duckdb')} IS {literal(description + ' Secure view.')}")
            con.execute(
                "INSERT INTO access.gold_snapshot VALUES (?, ?, ?, ?, ?)",
                [name, version, len(snap.files), rows, built_at],
            )
            if snap.files:
                con.executemany("INSERT INTO access.gold_files VALUES (?, ?)", [[name, f] for f in snap.files])
        con.execute("INSERT INTO access.build VALUES (?, ?)", [build.policy_hash, built_at])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, path)
    return build


def _write_policy_tables(con: duckdb.DuckDBPyConnection, policy: AccessPolicy) -> None:
    con.execute("CREATE SCHEMA access")
    con.execute("CREATE TABLE access.build (policy_hash VARCHAR, built_at TIMESTAMPTZ)")
    con.execute(
        "CREATE TABLE access.gold_snapshot (table_name VARCHAR, delta_version BIGINT, data_files BIGINT, "
        "row_count BIGINT, built_at TIMESTAMPTZ)"
    )
    con.execute("CREATE TABLE access.gold_files (table_name VARCHAR, path VARCHAR)")
    con.execute("CREATE TABLE access.reader_keys (reader VARCHAR, secure_group_key BIGINT)")
    con.execute("CREATE TABLE access.reader_groups (reader VARCHAR, group_name VARCHAR)")
    con.execute(
        "CREATE TABLE access.retailers (data_provider_code VARCHAR, name VARCHAR, secure_group_key BIGINT, "
        "competition_sensitive BOOLEAN, mask_younger_than_days INTEGER, masked_measures VARCHAR)"
    )
    rows = [(u, k) for u in policy.users for k in policy.user_keys(u)]
    if rows:
        con.executemany("INSERT INTO access.reader_keys VALUES (?, ?)", rows)
    groups = [(u, g) for u, gs in policy.users.items() for g in gs]
    if groups:
        con.executemany("INSERT INTO access.reader_groups VALUES (?, ?)", groups)
    con.executemany(
        "INSERT INTO access.retailers VALUES (?, ?, ?, ?, ?, ?)",
        [
            (code, r.name, r.secure_group_key, r.competition_sensitive, r.mask_younger_than_days, r.masked_measures)
            for code, r in sorted(policy.retailers.items())
        ],
    )


def is_current(lake: Lake, policy: AccessPolicy, tables: list[str] | tuple[str, ...] = GOLD_TABLES) -> bool:
    """Whether the database reflects every gold table's latest Delta version and this policy."""
    path = database_path(lake)
    if not path.exists():
        return False
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            built = con.execute("SELECT policy_hash FROM access.build").fetchone()
            versions = dict(con.execute("SELECT table_name, delta_version FROM access.gold_snapshot").fetchall())
    except duckdb.Error:
        return False
    if not built or built[0] != policy_hash(policy) or set(versions) != set(tables):
        return False
    return all(lake.version(lake.gold(t)) == versions[t] for t in tables)


def ensure_current(lake: Lake, policy: AccessPolicy, tables: list[str] | tuple[str, ...] = GOLD_TABLES) -> bool:
    """Rebuild when stale; returns whether a rebuild happened."""
    if is_current(lake, policy, tables):
        return False
    build_views(lake, policy, tables)
    return True


# ---- querying as a reader ----------------------------------------------------------------------
# Only the secure views may be named. Two independent guards: the allow-list below on the parsed
# statement, and an engine that holds nothing else -- `query` copies the reader's rows of the views
# the statement names into an in-memory database, detaches the gold file and disables every file
# system operation before the reader's SQL runs, so even a statement the parser misreads can reach
# neither a file nor another reader's rows.

# Functions that read files, run SQL text or expose the engine's settings and paths.
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        "glob",
        "query",
        "query_table",
        "getvariable",
        "current_setting",
        "getenv",
        "sniff_csv",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "read_text",
        "read_blob",
        "which_secret",
        "json_execute_serialized_sql",
        "from_substrait",
    }
)
_FORBIDDEN_PREFIXES = ("read_", "duckdb_", "pragma_", "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_")
_FORBIDDEN_SUFFIXES = ("_scan",)


class QueryRejected(ValueError):
    """A `query --as` statement that is not a plain read of the secure views (the message is one line)."""


class QueryFailed(QueryRejected):
    """An allowed statement that the engine could not run (unknown column, type error, ...)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _function_name(func: exp.Func) -> str:
    return (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()


def check_query(sql: str, views: list[str] | tuple[str, ...] = GOLD_TABLES) -> list[str]:
    """Accept exactly one read over the secure views; return the views it names (lower case).

    Refused: anything but one SELECT-like query (or DESCRIBE of a view); any table reference that
    is not a view or a common table expression in scope (file paths quoted or not, globs, other
    schemas or catalogs); table functions; functions that read files, run SQL text or show settings.
    """
    import logging

    from sqlglot.optimizer.scope import traverse_scope

    allowed = {v.lower() for v in views}
    sqlglot_log = logging.getLogger("sqlglot")
    level = sqlglot_log.level
    sqlglot_log.setLevel(logging.ERROR)  # "falling back to Command" warnings are not for the reader
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        raise QueryRejected(f"could not parse the query: {_one_line(str(exc).splitlines()[0] if str(exc) else exc)}") from None
    finally:
        sqlglot_log.setLevel(level)
    if not statements:
        raise QueryRejected("empty query")
    if len(statements) > 1:
        raise QueryRejected("one statement at a time")
    stmt = statements[0]
    if not isinstance(stmt, (exp.Query, exp.Describe)):
        raise QueryRejected(f"only queries (SELECT ... or DESCRIBE <view>) are allowed, not {stmt.key.upper()}")

    cte_names = {cte.alias_or_name.lower() for cte in stmt.find_all(exp.CTE)}
    named: set[str] = set()
    for table in stmt.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryRejected(f"table functions are not allowed: {_one_line(table.sql(dialect='duckdb'))}")
        name = table.name.lower()
        if table.args.get("catalog") or table.db.lower() not in ("", "main"):
            raise QueryRejected(f"only the secure views may be queried, not {_one_line(table.sql(dialect='duckdb'))}")
        if name in allowed:
            named.add(name)
        elif name not in cte_names:
            raise QueryRejected(f"only the secure views may be queried ({', '.join(views)}), not {table.name!r}")
    # Scope by scope: a name that matches a CTE somewhere but is read where that CTE is not visible
    # would be a file name to DuckDB.
    try:
        scopes = traverse_scope(stmt) if isinstance(stmt, exp.Query) else []
    except Exception as exc:  # sqlglot cannot resolve the scopes: do not guess
        raise QueryRejected(f"could not resolve the query's tables: {_one_line(exc)}") from None
    for scope in scopes:
        for source in scope.sources.values():
            if isinstance(source, exp.Table):
                name = source.name.lower()
                if name not in allowed:
                    raise QueryRejected(f"only the secure views may be queried ({', '.join(views)}), not {source.name!r}")
                named.add(name)
    for func in stmt.find_all(exp.Func):
        fname = _function_name(func)
        if (
            isinstance(func, (exp.ReadCSV, exp.ReadParquet))
            or fname in _FORBIDDEN_FUNCTIONS
            or fname.startswith(_FORBIDDEN_PREFIXES)
            or fname.endswith(_FORBIDDEN_SUFFIXES)
        ):
            raise QueryRejected(f"function {fname} is not allowed in a secure query")
    if not named and isinstance(stmt, exp.Describe):
        raise QueryRejected("DESCRIBE needs one of the secure views")
    return sorted(named)


def _reader_connection(path: Path, user: str, views: list[str], limits: QueryLimits | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory database holding only `user`'s rows of `views`, with file access disabled and the
    configuration (memory limit and threads included) locked."""
    config = {"python_enable_replacements": False, "autoinstall_known_extensions": False, **(limits or QueryLimits()).duckdb_config()}
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute(f"ATTACH {literal(str(path))} AS gold_views (READ_ONLY)")
        con.execute(f"SET VARIABLE {READER_VARIABLE} = {literal(user)}")
        for view in views:
            con.execute(f"CREATE TABLE main.{quote(view, 'duckdb')} AS SELECT * FROM gold_views.main.{quote(view, 'duckdb')}")
        con.execute("DETACH gold_views")
        con.execute(f"RESET VARIABLE {READER_VARIABLE}")
        for setting in (
            "SET autoload_known_extensions = false",
            "SET allow_community_extensions = false",
            "SET enable_external_access = false",  # no file, extension or database may be opened from here on
            "SET lock_configuration = true",
        ):
            con.execute(setting)
    except BaseException:
        con.close()
        raise
    return con


def query(lake: Lake, policy: AccessPolicy, user: str, sql: str, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Run one read query against the secure views as `user` (refreshing stale views first).

    Raises `PolicyError` for an unknown user, `QueryRejected` for a statement that is not a read of
    the views, `QueryLimitExceeded` for one past a bound of `limits` (text length or nesting, time,
    memory, result rows; `serving/limits.py`), `QueryFailed` when the engine refuses or cannot run
    it; each message is one line.
    """
    limits = limits or QueryLimits()
    policy.user_keys(user)  # unknown user -> PolicyError, before touching any data
    check_text(sql, limits)
    try:
        views = check_query(sql)
    except RecursionError:  # a construct nesting without brackets, past what the parser's stack holds
        raise too_deep(limits) from None
    ensure_current(lake, policy)
    try:  # the reader's rows of the views are copied in under the memory limit too
        con = _reader_connection(database_path(lake), user, views, limits)
    except duckdb.OutOfMemoryException:
        raise out_of_memory(limits) from None
    try:
        with interrupt_after(con, limits) as fired:
            try:
                return fetch_bounded(con, sql, limits, fired)
            except duckdb.InterruptException:
                if fired.is_set():
                    raise timed_out(limits) from None
                raise
    except duckdb.OutOfMemoryException:
        raise out_of_memory(limits) from None
    except duckdb.Error as exc:
        # The engine's own error stays attached: callers may name the views or columns it lacks.
        raise QueryFailed(f"the query failed: {_one_line(exc)}") from exc
    finally:
        con.close()
