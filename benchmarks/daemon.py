"""What the real Dagster daemon does with N retailers: sensor intervals, a file's way to gold, many
deliveries at once, and what the daemon and code server cost while idle.

For each size it starts a code server (`dagster code-server start`) and `dagster-daemon run` on a temporary
instance (the shipped `.dagster_home/dagster.yaml`, or `--instance` another one) and a temporary
copy of `defs/` holding the shipped retailers plus copies of `marche_fr` (as `benchmarks/scale.py`
makes them), then:

- waits for the landing sensor's first ticks and measures the daemon's and code server's CPU and
  RSS over a minute (at start);
- drops one generated file into one retailer's landing folder and waits for that day in gold;
- (largest sizes) drops one file into each of 20 retailers at once and waits for all of them;
- stays idle for `--idle-minutes` and measures CPU and RSS again over the last minute;
- reads every figure from the instance's own records: sensor tick timestamps (schedule storage),
  run records (queued, started, ended) and the gold materializations' timestamps (event log).

Gold rows and units are reconciled against the generated files. Nothing is asserted about time.

    uv run python benchmarks/daemon.py                              # 8 and 208 retailers, 10 idle minutes
    uv run python benchmarks/daemon.py --retailers 8 --idle-minutes 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import PROJECT_ROOT, TEMPLATE, make_defs_copy  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LANDING_SENSOR = "retailer_landing_sensor"
OTHER_SENSORS = ("reference_refresh_sensor", "pool_claims_sensor", "catch_up_sensor", "serving_automation")


# ---- processes ---------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode(errors="replace")
    except OSError:
        return ""


def tree(pid: int) -> list[int]:
    """`pid` and its descendants, without run workers (their work is not the idle cost)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if "execute_run" in _cmdline(p):
            continue
        found.append(p)
        todo += _children(p)
    return found


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return total


def rss_mib(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0) / 1024
    return total


def idle_cost(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """CPU (cores) over `seconds` and RSS (MiB) at the end, per process tree."""
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    time.sleep(seconds)
    return {k: ((cpu_seconds(p) - before[k]) / seconds, rss_mib(p)) for k, p in pids.items()}


# ---- the instance's records ----------------------------------------------------------------------
def _ticks(instance, sensor_name: str, since: float) -> list:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == sensor_name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100_000)
            return sorted((t for t in ticks if t.timestamp >= since), key=lambda t: t.timestamp)
    return []


def tick_times(instance, sensor_name: str, since: float) -> list[float]:
    return [t.timestamp for t in _ticks(instance, sensor_name, since)]


def tick_durations(instance, sensor_name: str, since: float) -> list[float]:
    """How long each tick took (evaluation in the code server and what the daemon did with it)."""
    return [t.end_timestamp - t.timestamp for t in _ticks(instance, sensor_name, since) if t.end_timestamp]


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def gold_time(instance, code: str, after: float) -> float | None:
    """When gold store_day_fact's partition `code` was first materialized after `after` (event log)."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["gold", "store_day_fact"]), asset_partitions=[code], after_timestamp=after),
        limit=1,
        ascending=True,
    ).records
    return records[0].timestamp if records else None


def run_phases(instance, retailer: str, after: float) -> str:
    """Queued -> started -> ended of the retailer's ingest runs created after `after` (run records)."""
    import dagster as dg

    from pos_lakehouse.sensors.targets import run_label

    parts = []
    for r in instance.get_run_records(filters=dg.RunsFilter(tags={"retailer": retailer}, created_after=_dt(after))):
        created = r.create_timestamp.timestamp()
        start, end = r.start_time, r.end_time
        # The worker's own start-up: from the launcher's event (process started) to RUN_START
        # (definitions loaded, execution plan built).
        logs = instance.all_logs(r.dagster_run.run_id)
        launched = next((e.timestamp for e in logs if "Launched run worker process" in (e.message or "")), None)
        worker = f", worker start-up {start - launched:.1f} s" if launched and start else ""
        parts.append(
            f"{run_label(r.dagster_run)} {r.dagster_run.status.value}: created {created - after:.1f} s after the drop, "
            f"started {((start or created) - created):.1f} s later{worker}, ran {((end or time.time()) - (start or created)):.1f} s"
        )
    return "; ".join(parts) or "no run"


