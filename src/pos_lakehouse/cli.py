"""`pos-lakehouse`: run the demo, open the UI, reconcile gold, and query it."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pos_lakehouse.settings import PROJECT_ROOT, current_settings


def _dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo landing zone and run it to gold headless, through the code location's own sensors and automation."""
    from rich.console import Console
    from rich.table import Table

    import dagster as dg

    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.headless import Headless, RunRecord
    from pos_lakehouse.demo.retailers import write_demo_landing
    from pos_lakehouse.demo.generator import read_expected
    from pos_lakehouse.quality.reconcile import gold_totals, reconcile
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.storage.lake import Lake

    console = Console()
    settings = current_settings()
    root = Path(settings.data_root)
    if args.reset and root.exists():
        for child in root.iterdir():
            if child.name != ".gitkeep":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    started = time.perf_counter()
    with console.status("writing demo deliveries ..."):
        written = write_demo_landing(root, args.retailer or None)
    console.print(f"[bold]landing[/]: {sum(len(v) for v in written.values())} files for {', '.join(written)} under {root / 'landing'}")

    home = _dagster_home()
    defs = build_definitions()
    failures: list[RunRecord] = []

    def on_run(record: RunRecord) -> None:
        mark = "[green]ok[/]" if record.success else "[red]FAILED[/]"
        console.print(f"  {mark} {record.name} [dim]{record.partition_key or ''} {record.run_id[:8]}[/]")
        if not record.success:
            failures.append(record)
            console.print(f"     [red]{record.error}[/]")

    with dg.DagsterInstance.get() as instance:
        console.print(f"[bold]runs[/] (Dagster instance {home}; open them with `pos-lakehouse dev`)")
        headless = Headless(defs, instance, on_run=on_run)
        with console.status("sensors and automation ..."):
            headless.settle()

    lake = Lake(root=settings.data_root)
    specs = load_retailer_specs(PROJECT_ROOT / "src/pos_lakehouse/defs/retailers")
    table = Table(title="gold", show_lines=False)
    table.add_column("table")
    for s in specs:
        table.add_column(s.name, justify="right")
    import polars as pl

    for name in ("prod_dim", "site_dim", "store_day_fact", "store_week_fact"):
        uri = lake.gold(name)
        counts = {}
        if lake.exists(uri):
            counts = dict(lake.scan(uri).group_by("data_provider_code").agg(pl.len()).collect().iter_rows())
        table.add_row(name, *[f"{counts.get(s.data_provider_code, 0):,}" for s in specs])
    console.print(table)

    expected = read_expected(root / "expected")
    if not expected.is_empty():
        diffs = reconcile(expected, gold_totals(lake, specs).filter(pl.col("retailer").is_in(expected["retailer"].unique().implode())))
        if diffs.is_empty():
            console.print(f"[green]reconciled[/]: gold equals the generator's totals for {expected['retailer'].n_unique()} retailer(s), {expected.height} retailer-days")
        else:
            console.print(f"[red]reconciliation differences: {diffs.height}[/]")
            console.print(str(diffs.head(20)))
            failures.append(RunRecord("reconciliation", "", False, f"{diffs.height} differences"))
    console.print(f"finished in {time.perf_counter() - started:.1f}s; {len(headless.runs)} runs, {len(failures)} failed")
    return 1 if failures and not args.allow_failures else 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI (`dg dev`) with this project's DAGSTER_HOME."""
    _dagster_home()
    exe = shutil.which("dg") or str(Path(sys.executable).parent / "dg")
    return subprocess.call([exe, "dev", *args.dg_args], cwd=PROJECT_ROOT)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare gold with the demo generator's expected totals."""
    import polars as pl

    from pos_lakehouse.demo.generator import read_expected
    from pos_lakehouse.quality.reconcile import gold_totals, reconcile
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.storage.lake import Lake

    settings = current_settings()
    lake = Lake(root=settings.data_root)
    specs = load_retailer_specs(PROJECT_ROOT / "src/pos_lakehouse/defs/retailers")
    expected = read_expected(Path(settings.data_root) / "expected")
    diffs = reconcile(expected, gold_totals(lake, specs).filter(pl.col("retailer").is_in(expected["retailer"].unique().implode())))
    print("no differences" if diffs.is_empty() else diffs)
    return 0 if diffs.is_empty() else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pos-lakehouse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--reset", action="store_true", help="delete the data root's contents first")
    demo.add_argument("--retailer", action="append", help="only this demo retailer (repeatable)")
    demo.add_argument("--allow-failures", action="store_true", help="exit 0 even when a run fails")
    demo.set_defaults(func=cmd_demo)
    dev = sub.add_parser("dev", help=cmd_dev.__doc__)
    dev.add_argument("dg_args", nargs=argparse.REMAINDER, help="arguments passed on to `dg dev`")
    dev.set_defaults(func=cmd_dev)
    rec = sub.add_parser("reconcile", help=cmd_reconcile.__doc__)
    rec.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
