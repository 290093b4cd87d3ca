"""Kill runs with SIGKILL at random points, restart the driver, and check nothing is lost, stuck or doubled.

Drives the real code location (landing sensors, retailer runs, declarative automation, the
catch-up on start) through the in-process harness (`demo/headless.py`, which fails runs its dead
predecessor left STARTED, as run monitoring does for launched runs) in child processes sharing one
SQLite Dagster instance (the shipped dagster.yaml: pools, run monitoring) and one data root:

1. N rounds: deliver a day, start a driver that is SIGKILLed at a random point of a random
   layer's write (bronze append, silver MERGE, gold MERGE -- before, during or right after the
   Delta commit), then start a driver again. A kill is survived when the restarted driver
   finishes, no run is left STARTED, no concurrency slot stays taken and no table is behind
   its upstream.
2. Gold after all rounds is compared, table by table (content hash of the rows), with a clean
   single pass over the same deliveries.
3. Two ingest drivers run at once on one landing folder (separate Dagster instances, so only
   the Delta tables can keep them apart); bronze must hold every delivered row once.
4. Two whole drivers (bronze, silver, gold) run at once on one lake, each with its own Dagster
   instance (no pool of either keeps them apart); every silver and gold key must be stored once.

Prints `kills survived: K/N`, `concurrent runs: duplicates D`, `two instances: duplicate keys in
silver S, gold G`, `gold identical to clean run: yes/no`.

    uv run python benchmarks/faults.py --kills 10
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LAYERS = ("bronze", "silver", "gold")


# ---- child: one driver process ---------------------------------------------------------------
def _install_kill(layer: str, call: int, mode: str, max_delay: float, seed: int, table: str | None = None) -> None:
    """SIGKILL this process at the `call`-th write to a `layer` table (only `table`'s writes, if given).

    `random`: a timer fires 0..max_delay s after the write starts (mid-write, or after the
    commit but before Dagster records the step); the write never returns to the run.
    `partial`: data files are written into the table's folder without a commit, then the kill.
    """
    import threading

    import narwhals as nw
    import polars as pl

    from pos_lakehouse.storage.lake import Lake

    rng = random.Random(seed)
    seen = {"n": 0}

    def _kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def _arm(uri: str, data) -> bool:
        if f"/{layer}/" not in uri or "/quarantine/" in uri:
            return False
        if table is not None and uri.rstrip("/").rsplit("/", 1)[-1] != table:
            return False
        seen["n"] += 1
        if seen["n"] != call:
            return False
        if mode == "partial":
            data = nw.to_native(data, pass_through=True)  # silver and gold hand narwhals frames to the Lake
            frame = data.lazy().head(1000).collect() if isinstance(data, (pl.LazyFrame, pl.DataFrame)) else None
            if frame is not None and Path(uri).is_dir():
                frame.write_parquet(Path(uri) / f"part-00000-killed-{os.getpid()}.parquet")
            _kill()
        threading.Timer(rng.uniform(0.0, max_delay), _kill).start()
        return True

    def wrap(name: str) -> None:
        original = getattr(Lake, name)

        def wrapped(self, uri, data, *args, **kwargs):
            armed = _arm(uri, data)
            result = original(self, uri, data, *args, **kwargs)
            if armed:
                time.sleep(3600)  # the timer kills us; the run never learns the write finished
            return result

        setattr(Lake, name, wrapped)

    for name in ("append", "append_once", "merge"):
        wrap(name)


def child(args: argparse.Namespace) -> int:
    os.environ["POS_LAKEHOUSE_DATA"] = args.root
    os.environ["DAGSTER_HOME"] = args.home
    import dagster as dg

    warnings.filterwarnings("ignore")
    if args.kill_layer:
        _install_kill(args.kill_layer, args.kill_call, args.kill_mode, args.max_delay, args.seed, args.kill_table)
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.headless import Headless

    defs = build_definitions()
    with dg.DagsterInstance.get() as instance:
        driver = Headless(defs, instance)
        records = driver.tick_landing() if args.ingest_only else driver.settle()
        recovered = driver.recovered
    print(
        json.dumps(
            {
                "runs": len(records),
                "failed": [f"{r.name}: {r.error}" for r in records if not r.success],
                "recovered_runs": len(recovered.failed_runs) if recovered else 0,
                "freed_slots": len(recovered.freed_slot_runs) if recovered else 0,
            }
        )
    )
    return 0


def _run_child(root: Path, home: Path, *extra: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", "--root", str(root), "--home", str(home), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def _start_child(root: Path, home: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", "--root", str(root), "--home", str(home), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)


def new_home(path: Path) -> Path:
    """A Dagster instance like the shipped one (SQLite storage, pools, run monitoring)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / ".dagster_home" / "dagster.yaml", path / "dagster.yaml")
    return path


