"""What the Dagster side costs as retailers are added: definitions load, `dg check defs`, one
automation tick (nothing to do, and one retailer's bronze changed -- which its own delivery run
carries on, so automation requests nothing), the automation cursor, the reference refresh
sensor's tick, peak RSS, and a tick of the landing sensor over every retailer's folder, one holding 10,000 files.

Each size runs in its own process against a temporary copy of `defs/` holding the shipped
retailers plus N copies of a daily file retailer (`marche_fr`) under new names, ids and keys;
the repository's `defs/` is never written. Prints figures and ratios to the smallest size; it
asserts nothing about time (the machine may be shared).

    uv run python benchmarks/scale.py                  # 8 (shipped), 58 and 208 retailers
    uv run python benchmarks/scale.py --extra 0 50 --skip-check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFS = PROJECT_ROOT / "src" / "pos_lakehouse" / "defs"
TEMPLATE = "marche_fr"
LANDING_FILES = 10_000


def make_defs_copy(target: Path, extra: int) -> Path:
    """`defs/` copied to `target` with `extra` copies of the template retailer; returns the copy."""
    import yaml

    shutil.copytree(DEFS, target, ignore=shutil.ignore_patterns("__pycache__"))
    doc = yaml.safe_load((DEFS / "retailers" / TEMPLATE / "defs.yaml").read_text())
    keys = []
    for i in range(1, extra + 1):
        name = f"scale_r{i:03d}"
        attrs = json.loads(json.dumps(doc["attributes"]))
        attrs.update(name=name, retailer_id=900_000 + i, secure_group_key=990_000 + i, description=f"Copy {i} of {TEMPLATE}.")
        for f in attrs["delivery"]["files"]:
            f["match"] = f["match"].replace(TEMPLATE, name)
        keys.append(attrs["secure_group_key"])
        folder = target / "retailers" / name
        folder.mkdir()
        (folder / "defs.yaml").write_text(yaml.safe_dump({**doc, "attributes": attrs}, sort_keys=False))
    if keys:  # give the copies a reader, so the access policy does not warn about each of them
        policy_path = target / "serving" / "access_policy.yaml"
        policy = yaml.safe_load(policy_path.read_text())
        policy["groups"]["category_managers_eu"]["secure_group_keys"] += keys
        policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return target


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(defs_dir: Path, data_root: Path, skip_check: bool) -> dict:
    """One size, in this process: returns the figures (seconds, bytes, MiB)."""
    os.environ["POS_LAKEHOUSE_DATA"] = str(data_root)
    os.environ["POS_LAKEHOUSE_DEFS_DIR"] = str(defs_dir)
    import dagster as dg
    from dagster._daemon.asset_daemon import asset_daemon_cursor_to_instigator_serialized_cursor

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    out: dict = {"retailers": len(list((defs_dir / "retailers").glob("*/defs.yaml")))}

    from pos_lakehouse.definitions import build_definitions

    t0, c0 = time.perf_counter(), time.process_time()
    defs = build_definitions(defs_dir)
    graph = defs.resolve_asset_graph()
    out["load_s"] = time.perf_counter() - t0
    out["load_cpu_s"] = time.process_time() - c0  # this process's CPU: less sensitive than wall time to a shared machine
    out["assets"] = len(list(graph.get_all_asset_keys()))
    out["checks"] = len(list(graph.asset_check_keys))
    out["rss_after_load_mib"] = peak_rss_mib()

    if not skip_check:
        env = {**os.environ, "POS_LAKEHOUSE_DEFS_DIR": str(defs_dir)}
        t0, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        dg_cli = Path(sys.executable).with_name("dg")  # the environment's own `dg`, also when not on PATH
        proc = subprocess.run(
            [str(dg_cli) if dg_cli.exists() else "dg", "check", "defs"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
        )
        out["check_s"] = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["check_cpu_s"] = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        if proc.returncode != 0:
            out["check_error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]

    with dg.DagsterInstance.ephemeral() as instance:
        cursor = None

        def tick() -> tuple[float, int]:
            nonlocal cursor
            t = time.perf_counter()
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            return time.perf_counter() - t, result.total_requested

        out["tick_first_s"], _ = tick()  # the sensor's first tick builds the cursor from nothing
        out["tick_idle_s"], out["tick_idle_requested"] = tick()
        # One retailer's bronze lands (as its ingest run would record it): silver should follow.
        changed = "scale_r001" if (defs_dir / "retailers" / "scale_r001").exists() else TEMPLATE
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            if node.tags.get("layer") == "bronze" and node.tags.get("retailer") == changed:
                [partition] = node.partitions_def.get_partition_keys() if node.partitions_def else [None]
                instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))
        out["tick_changed_s"], out["tick_changed_requested"] = tick()
        out["tick_idle2_s"], _ = tick()
        # The sensor that replaced per-silver automation for reference data: one event-log query a tick.
        reference_sensor = defs.resolve_sensor_def("reference_refresh_sensor")
        t = time.perf_counter()
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
            reference_sensor(context)
        out["reference_sensor_s"] = time.perf_counter() - t
        # What the daemon stores between ticks (the same serialization the automation sensor uses).
        out["cursor_bytes"] = len(asset_daemon_cursor_to_instigator_serialized_cursor(cursor).encode()) if cursor else 0
        out["rss_after_tick_mib"] = peak_rss_mib()

    # The landing sensor (one for every file retailer) with 10,000 files in the template retailer's
    # folder and every other folder listed too (listing + cursor, no runs).
    landing = data_root / "landing" / TEMPLATE
    landing.mkdir(parents=True, exist_ok=True)
    for i in range(LANDING_FILES):
        (landing / f"{TEMPLATE}_pos_{i:05d}.parquet").write_bytes(b"x")
    sensor = defs.resolve_sensor_def("retailer_landing_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        sensor_cursor = None
        for label in ("sensor_first", "sensor_idle"):
            with dg.build_sensor_context(
                instance=instance, cursor=sensor_cursor, resources=defs.resources, sensor_name=sensor.name
            ) as context:
                t0 = time.perf_counter()
                result = sensor(context)
            out[f"{label}_s"] = time.perf_counter() - t0
            out[f"{label}_requests"] = len(result.run_requests or [])
            sensor_cursor = result.cursor
        out["sensor_cursor_bytes"] = len(sensor_cursor.encode())
        # Half the files are taken away (archived by the retailer's tooling): the cursor shrinks with them.
        for i in range(0, LANDING_FILES, 2):
            (landing / f"{TEMPLATE}_pos_{i:05d}.parquet").unlink()
        with dg.build_sensor_context(instance=instance, cursor=sensor_cursor, resources=defs.resources, sensor_name=sensor.name) as context:
            out["sensor_cursor_after_delete_bytes"] = len((sensor(context).cursor or "").encode())
    return out


def report(rows: list[dict]) -> None:
    base = rows[0]
    cols = [
        ("retailers", "retailers", "{:d}"),
        ("assets", "assets", "{:d}"),
        ("checks", "checks", "{:d}"),
        ("load_s", "defs load s", "{:.2f}"),
        ("load_cpu_s", "defs load CPU s", "{:.2f}"),
        ("check_s", "dg check defs s", "{:.2f}"),
        ("check_cpu_s", "dg check defs CPU s", "{:.2f}"),
        ("tick_first_s", "1st tick s", "{:.2f}"),
        ("tick_idle_s", "idle tick s", "{:.2f}"),
        ("tick_changed_s", "1 changed tick s", "{:.2f}"),
        ("tick_changed_requested", "requested", "{:d}"),
        ("tick_idle2_s", "idle tick after s", "{:.2f}"),
        ("reference_sensor_s", "reference sensor s", "{:.3f}"),
        ("cursor_bytes", "auto cursor KB", None),
        ("rss_after_load_mib", "RSS load MiB", "{:.0f}"),
        ("rss_after_tick_mib", "RSS tick MiB", "{:.0f}"),
        ("sensor_first_s", "sensor 10k 1st s", "{:.3f}"),
        ("sensor_idle_s", "sensor 10k idle s", "{:.3f}"),
        ("sensor_cursor_bytes", "sensor cursor KB", None),
        ("sensor_cursor_after_delete_bytes", "after 5k deleted KB", None),
    ]
    print()
    for key, label, fmt in cols:
        cells = []
        for r in rows:
            v = r.get(key)
            if v is None:
                cells.append("-")
            elif fmt is None:
                cells.append(f"{v / 1000:.1f}")
            else:
                cells.append(fmt.format(v))
        print(f"{label:>22}: " + "  ".join(f"{c:>10}" for c in cells))
    print()
    for r in rows[1:]:
        ratios = []
        for key in ("load_s", "check_s", "tick_idle_s", "tick_changed_s", "cursor_bytes", "rss_after_tick_mib", "sensor_idle_s"):
            if r.get(key) is not None and base.get(key):
                ratios.append(f"{key} x{r[key] / base[key]:.2f}")
        print(f"{r['retailers']} vs {base['retailers']} retailers ({r['retailers'] / base['retailers']:.1f}x): " + ", ".join(ratios))
    for r in rows:
        if r.get("check_error"):
            print(f"dg check defs failed at {r['retailers']} retailers: {r['check_error']}")
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} at the end"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra", type=int, nargs="+", default=[0, 50, 200], help="retailer copies added per size")
    parser.add_argument("--skip-check", action="store_true", help="skip `dg check defs` (slow)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()

    if args.one is not None:
        work = Path(tempfile.mkdtemp(prefix="pos_scale_"))
        try:
            defs_dir = make_defs_copy(work / "defs", args.one)
            (work / "data").mkdir()
            figures = measure(defs_dir, work / "data", args.skip_check)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print("SCALE " + json.dumps(figures))
        return 0

    rows = []
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for extra in args.extra:
        cmd = [sys.executable, __file__, "--one", str(extra), *(["--skip-check"] if args.skip_check else [])]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or tempfile.mkdtemp()}
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SCALE ")), None)
        if proc.returncode != 0 or line is None:
            print(f"+{extra} retailers failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        row = json.loads(line[len("SCALE ") :])
        rows.append(row)
        print(
            f"{row['retailers']} retailers: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
            flush=True,
        )
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
