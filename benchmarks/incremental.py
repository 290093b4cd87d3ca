"""Deliver daily files one at a time and time each landing -> gold run.

Cost should follow the new data, not the history: prints each delivery's time and the ratio of
the last delivery's time to the first's (target <= 1.5 at 60 days). Uses the in-process harness
(`demo/headless.py`: the code location's sensors, jobs and automation, runs executed in process, so
the figures are the work and not a run worker's start-up). Two figures per delivery:

- landing -> gold: the landing sensor's tick and the delivery's own run, which carries the file
  through bronze and silver to the retailer's gold partitions (what an analyst waits for);
- settled: that plus what follows it until nothing more is requested -- the serving views'
  automation tick and run, the reference-refresh and catch-up sensors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--stores", type=int, default=30)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pos_incremental_"))
    os.environ["POS_LAKEHOUSE_DATA"] = str(root)
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.generator import write_marche_fr
    from pos_lakehouse.demo.headless import Headless

    staging = root / "staging"
    files = write_marche_fr(staging, root / "expected", days=args.days, n_products=args.products, n_stores=args.stores)
    landing = root / "landing" / "marche_fr"
    landing.mkdir(parents=True)
    defs = build_definitions()
    to_gold, settled = [], []
    with dg.instance_for_test() as instance:
        headless = Headless(defs, instance, quiet=True)
        headless.tick_automation()  # the automation sensor's first tick, as in the daemon
        headless.recover()
        for i, f in enumerate(files, 1):
            (landing / f.name).write_bytes(f.read_bytes())
            t0 = time.perf_counter()
            runs = headless.tick_landing()
            gold_at = time.perf_counter() - t0
            runs += headless.settle()
            elapsed = time.perf_counter() - t0
            if not all(r.success for r in runs):
                print(f"delivery {i} failed: {[r.error for r in runs if not r.success]}", file=sys.stderr)
                return 1
            to_gold.append(gold_at)
            settled.append(elapsed)
            print(f"delivery {i:3d} {f.name}: landing -> gold {gold_at:5.2f}s, settled {elapsed:5.2f}s ({len(runs)} runs)", flush=True)
    for label, times in (("landing -> gold", to_gold), ("settled", settled)):
        first, last = statistics.mean(times[:3]), statistics.mean(times[-3:])
        print(f"\n{label}: first 3 deliveries {first:.2f}s mean; last 3 {last:.2f}s mean; all {statistics.mean(times):.2f}s mean")
        print(f"{label}: ratio last/first {last / first:.2f} (target <= 1.5 at 60 days)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