def _dt(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


# ---- deliveries ------------------------------------------------------------------------------------
def drop(landing: Path, retailer: str, day: date, seed: int) -> tuple[int, float]:
    """One generated daily file in `retailer`'s landing folder (renamed into place whole);
    returns its rows and units sold, for the gold reconciliation."""
    import polars as pl

    from pos_lakehouse.demo.generator import write_marche_fr

    scratch = Path(tempfile.mkdtemp(prefix="pos_drop_"))
    [written] = write_marche_fr(scratch / "files", scratch / "expected", days=1, start=day, n_products=40, n_stores=4, seed=seed)
    frame = pl.read_parquet(written)
    target = landing / retailer / written.name.replace(TEMPLATE, retailer)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(written, target.with_name(target.name + ".part"))
    os.rename(target.with_name(target.name + ".part"), target)
    shutil.rmtree(scratch, ignore_errors=True)
    return frame.height, float(frame["qte_vendue"].sum())


def gold_matches(data_root: Path, code: str, rows: int, units: float) -> bool:
    import polars as pl

    from pos_lakehouse.storage.lake import Lake

    lake = Lake(root=str(data_root))
    gold = lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == code).collect()
    return gold.height == rows and float(gold["pos_sales_units"].sum()) == units


def wait_for(predicate, timeout: float, every: float = 1.0):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