# ---- checks --------------------------------------------------------------------------------
def _compared(table: str, columns: list[str]) -> list[str]:
    """The columns two runs of the same deliveries must agree on: not the run-dependent `_` ones, nor
    the calendar's record of when and in which files rows arrived (a killed run's deliveries arrive
    over its restarts, the clean run's at once)."""
    from pos_lakehouse.transform.calendar import ARRIVAL_RECORD

    skip = set(ARRIVAL_RECORD) if table == "delivery_calendar" else set()
    return sorted(c for c in columns if not c.startswith("_") and c not in skip)


def gold_hashes(root: Path) -> dict[str, str]:
    """Per gold table: a hash of its rows (sorted; run-dependent columns left out)."""
    import polars as pl

    out = {}
    for table in sorted(p for p in (root / "gold").iterdir() if (p / "_delta_log").is_dir()):
        frame = pl.read_delta(str(table))
        frame = frame.select(_compared(table.name, frame.columns))
        frame = frame.sort(frame.columns, nulls_last=True)
        buf = frame.write_csv()
        out[table.name] = f"{frame.height}:{hashlib.sha256(buf.encode()).hexdigest()[:16]}"
    return out


def differing_columns(a: Path, b: Path, table: str) -> list[str]:
    """Columns whose values differ between two gold tables, rows matched on the table's keys."""
    import polars as pl

    from pos_lakehouse.layers.gold import gold_keys

    keys = gold_keys(table)
    left, right = pl.read_delta(str(a / "gold" / table)), pl.read_delta(str(b / "gold" / table))
    joined = left.join(right, on=keys, how="full", suffix="_clean", coalesce=True)
    out = []
    for c in _compared(table, left.columns):
        if c in keys:
            continue
        n = joined.filter(pl.col(c).ne_missing(pl.col(f"{c}_clean"))).height
        if n:
            out.append(f"{c} ({n} rows)")
    return out or ["row set"]


def bronze_duplicates(root: Path) -> tuple[int, int]:
    """(rows appended more than once, total bronze rows) over every bronze table."""
    import polars as pl

    dupes = total = 0
    for table in (root / "bronze").glob("*/*"):
        if not (table / "_delta_log").is_dir():
            continue
        frame = pl.scan_delta(str(table)).select("_delivery_id", "_row_number")
        total += frame.select(pl.len()).collect().item()
        counts = frame.group_by("_delivery_id", "_row_number").len().filter(pl.col("len") > 1).collect()
        dupes += int((counts["len"] - 1).sum()) if counts.height else 0
    return dupes, total


def duplicate_keys(root: Path) -> tuple[int, int]:
    """(silver rows, gold rows) beyond the first of their key, over every silver and gold table."""
    import polars as pl

    from pos_lakehouse.layers.gold import gold_keys
    from pos_lakehouse.transform import canonical

    def extra(path: Path, keys: list[str]) -> int:
        counts = pl.scan_delta(str(path)).group_by(keys).len().filter(pl.col("len") > 1).collect()
        return int((counts["len"] - 1).sum()) if counts.height else 0

    silver = gold = 0
    for table in (root / "silver").glob("*/*"):
        if (table / "_delta_log").is_dir() and table.name in canonical.TABLES:
            dim = table.name in canonical.DIMENSIONS
            silver += extra(table, [canonical.KEY_COLUMN[table.name]] if dim else list(canonical.TABLES[table.name].natural_keys))
    for table in (root / "gold").glob("*"):
        if (table / "_delta_log").is_dir() and table.name in canonical.TABLES:
            gold += extra(table, gold_keys(table.name))
    return silver, gold


