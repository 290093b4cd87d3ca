"""`pos-lakehouse dev`: the Dagster UI (`dg dev`) with this project's DAGSTER_HOME, stopped cleanly with everything it started."""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pos_lakehouse.cli.common import dagster_home
from pos_lakehouse.settings import checkout_root, current_settings

# What the demo's generators and simulators need beyond the product (the `demo` extra).
DEMO_PACKAGES = ("fastapi", "uvicorn", "numpy", "xlsxwriter")


def cmd_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI (`dg dev`) with this project's DAGSTER_HOME; every `dg dev` option is passed on."""
    dagster_home()
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
    from pos_lakehouse.cli.demo import demo_sources

    with demo_sources(Path(root)):
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