# ---- one size ----------------------------------------------------------------------------------------
def run_size(n: int, args) -> None:
    import dagster as dg

    extra = max(0, n - 8)
    work = Path(tempfile.mkdtemp(prefix=f"pos_daemon_{n}_"))
    defs_dir = make_defs_copy(work / "defs", extra)
    data_root, home = work / "data", work / "home"
    data_root.mkdir()
    home.mkdir()
    shutil.copy(args.instance, home / "dagster.yaml")
    env = {
        **os.environ,
        **dict(e.split("=", 1) for e in args.env),
        "DAGSTER_HOME": str(home),
        "POS_LAKEHOUSE_DATA": str(data_root),
        "POS_LAKEHOUSE_DEFS_DIR": str(defs_dir),
    }
    # The production shape on one machine: a code server, and the daemon reading it through a
    # workspace file (as the webserver would). A daemon given `-m` instead runs its own code server
    # and replaces it every minute, reloading every definition each time.
    (work / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {args.port}\n      location_name: pos_lakehouse\n"
    )
    # The instance (and its SQLite schema) first: two processes creating it at once can collide.
    os.environ.update(DAGSTER_HOME=str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    bin_dir = Path(sys.executable).parent
    log = open(work / "daemon.log", "w")
    started = time.time()
    server = subprocess.Popen(
        [str(bin_dir / "dagster"), "code-server", "start", "-m", "pos_lakehouse.definitions", "-h", "127.0.0.1", "-p", str(args.port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(work / "workspace.yaml")],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Ready: the landing sensor has ticked twice (the code server answered and the loop runs).
        if not wait_for(lambda: len(tick_times(instance, LANDING_SENSOR, started)) >= 2, 600, 2):
            raise SystemExit(f"{n} retailers: the landing sensor never ticked; see {work / 'daemon.log'}")
        ready = time.time()
        pids = {"daemon": daemon.pid, "code server": server.pid}
        print(f"{n} retailers: daemon ready (landing sensor ticking) {ready - started:.0f} s after start", flush=True)
        at_start = idle_cost(pids, args.window)
        idle_from = ready

        # One file, one retailer (a copy when there are copies: the same YAML as marche_fr).
        retailer = "scale_r001" if extra else TEMPLATE
        code = _code(defs_dir, retailer)
        day = date.today() - timedelta(days=1)
        dropped = time.time()
        rows, units = drop(data_root / "landing", retailer, day, seed=1)
        landed = wait_for(lambda: gold_time(instance, code, dropped), args.timeout)
        if landed:
            ok = gold_matches(data_root, code, rows, units)
            print(f"drop to gold at {n} retailers: {landed - dropped:.1f} s", flush=True)
            print(f"  {run_phases(instance, retailer, dropped)}; gold reconciles with the file: {ok}")
        else:
            print(f"drop to gold at {n} retailers: not in gold after {args.timeout:.0f} s ({run_phases(instance, retailer, dropped)})")

        if n >= args.many_from:
            chosen = [f"scale_r{i:03d}" for i in range(2, 2 + args.many)] if extra >= 1 + args.many else []
            if chosen:
                dropped = time.time()
                expected = {r: drop(data_root / "landing", r, day, seed=i + 2) for i, r in enumerate(chosen)}
                codes = {r: _code(defs_dir, r) for r in chosen}

                def all_in_gold():
                    times = [gold_time(instance, codes[r], dropped) for r in chosen]
                    return max(times) if all(times) else None

                done = wait_for(all_in_gold, args.many_timeout, 2)
                if done:
                    ok = all(gold_matches(data_root, codes[r], *expected[r]) for r in chosen)
                    print(f"{len(chosen)} at once at {n} retailers: all in gold in {done - dropped:.1f} s (gold reconciles: {ok})")
                else:
                    got = sum(1 for r in chosen if gold_time(instance, codes[r], dropped))
                    print(f"{len(chosen)} at once at {n} retailers: {got} of {len(chosen)} in gold after {args.many_timeout:.0f} s")

        # Idle: nothing more to do; measured over the last window of the idle period.
        quiet_from = time.time()
        rss_series = [rss_mib(daemon.pid)]
        while time.time() < quiet_from + args.idle_minutes * 60 - args.window:
            time.sleep(min(60.0, max(0.0, quiet_from + args.idle_minutes * 60 - args.window - time.time())))
            rss_series.append(rss_mib(daemon.pid))
        after = idle_cost(pids, args.window)
        minutes = (time.time() - quiet_from) / 60
        print(f"daemon RSS each minute of the idle period: {' '.join(f'{r:.0f}' for r in rss_series)} MiB")

        ticks = tick_times(instance, LANDING_SENSOR, idle_from)
        print(
            f"sensor interval p95 at {n} retailers: {p95(intervals(ticks)):.1f} s "
            f"({len(ticks)} landing sensor ticks; max {max(intervals(ticks), default=float('nan')):.1f} s; "
            f"tick duration p95 {p95(tick_durations(instance, LANDING_SENSOR, idle_from)):.2f} s)"
        )
        for name in OTHER_SENSORS:
            other = intervals(tick_times(instance, name, idle_from))
            if other:
                print(
                    f"  {name}: interval p95 {p95(other):.1f} s, max {max(other):.1f} s over {len(other)} intervals; "
                    f"tick duration p95 {p95(tick_durations(instance, name, idle_from)):.2f} s"
                )
        for label, figures in (("at start", at_start), (f"after {minutes:.1f} min idle", after)):
            total = sum(c for c, _ in figures.values())
            each = ", ".join(f"{k} {c:.3f} core {r:.0f} MiB" for k, (c, r) in figures.items())
            print(f"idle {label} at {n} retailers: daemon + code server {total:.3f} core ({each})")
        if "daemon" in after:
            print(f"daemon RSS after {minutes:.1f} min vs start at {n} retailers: x{after['daemon'][1] / at_start['daemon'][1]:.2f}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    finally:
        instance.dispose()
        for proc in (daemon, server):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in (daemon, server):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _code(defs_dir: Path, retailer: str) -> str:
    import yaml

    attrs = yaml.safe_load((defs_dir / "retailers" / retailer / "defs.yaml").read_text())["attributes"]
    return attrs.get("data_provider_code") or f"cds_{attrs['retailer_id']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retailers", type=int, nargs="+", default=[8, 208], help="sizes (8 = the shipped retailers)")
    parser.add_argument("--idle-minutes", type=float, default=10.0, help="idle period after the deliveries")
    parser.add_argument("--window", type=float, default=60.0, help="seconds over which idle CPU is measured")
    parser.add_argument("--many", type=int, default=20, help="simultaneous deliveries at the larger sizes")
    parser.add_argument("--many-from", type=int, default=100, help="smallest size that gets the simultaneous deliveries")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one file in gold")
    parser.add_argument("--many-timeout", type=float, default=1200.0, help="seconds to wait for the simultaneous deliveries")
    parser.add_argument("--instance", type=Path, default=PROJECT_ROOT / ".dagster_home" / "dagster.yaml", help="dagster.yaml to run with")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon and code server (repeatable)")
    parser.add_argument("--port", type=int, default=3140, help="the code server's port")
    parser.add_argument("--keep", action="store_true", help="keep the temporary instance, data and logs")
    args = parser.parse_args()
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start", flush=True)
    for n in args.retailers:
        run_size(n, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
