"""`pos-lakehouse run`: process what is in landing with Dagster's own daemon, then print a summary per retailer."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pos_lakehouse.cli.common import checked_retailers, console, dagster_home, existing_data_root, specs, tree
from pos_lakehouse.settings import current_settings, project_root


def _log_dir(root: Path) -> Path:
    """Where the daemon's, runs' and Spark's output goes: `<data root>/logs/` (the project's `logs/` for an object-store root)."""
    return project_root() / "logs" if current_settings().remote else root / "logs"


def process_landing(out, root: Path, only: list[str] | None) -> tuple[int, list]:
    """Dagster's daemon processes what is in landing (see `runner/process.py`); returns (runs, failures)."""
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.runner.process import process_landing as run_daemon

    dagster_home()

    def sensors() -> list[str]:
        # The same definitions the daemon's code server loads: their sensors are what must have ticked.
        return [s.name for s in build_definitions(tree=tree()).sensors or []]

    return run_daemon(out, _log_dir(root), specs(), only, sensors)


def print_summary(out, root: Path, only: list[str] | None) -> None:
    import dagster as dg

    from pos_lakehouse.runner.summary import summary_table
    from pos_lakehouse.storage.lake import Lake

    chosen = [s for s in specs() if not only or s.name in only]
    with dg.DagsterInstance.get() as instance:
        out.print(summary_table(Lake(root=str(root)), instance, chosen))


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
    started = time.perf_counter()
    runs, failures = process_landing(out, root, only)
    print_summary(out, root, only)
    return finish(out, started, runs, failures, args)
