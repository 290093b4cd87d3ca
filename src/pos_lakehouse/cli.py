"""`pos-lakehouse`: run what is in landing, run the demo, open the UI, reconcile gold, and query it."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from pos_lakehouse.settings import checkout_root, current_settings, project_root

# What the demo's generators and simulators need beyond the product (the `demo` extra).
DEMO_PACKAGES = ("fastapi", "uvicorn", "numpy", "xlsxwriter")


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


def _dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or project_root() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _quiet_deliberate_warnings() -> None:
    """The project uses Dagster's preview/beta APIs on purpose (automation sensor, spec mapping, freshness)."""
    from pos_lakehouse.quiet import quiet_deliberate_warnings

    quiet_deliberate_warnings()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")


@functools.cache
def _tree():
    """The code location's components, loaded once per command (retailers and definitions come from it)."""
    from pos_lakehouse.definitions import component_tree

    return component_tree()


def _specs():
    """Every retailer, read from the loaded `RetailerPipeline` components (as gold and serving read them)."""
    from pos_lakehouse.components.loaded_retailers import retailers_in_tree

    _quiet_deliberate_warnings()
    return retailers_in_tree(_tree())


def _checked_retailers(names: list[str] | None) -> list[str] | None:
    """The `--retailer` names, each known; None for all."""
    if not names:
        return None
    known = [s.name for s in _specs()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown retailer {', '.join(repr(n) for n in unknown)}; known retailers: {', '.join(known)}")
    return names


def _existing_data_root() -> Path:
    """The data root, which must exist (nothing is created when it does not)."""
    root = current_settings().data_root
    if "://" in root:
        return Path(root)
    if not Path(root).is_dir():
        raise UsageError(f"data root {root} does not exist; set POS_LAKEHOUSE_DATA or run `pos-lakehouse demo` first")
    return Path(root)


# ---- running the code location with Dagster's own daemon ----------------------------------------
def _log_dir(root: Path) -> Path:
    """Where the daemon's, runs' and Spark's output goes: `<data root>/logs/` (the project's `logs/` for an object-store root)."""
    return project_root() / "logs" if current_settings().remote else root / "logs"


def _process_landing(console, root: Path, only: list[str] | None) -> tuple[int, list]:
    """Dagster's daemon processes what is in landing (see `runner/process.py`); returns (runs, failures)."""
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.runner.process import process_landing

    _dagster_home()

    def sensors() -> list[str]:
        # The same definitions the daemon's code server loads: their sensors are what must have ticked.
        return [s.name for s in build_definitions(tree=_tree()).sensors or []]

    return process_landing(console, _log_dir(root), _specs(), only, sensors)


def _console():
    from rich.console import Console

    # A pipe or CI log is not 80 columns wide; keep the summary table readable there.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_summary(console, root: Path, only: list[str] | None) -> None:
    import dagster as dg

    from pos_lakehouse.runner.summary import summary_table
    from pos_lakehouse.storage.lake import Lake

    specs = [s for s in _specs() if not only or s.name in only]
    with dg.DagsterInstance.get() as instance:
        console.print(summary_table(Lake(root=str(root)), instance, specs))


def cmd_run(args: argparse.Namespace) -> int:
    """Process what is in landing now: Dagster's daemon runs the same sensors, jobs and automation as `dg dev`, headless."""
    only = _checked_retailers(args.retailer)
    root = _existing_data_root()
    console = _console()
    started = time.perf_counter()
    runs, failures = _process_landing(console, root, only)
    _print_summary(console, root, only)
    return _finish(console, started, runs, failures, args)


def _finish(console, started: float, runs: int, failures: list, args) -> int:
    console.print(f"finished in {time.perf_counter() - started:.1f}s; {runs} runs, {len(failures)} failed")
    if failures:
        for f in failures:
            console.print(
                f"[red]failed[/]: {f.name} {f.partition_key or ''}: {' '.join((f.error or '').split())[:200]}", overflow="ellipsis"
            )
    return 1 if failures and not args.allow_failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo retailers' deliveries, then run them to gold exactly as `run` does (Dagster's daemon, headless)."""
    import polars as pl

    from pos_lakehouse.demo.generator import read_expected
    from pos_lakehouse.demo.retailers import write_demo_landing
    from pos_lakehouse.demo.simulators import start_demo_services
    from pos_lakehouse.quality.reconcile import coverage_differences, gold_totals, reconcile
    from pos_lakehouse.storage.lake import Lake

    only = _checked_retailers(args.retailer)
    console = _console()
    root = Path(current_settings().data_root)
    if args.reset and root.exists():
        for child in root.iterdir():
            if child.name != ".gitkeep":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    started = time.perf_counter()
    with console.status("writing demo deliveries ..."):
        written = write_demo_landing(root, only)
    console.print(f"[bold]landing[/]: {sum(len(v) for v in written.values())} files for {', '.join(written)} under {root / 'landing'}")

    # The retailers' own systems (API, warehouse, SFTP server) run on loopback while the runs poll them.
    with start_demo_services(root, only) as services:
        console.print(f"[bold]sources[/]: {'; '.join(services.started) or 'none'}")
        runs, failures = _process_landing(console, root, only)
    _print_summary(console, root, only)

    specs = [s for s in _specs() if not only or s.name in only]
    expected = read_expected(root / "expected")
    if not expected.is_empty():
        expected = expected.filter(pl.col("retailer").is_in([s.name for s in specs]))
        diffs = reconcile(
            expected, gold_totals(Lake(root=str(root)), specs).filter(pl.col("retailer").is_in(expected["retailer"].unique().implode()))
        )
        coverage = coverage_differences(Lake(root=str(root)), specs, expected)
        if diffs.is_empty() and coverage.is_empty():
            console.print(
                f"[green]reconciled[/]: gold equals the generator's totals for {expected['retailer'].n_unique()} retailer(s), {expected.height} retailer-days"
                "; every period's days_covered/days_expected/is_complete and the delivery calendar agree with the days generated"
            )
        else:
            for what, found in (("reconciliation", diffs), ("period coverage / calendar", coverage)):
                if not found.is_empty():
                    console.print(f"[red]{what} differences: {found.height}[/]")
                    console.print(str(found.head(10)))
            from pos_lakehouse.runner.watch import FinishedRun

            n = diffs.height + coverage.height
            failures.append(FinishedRun("", "reconciliation", "FAILURE", None, None, f"{n} differences"))
    return _finish(console, started, runs, failures, args)


def cmd_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI (`dg dev`) with this project's DAGSTER_HOME; every `dg dev` option is passed on."""
    _dagster_home()
    dg_args = [a for a in args.dg_args if a != "--"]
    checkout = checkout_root()
    if checkout:  # `dg dev` reads the project from the checkout's pyproject.toml
        command, cwd = [shutil.which("dg") or str(Path(sys.executable).parent / "dg"), "dev", *dg_args], checkout
    else:  # installed from a wheel: no dg project, so `dagster dev` gets the workspace `dg dev` would write
        from pos_lakehouse.runner.daemon import write_workspace

        folder = Path(tempfile.mkdtemp(prefix="pos_lakehouse_workspace_"))
        atexit.register(shutil.rmtree, folder, True)
        dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
        command, cwd = [dagster, "dev", "-w", str(write_workspace(folder)), *dg_args], None
    root = current_settings().data_root
    if "://" not in root:  # runs launched by the UI send Spark's JVM output to the log file too
        os.environ.setdefault("POS_LAKEHOUSE_SPARK_LOG", str(Path(root) / "logs" / "spark.log"))
    # The demo retailers' API, warehouse and SFTP server run beside the UI so their sensors can poll
    # them -- where the demo's packages are installed; a product install opens the UI alone.
    missing = [m for m in DEMO_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        print(f"demo sources not started ({', '.join(missing)} not installed: pip install 'pos-lakehouse[demo]')", file=sys.stderr)
        return _foreground(command, cwd=cwd)
    from pos_lakehouse.demo.simulators import start_demo_services

    with start_demo_services(Path(root)):
        return _foreground(command, cwd=cwd)


def _foreground(command: list[str], cwd: Path | None = None) -> int:
    """Run `command` (`dg dev`) until it ends; a stop (Ctrl-C, SIGTERM) reaches it and everything it started.

    It runs in a process group of its own: on a stop, the runs in flight are canceled as the UI's
    Terminate does (while the code server still serves them), then `dg dev` gets SIGINT (it stops the
    webserver, daemon and code server itself), and whatever is left of the group is ended.
    """
    from pos_lakehouse.runner.processes import Interrupted, ProcessGroup

    started = time.time()
    child = ProcessGroup(command, cwd=cwd)
    try:
        return child.process.wait()
    except Interrupted as stop:
        import dagster as dg

        from pos_lakehouse.runner.watch import Watcher

        with dg.DagsterInstance.get() as instance:
            watcher = Watcher(instance, [], since=started)
            asked = watcher.cancel_in_flight(timeout=30)
            child.stop()
            left = watcher.mark_left_canceled(f"pos-lakehouse dev was stopped ({stop}); its processes were ended")
        stop.note = f"{len(set(asked) | set(left))} run(s) in flight canceled, `dg dev` and every process it started stopped"
        raise
    finally:
        child.stop()


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare gold with the demo generator's expected totals."""
    import polars as pl

    from pos_lakehouse.demo.generator import read_expected
    from pos_lakehouse.quality.reconcile import coverage_differences, gold_totals, reconcile
    from pos_lakehouse.storage.lake import Lake

    root = _existing_data_root()
    expected = read_expected(root / "expected")
    if expected.is_empty():
        raise UsageError(f"no expected totals under {root / 'expected'}: reconcile compares gold with what `pos-lakehouse demo` generated")
    lake = Lake(root=str(root))
    if not any(lake.exists(lake.gold(t)) for t in ("store_day_fact", "store_week_fact")):
        raise UsageError(f"no gold fact tables under {root / 'gold'} yet; run `pos-lakehouse demo` or `pos-lakehouse run` first")
    diffs = reconcile(expected, gold_totals(lake, _specs()).filter(pl.col("retailer").is_in(expected["retailer"].unique().implode())))
    coverage = coverage_differences(lake, [s for s in _specs() if s.name in set(expected["retailer"])], expected)
    print("no differences" if diffs.is_empty() and coverage.is_empty() else f"{diffs}\n{coverage}")
    return 0 if diffs.is_empty() and coverage.is_empty() else 1


# ---- serving: secure views, Unity Catalog SQL, catalog --------------------------------------------
def _syntax_error(sql: str) -> str | None:
    """DuckDB's own parser message for SQL it cannot parse (the views are DuckDB's), else None."""
    import duckdb

    try:
        duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        return _first_line(str(exc))
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))