def settled(root: Path, home: Path) -> list[str]:
    """What is wrong after a driver finished: runs left in progress, slots held, tables behind upstream."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.sensors.catch_up import catch_up_requests
    from pos_lakehouse.sensors.runs import IN_PROGRESS_RUN_STATUSES
    from pos_lakehouse.settings import retailers_dir
    from pos_lakehouse.storage.lake import Lake

    os.environ["POS_LAKEHOUSE_DATA"] = str(root)
    graph = build_definitions().resolve_asset_graph()
    problems = []
    with dg.DagsterInstance.get() as instance:
        # Behind its upstream and not withheld by a failed blocking check: what catch-up would still run.
        requests, stale = catch_up_requests(Lake(root=str(root)), instance, graph, load_retailer_specs(retailers_dir()))
        wanted = {(k, code) for keys, code in requests for k in keys}
        problems += [f"{s.key.to_user_string()}[{s.partition}] behind: {s.reason}" for s in stale if (s.key, s.partition) in wanted]
        left = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES))
        if left:
            problems.append(f"{len(left)} run(s) still in progress")
        held = instance.event_log_storage.get_concurrency_run_ids()
        if held:
            problems.append(f"slots held by {len(held)} run(s)")
    return problems


# ---- parent --------------------------------------------------------------------------------
def deliveries(staging: Path, days: int, products: int, stores: int) -> list[list[Path]]:
    """Generated files per day, for marche_fr (Parquet) and sakura_jp (CSV + JSON lines)."""
    from pos_lakehouse.demo.file_retailers import write_sakura_jp
    from pos_lakehouse.demo.generator import write_marche_fr

    # Whole weeks and months in the past: the current period's end date lies in the future, which
    # silver's period checks reject (that would fail clean runs too and hide what a kill does).
    start = (date.today().replace(day=1) - timedelta(days=45)).replace(day=1)
    marche = write_marche_fr(staging / "marche_fr", staging / "expected", days=days, start=start, n_products=products, n_stores=stores)
    sakura = write_sakura_jp(staging / "sakura_jp", staging / "expected_jp", days=days, start=start, n_products=products, n_stores=stores)
    by_day: list[list[Path]] = [[f] for f in marche]
    for f in sakura:
        day = next(i for i in range(days) if (start + timedelta(days=i)).strftime("%Y%m%d") in f.name)
        by_day[day].append(f)
    return by_day


def deliver(files: list[Path], root: Path) -> None:
    for f in files:
        target = root / "landing" / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--products", type=int, default=30)
    parser.add_argument("--stores", type=int, default=4)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--max-delay", type=float, default=1.0, help="seconds after a write starts within which the kill lands")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="pos_faults_"))
    days = args.kills + 2
    by_day = deliveries(work / "staging", days, args.products, args.stores)
    killed_root, killed_home = work / "killed", new_home(work / "home_killed")
    killed_root.mkdir()
    survived = kills = 0
    started = time.perf_counter()
    for day in range(days):
        deliver(by_day[day], killed_root)
        if day >= args.kills:  # the last deliveries run without a kill
            r = _run_child(killed_root, killed_home)
            print(
                f"day {day + 1}: clean driver rc={r.returncode} {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]}"
            )
            continue
        layer = rng.choice(LAYERS)
        mode = "partial" if rng.random() < 0.3 else "random"
        call = 1 if layer == "bronze" else rng.randint(1, 2)
        k = _run_child(
            killed_root,
            killed_home,
            "--kill-layer",
            layer,
            "--kill-call",
            str(call),
            "--kill-mode",
            mode,
            "--max-delay",
            str(args.max_delay),
            "--seed",
            str(rng.randrange(1 << 30)),
        )
        if k.returncode != -signal.SIGKILL:
            print(f"day {day + 1}: driver was not killed at {layer} write #{call} (rc={k.returncode}); not counted")
            continue
        kills += 1
        r = _run_child(killed_root, killed_home)
        summary = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else None
        problems = settled(killed_root, killed_home) if summary is not None else [f"driver rc={r.returncode}: {r.stderr[-500:]}"]
        if summary and summary["failed"]:
            problems += summary["failed"]
        ok = not problems
        survived += ok
        print(
            f"day {day + 1}: SIGKILL at {layer} write #{call} ({mode}); restart: "
            + (
                f"recovered {summary['recovered_runs']} run(s), freed slots of {summary['freed_slots']}, {summary['runs']} run(s)"
                if summary
                else "failed"
            )
            + ("" if ok else f"; PROBLEMS: {problems}")
        )
    dupes_killed, rows_killed = bronze_duplicates(killed_root)

    clean_root = work / "clean"
    for files in by_day:
        deliver(files, clean_root)
    c = _run_child(clean_root, new_home(work / "home_clean"))
    if c.returncode != 0:
        print(f"clean run failed: {c.stderr[-1000:]}")
    killed_gold, clean_gold = gold_hashes(killed_root), gold_hashes(clean_root)
    for table in sorted(set(killed_gold) | set(clean_gold)):
        mark = (
            "="
            if killed_gold.get(table) == clean_gold.get(table)
            else "DIFFERS in " + ", ".join(differing_columns(killed_root, clean_root, table))
        )
        print(f"  gold.{table}: killed {killed_gold.get(table)} clean {clean_gold.get(table)} {mark}")

    # Two ingest drivers at once, each with its own Dagster instance: only the tables can keep them apart.
    both_root = work / "concurrent"
    for files in by_day:
        deliver(files, both_root)
    a = _start_child(both_root, new_home(work / "home_a"), "--ingest-only")
    b = _start_child(both_root, new_home(work / "home_b"), "--ingest-only")
    outs = [p.communicate(timeout=1800) for p in (a, b)]
    dupes, rows = bronze_duplicates(both_root)
    _, clean_rows = bronze_duplicates(clean_root)
    for p, (_out, err) in zip((a, b), outs):
        if p.returncode != 0:
            print(f"ingest driver failed: {err[-500:]}")
    print(
        f"  concurrent ingest: {rows} bronze rows (clean run: {clean_rows}); killed run's bronze: {dupes_killed} duplicate(s) of {rows_killed}"
    )

    # Two whole drivers at once, each with its own Dagster instance: silver and gold must hold each key once.
    twin_root = work / "two_instances"
    for files in by_day:
        deliver(files, twin_root)
    twins = [_start_child(twin_root, new_home(work / f"home_twin_{n}")) for n in ("a", "b")]
    for p, (_out, err) in zip(twins, [p.communicate(timeout=3600) for p in twins]):
        if p.returncode != 0:
            print(f"driver failed: {err[-500:]}")
    silver_dupes, gold_dupes = duplicate_keys(twin_root)
    twin_gold = gold_hashes(twin_root)
    print(f"  two instances' gold identical to clean run: {'yes' if twin_gold == clean_gold else 'no'}")

    print(f"elapsed: {time.perf_counter() - started:.0f}s; work folder {work}")
    print(f"kills survived: {survived}/{kills}")
    if rows - dupes != clean_rows:
        print(f"  concurrent ingest MISSING rows: {clean_rows - (rows - dupes)}")
    print(f"concurrent runs: duplicates {dupes}")
    print(f"two instances: duplicate keys in silver {silver_dupes}, gold {gold_dupes}")
    print(f"gold identical to clean run: {'yes' if killed_gold == clean_gold and killed_gold else 'no'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    ok = survived == kills and dupes == 0 and rows == clean_rows and killed_gold == clean_gold
    return 0 if ok and silver_dupes == 0 and gold_dupes == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        p = argparse.ArgumentParser()
        p.add_argument("child")
        p.add_argument("--root", required=True)
        p.add_argument("--home", required=True)
        p.add_argument("--kill-layer", choices=LAYERS)
        p.add_argument("--kill-table", default=None, help="only writes to this table count (e.g. store_day_fact)")
        p.add_argument("--kill-call", type=int, default=1)
        p.add_argument("--kill-mode", choices=("random", "partial"), default="random")
        p.add_argument("--max-delay", type=float, default=1.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--ingest-only", action="store_true")
        sys.exit(child(p.parse_args()))
    sys.exit(main())
