"""`pos-lakehouse query`: one SQL query against the secure gold views as a user of the access policy, rendered to fit."""

from __future__ import annotations

import argparse
import shutil
import sys

from pos_lakehouse.cli.common import UsageError, existing_data_root, first_line, specs, tree


def _syntax_error(sql: str) -> str | None:
    """DuckDB's own parser message for SQL it cannot parse (the views are DuckDB's), else None."""
    import duckdb

    try:
        duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        return first_line(str(exc))
    return None


def _view_columns() -> dict[str, list[str]]:
    from pos_lakehouse.layers.gold import GOLD_TABLES
    from pos_lakehouse.transform import canonical

    return {t: [c.name for c in canonical.TABLES[t].columns] for t in GOLD_TABLES}


def _query_limits():
    """The bounds on one query, from the serving component's YAML (`query_limits`); defaults without one."""
    from pos_lakehouse.components.serving_views import ServingViews
    from pos_lakehouse.serving.limits import QueryLimits

    found = tree().get_all_components(of_type=ServingViews)
    return found[0].query_limits if found else QueryLimits()


def _query_error(exc: Exception, sql: str) -> str:
    """One line for a query DuckDB refused, naming what is known where a name was wrong."""
    import duckdb

    message = first_line(str(exc))
    views = _view_columns()
    if isinstance(exc, duckdb.CatalogException):
        return f"{message} (views: {', '.join(views)})"
    if isinstance(exc, duckdb.BinderException) and "column" in message.lower():
        used = [t for t in views if t in sql.lower()]
        cols = "; ".join(f"{t}: {', '.join(views[t])}" for t in used) or f"views: {', '.join(views)}"
        return f"{message.split(' Candidate bindings')[0]} (columns of {cols})"
    return message


def cmd_query(args: argparse.Namespace) -> int:
    """Run one SQL query against the secure gold views as a user of the access policy."""
    import duckdb
    import sqlglot.errors

    from pos_lakehouse.serving.duckdb_views import QueryFailed, QueryRejected, query
    from pos_lakehouse.serving.limits import QueryLimitExceeded, check_text
    from pos_lakehouse.serving.policy import PolicyError, load_policy
    from pos_lakehouse.storage.lake import Lake

    if args.max_rows < 0:
        raise UsageError("--max-rows must be 0 (all rows) or more")
    root = existing_data_root()
    lake = Lake(root=str(root))
    if not any(lake.exists(lake.gold(t)) for t in _view_columns()):
        raise UsageError(f"no gold tables under {root / 'gold'} yet; run `pos-lakehouse demo` or `pos-lakehouse run` first")
    limits = _query_limits()
    try:
        check_text(args.sql, limits)  # before any parser: they recurse per nesting level
    except QueryLimitExceeded as exc:
        raise UsageError(str(exc)) from exc
    syntax = _syntax_error(args.sql)
    if syntax:
        raise UsageError(syntax)
    try:
        policy = load_policy(args.policy, specs())
        result = query(lake, policy, args.as_user, args.sql, limits)
    except QueryLimitExceeded as exc:
        raise UsageError(str(exc)) from exc
    except QueryFailed as exc:
        engine_error = exc.__cause__ if isinstance(exc.__cause__, duckdb.Error) else exc
        raise UsageError(_query_error(engine_error, args.sql)) from exc
    except (PolicyError, QueryRejected) as exc:
        raise UsageError(first_line(str(exc))) from exc
    except sqlglot.errors.SqlglotError as exc:
        raise UsageError(f"could not parse the query: {first_line(str(exc))}") from exc
    except duckdb.Error as exc:
        raise UsageError(_query_error(exc, args.sql)) from exc
    total = result.height
    shown = result if args.max_rows == 0 else result.head(args.max_rows)
    sys.stdout.write(render_frame(shown, args.format, shutil.get_terminal_size((120, 24)).columns))
    sys.stdout.flush()
    note = f"{total} row(s) as {args.as_user}"
    if shown.height < total:
        note += f"; showing {shown.height} (--max-rows 0 for all)"
    print(note, file=sys.stderr)
    from pos_lakehouse.serving.duckdb_views import check_query
    from pos_lakehouse.serving.masked_note import masked_note

    masked = masked_note(policy, args.as_user, check_query(args.sql), result)
    if masked:
        print(masked, file=sys.stderr)
    return 0


def render_frame(frame, fmt: str, width: int) -> str:
    """A result as csv, json (records) or a table that fits `width` columns of text."""
    import io

    import polars as pl

    nested = [n for n, t in frame.schema.items() if t.is_nested()]
    if fmt == "json":
        return frame.write_json() + "\n"
    if nested:  # CSV and the table print nested values as their JSON text
        frame = frame.with_columns([pl.col(n).map_elements(lambda v: str(v), return_dtype=pl.String) for n in nested])
    if fmt == "csv":
        out = io.StringIO()
        frame.write_csv(out)
        return out.getvalue()
    max_cell = 30
    used, keep = 1, []
    for name in frame.columns:
        values = frame[name].cast(pl.String).str.len_chars().max() if frame.height else 0
        cell = min(max_cell, max(len(name), int(values or 0), 4)) + 3
        if keep and used + cell > width:
            break
        keep.append(name)
        used += cell
    shown = frame.select(keep)
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        fmt_str_lengths=max_cell,
        tbl_width_chars=width,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        text = str(shown) + "\n"
    if len(keep) < frame.width:
        text += f"({len(keep)} of {frame.width} columns fit the terminal; --format csv or json for all, or select fewer columns)\n"
    return text
