"""`pos-lakehouse run`: process what is in landing with Dagster's own daemon, then print a summary per retailer."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pos_lakehouse.cli.common import UsageError, checked_retailers, console, dagster_home, existing_data_root, specs, tree
from pos_lakehouse.settings import current_settings, project_root


def _log_dir(root: Path) -> Path:
    """Where the daemon's, runs' and Spark's output goes: `<data root>/logs/` (the project's `logs/` for an object-store root)."""
    return project_root() / "logs" if current_settings().remote else root / "logs"


def process_landing(out, root: Path, only: list[str] | None, start=None) -> tuple[int, list]:
    """Dagster's daemon processes what is in landing (see `runner/process.py`); returns (runs, failures)."""
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.runner.process import process_landing as run_daemon

    dagster_home()

    def sensors() -> list[str]:
        # The same definitions the daemon's code server loads: their sensors are what must have ticked.
        return [s.name for s in build_definitions(tree=tree()).sensors or []]

    return run_daemon(out, _log_dir(root), specs(), only, sensors, start)


def print_summary(out, root: Path, only: list[str] | None, since: float | None = None) -> None:
    import dagster as dg

    from pos_lakehouse.runner.replay import replay_hints
    from pos_lakehouse.runner.summary import summary_table
    from pos_lakehouse.storage.lake import Lake

    chosen = [s for s in specs() if not only or s.name in only]
    with dg.DagsterInstance.get() as instance:
        out.print(summary_table(Lake(root=str(root)), instance, chosen))
        for hint in replay_hints(Lake(root=str(root)), chosen, instance, since):
            out.print(f"[yellow]replay[/]: {hint}")


def finish(out, started: float, runs: int, failures: list, args) -> int:
    out.print(f"finished in {time.perf_counter() - started:.1f}s; {runs} runs, {len(failures)} failed")
    if failures:
        for f in failures:
            out.print(f"[red]failed[/]: {f.name} {f.partition_key or ''}: {' '.join((f.error or '').split())[:200]}", overflow="ellipsis")
    return 1 if failures and not args.allow_failures else 0


def cmd_run(args: argparse.Namespace) -> int:
    """Process what is in landing now: Dagster's daemon runs the same sensors, jobs and automation as `dg dev`, headless."""
    only = checked_retailers(args.retailer)
    root = existing_data_root()
    out = console()
    started, since = time.perf_counter(), time.time()
    runs, failures = process_landing(out, root, only)
    print_summary(out, root, only, since)
    return finish(out, started, runs, failures, args)


def cmd_replay(args: argparse.Namespace) -> int:
    """Derive a retailer's silver and gold again from bronze with its current YAML (after a fix), as one Dagster run."""
    from datetime import date

    from pos_lakehouse.layers.replay import ReplayError
    from pos_lakehouse.runner.replay import replay

    [name] = checked_retailers([args.retailer]) or []
    root, out, started = existing_data_root(), console(), time.perf_counter()
    try:
        since = date.fromisoformat(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(f"--since {args.since!r} is not a date (YYYY-MM-DD)") from exc
    spec = next(s for s in specs() if s.name == name)
    try:
        runs, failures = replay(out, root, spec, args.file, since, lambda start: process_landing(out, root, [name], start))
    except ReplayError as exc:
        raise UsageError(str(exc)) from exc
    print_summary(out, root, [name])
    return finish(out, started, runs, failures, args)
