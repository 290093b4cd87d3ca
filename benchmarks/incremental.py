"""Deliver daily files one at a time and time each landing -> gold run.

Cost should follow the new data, not the history: prints each delivery's time and the ratio of
the last delivery's time to the first's (target <= 1.5 at 60 days). Uses the same headless driver
as `pos-lakehouse demo`: the landing sensor, the ingest job and declarative automation.
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
    times = []
    with dg.instance_for_test() as instance:
        headless = Headless(defs, instance, quiet=True)
        headless.tick_automation()  # the automation sensor's first tick, as in the daemon
        for i, f in enumerate(files, 1):
            (landing / f.name).write_bytes(f.read_bytes())
            t0 = time.perf_counter()
            runs = headless.settle()
            elapsed = time.perf_counter() - t0
            if not all(r.success for r in runs):
                print(f"delivery {i} failed: {[r.error for r in runs if not r.success]}", file=sys.stderr)
                return 1
            times.append(elapsed)
            print(f"delivery {i:3d} {f.name}: {elapsed:6.2f}s ({len(runs)} runs)", flush=True)
    first = statistics.mean(times[:3])
    last = statistics.mean(times[-3:])
    print(f"\nfirst 3 deliveries: {first:.2f}s mean; last 3: {last:.2f}s mean")
    print(f"ratio last/first: {last / first:.2f} (target <= 1.5 at 60 days)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
