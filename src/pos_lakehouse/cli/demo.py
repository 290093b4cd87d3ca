"""`pos-lakehouse demo` and `reconcile`, and the demo sources `dev` starts: the only CLI code that imports `pos_lakehouse.demo`.

Every import of the demo package sits inside a function here, so the product's commands (`run`,
`query`, ...) and a product install without the `demo` extra never load it.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from pos_lakehouse.cli.common import UsageError, checked_retailers, console, existing_data_root, specs
from pos_lakehouse.cli.run import finish, print_summary, process_landing
from pos_lakehouse.settings import current_settings


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo retailers' deliveries, then run them to gold exactly as `run` does (Dagster's daemon, headless)."""
    import polars as pl

    from pos_lakehouse.demo.generator import read_expected
    from pos_lakehouse.demo.retailers import write_demo_landing
    from pos_lakehouse.demo.simulators import start_demo_services
    from pos_lakehouse.quality.reconcile import coverage_differences, gold_totals, reconcile
    from pos_lakehouse.storage.lake import Lake

    only = checked_retailers(args.retailer)
    out = console()
    root = Path(current_settings().data_root)
    if args.reset and root.exists():
        for child in root.iterdir():
            if child.name != ".gitkeep":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    started = time.perf_counter()
    with out.status("writing demo deliveries ..."):
        written = write_demo_landing(root, only)
    out.print(f"[bold]landing[/]: {sum(len(v) for v in written.values())} files for {', '.join(written)} under {root / 'landing'}")

    # The retailers' own systems (API, warehouse, SFTP server) run on loopback while the runs poll them.
    with start_demo_services(root, only) as services:
        out.print(f"[bold]sources[/]: {'; '.join(services.started) or 'none'}")
        runs, failures = process_landing(out, root, only)
    print_summary(out, root, only)

    chosen = [s for s in specs() if not only or s.name in only]
    expected = read_expected(root / "expected")
    if not expected.is_empty():
        expected = expected.filter(pl.col("retailer").is_in([s.name for s in chosen]))
        diffs = reconcile(
            expected, gold_totals(Lake(root=str(root)), chosen).filter(pl.col("retailer").is_in(expected["retailer"].unique().implode()))
        )
        coverage = coverage_differences(Lake(root=str(root)), chosen, expected)
        if diffs.is_empty() and coverage.is_empty():
            out.print(
                f"[green]reconciled[/]: gold equals the generator's totals for {expected['retailer'].n_unique()} retailer(s), {expected.height} retailer-days"
                "; every period's days_covered/days_expected/is_complete and the delivery calendar agree with the days generated"
            )
        else:
            for what, found in (("reconciliation", diffs), ("period coverage / calendar", coverage)):
                if not found.is_empty():
                    out.print(f"[red]{what} differences: {found.height}[/]")
                    out.print(str(found.head(10)))
            from pos_lakehouse.runner.watch import FinishedRun

            n = diffs.height + coverage.height
            failures.append(FinishedRun("", "reconciliation", "FAILURE", None, None, f"{n} differences"))
    return finish(out, started, runs, failures, args)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare gold with the demo generator's expected totals."""
    import polars as pl

    from pos_lakehouse.demo.generator import read_expected
    from pos_lakehouse.quality.reconcile import coverage_differences, gold_totals, reconcile
    from pos_lakehouse.storage.lake import Lake

    root = existing_data_root()
    expected = read_expected(root / "expected")
    if expected.is_empty():
        raise UsageError(f"no expected totals under {root / 'expected'}: reconcile compares gold with what `pos-lakehouse demo` generated")
    lake = Lake(root=str(root))
    if not any(lake.exists(lake.gold(t)) for t in ("store_day_fact", "store_week_fact")):
        raise UsageError(f"no gold fact tables under {root / 'gold'} yet; run `pos-lakehouse demo` or `pos-lakehouse run` first")
    diffs = reconcile(expected, gold_totals(lake, specs()).filter(pl.col("retailer").is_in(expected["retailer"].unique().implode())))
    coverage = coverage_differences(lake, [s for s in specs() if s.name in set(expected["retailer"])], expected)
    print("no differences" if diffs.is_empty() and coverage.is_empty() else f"{diffs}\n{coverage}")
    return 0 if diffs.is_empty() and coverage.is_empty() else 1


def demo_sources(root: Path):
    """The demo retailers' API, warehouse and SFTP server on loopback (a context manager), for `dev`'s sensors to poll."""
    from pos_lakehouse.demo.simulators import start_demo_services

    return start_demo_services(root)