def _view_columns() -> dict[str, list[str]]:
    from pos_lakehouse.layers.gold import GOLD_TABLES
    from pos_lakehouse.transform import canonical

    return {t: [c.name for c in canonical.TABLES[t].columns] for t in GOLD_TABLES}


def _query_limits():
    """The bounds on one query, from the serving component's YAML (`query_limits`); defaults without one."""
    from pos_lakehouse.components.serving_views import ServingViews
    from pos_lakehouse.serving.limits import QueryLimits

    found = _tree().get_all_components(of_type=ServingViews)
    return found[0].query_limits if found else QueryLimits()


def _query_error(exc: Exception, sql: str) -> str:
    """One line for a query DuckDB refused, naming what is known where a name was wrong."""
    import duckdb

    message = _first_line(str(exc))
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
    import sqlglot

    from pos_lakehouse.serving.duckdb_views import QueryFailed, QueryRejected, query
    from pos_lakehouse.serving.limits import QueryLimitExceeded, check_text
    from pos_lakehouse.serving.policy import PolicyError, load_policy
    from pos_lakehouse.storage.lake import Lake

    if args.max_rows < 0:
        raise UsageError("--max-rows must be 0 (all rows) or more")
    root = _existing_data_root()
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
        policy = load_policy(args.policy, _specs())
        result = query(lake, policy, args.as_user, args.sql, limits)
    except QueryLimitExceeded as exc:
        raise UsageError(str(exc)) from exc
    except QueryFailed as exc:
        engine_error = exc.__cause__ if isinstance(exc.__cause__, duckdb.Error) else exc
        raise UsageError(_query_error(engine_error, args.sql)) from exc
    except (PolicyError, QueryRejected) as exc:
        raise UsageError(_first_line(str(exc))) from exc
    except sqlglot.errors.SqlglotError as exc:
        raise UsageError(f"could not parse the query: {_first_line(str(exc))}") from exc
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


def cmd_uc_sql(args: argparse.Namespace) -> int:
    """Print the access policy rendered as Databricks SQL (Unity Catalog dynamic views and grants)."""
    from pos_lakehouse.serving.policy import PolicyError, load_policy
    from pos_lakehouse.serving.unity_catalog import render

    try:
        policy = load_policy(args.policy, _specs())
    except (PolicyError, OSError, ValueError) as exc:
        raise UsageError(_first_line(str(exc))) from exc
    print(render(policy, catalog=args.catalog, gold_schema=args.gold_schema, view_schema=args.view_schema), end="")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    """List every gold table: description, columns, partition column, rows per retailer, last update."""
    from pos_lakehouse.serving.catalog import gold_catalog, to_markdown
    from pos_lakehouse.storage.lake import Lake

    root = _existing_data_root()
    names = {s.data_provider_code: s.name for s in _specs()}
    text = to_markdown(gold_catalog(Lake(root=str(root))), names)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
        print(f"wrote {args.markdown}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    """Print the delivery calendar of the last weeks: days x retailers (or one retailer's stores); delivered, late, missing."""
    from pos_lakehouse.calendar_report import calendar_report
    from pos_lakehouse.storage.lake import Lake

    try:
        print(calendar_report(Lake(root=str(_existing_data_root())), _specs(), args.retailer, args.weeks))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pos-lakehouse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("--retailer", action="append", help="only this retailer (repeatable)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even when a run fails")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--reset", action="store_true", help="delete the data root's contents first")
    demo.add_argument("--retailer", action="append", help="only this demo retailer (repeatable)")
    demo.add_argument("--allow-failures", action="store_true", help="exit 0 even when a run fails")
    demo.set_defaults(func=cmd_demo)
    dev = sub.add_parser("dev", help=cmd_dev.__doc__, description=cmd_dev.__doc__ + " E.g. `pos-lakehouse dev --port 3111 --host 0.0.0.0`.")
    dev.set_defaults(func=cmd_dev, dg_args=[])
    rec = sub.add_parser("reconcile", help=cmd_reconcile.__doc__)
    rec.set_defaults(func=cmd_reconcile)
    qry = sub.add_parser("query", help=cmd_query.__doc__)
    qry.add_argument("--as", dest="as_user", required=True, metavar="USER", help="a user of the access policy")
    qry.add_argument("sql", help="one SELECT over the gold views (prod_dim, site_dim, store_day_fact, ...)")
    qry.add_argument("--policy", help="access policy YAML (default: defs/serving/access_policy.yaml)")
    qry.add_argument("--max-rows", type=int, default=50, help="rows to print (0: all)")
    qry.add_argument("--format", choices=("table", "csv", "json"), default="table", help="table (fits the terminal), csv or json")
    qry.set_defaults(func=cmd_query)
    ucs = sub.add_parser("uc-sql", help=cmd_uc_sql.__doc__)
    ucs.add_argument("--policy", help="access policy YAML (default: defs/serving/access_policy.yaml)")
    ucs.add_argument("--catalog", default="pos", help="Unity Catalog catalog")
    ucs.add_argument("--gold-schema", default="gold", help="schema holding the gold tables")
    ucs.add_argument("--view-schema", default="gold_secure", help="schema for the secure views")
    ucs.set_defaults(func=cmd_uc_sql)
    cat = sub.add_parser("catalog", help=cmd_catalog.__doc__)
    cat.add_argument("--markdown", metavar="PATH", help="write the catalog as Markdown to PATH instead of printing it")
    cat.set_defaults(func=cmd_catalog)
    cal = sub.add_parser("calendar", help=cmd_calendar.__doc__)
    cal.add_argument("--retailer", help="one retailer's stores instead of every retailer")
    cal.add_argument("--weeks", type=int, default=4, help="weeks back from yesterday (default 4)")
    cal.set_defaults(func=cmd_calendar)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "dev":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.dg_args = extra  # `dev` hands every other option to `dg dev` (--port, --host, ...)
    _quiet_deliberate_warnings()
    # One command, one load of the code location: its resources read the environment as it is now
    # (a second `main` in the same process, e.g. with another data root, must not reuse the first's).
    _tree.cache_clear()
    from pos_lakehouse.runner.process import DaemonFailed
    from pos_lakehouse.runner.processes import Interrupted, stop_on_signals

    try:
        # Ctrl-C or SIGTERM: what was started is stopped, one line says so, exit 130 / 143.
        with stop_on_signals() if threading.current_thread() is threading.main_thread() else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except Interrupted as stop:
        print(f"stopped by {stop}" + (f": {stop.note}" if stop.note else ""), file=sys.stderr)
        return stop.exit_code
    except DaemonFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly, and keep Python from complaining at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
