"""`pos-lakehouse`: run what is in landing, run the demo, open the UI, reconcile gold, and query it.

One module per command group (`run`, `demo`, `dev`, `query`, `catalog`); this module only registers
them. Command modules import what they need inside their functions, so `--help` stays quick and a
product install never loads the demo package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading

from pos_lakehouse.cli.catalog import cmd_calendar, cmd_catalog, cmd_uc_sql
from pos_lakehouse.cli.common import UsageError, quiet_deliberate_warnings, tree
from pos_lakehouse.cli.demo import cmd_demo, cmd_reconcile
from pos_lakehouse.cli.dev import cmd_dev
from pos_lakehouse.cli.query import cmd_query
from pos_lakehouse.cli.run import cmd_replay, cmd_run

DESCRIPTION = "run what is in landing, run the demo, open the UI, reconcile gold, and query it."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pos-lakehouse", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("--retailer", action="append", help="only this retailer (repeatable)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even when a run fails")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--reset", action="store_true", help="delete the data root's contents first")
    demo.add_argument("--retailer", action="append", help="only this demo retailer (repeatable)")
    demo.add_argument("--allow-failures", action="store_true", help="exit 0 even when a run fails")
    demo.set_defaults(func=cmd_demo)
    rpl = sub.add_parser("replay", help=cmd_replay.__doc__)
    rpl.add_argument("--retailer", required=True, help="the retailer whose silver and gold are derived again")
    one = rpl.add_mutually_exclusive_group()
    one.add_argument("--file", help="one delivered file (landing name): from it on, or read again if it was rejected")
    one.add_argument("--since", metavar="YYYY-MM-DD", help="deliveries ingested from this day on")
    rpl.add_argument("--allow-failures", action="store_true", help="exit 0 even when the run fails")
    rpl.set_defaults(func=cmd_replay)
    dev = sub.add_parser("dev", help=cmd_dev.__doc__, description=f"{cmd_dev.__doc__} E.g. `pos-lakehouse dev --port 3111 --host 0.0.0.0`.")
    dev.set_defaults(func=cmd_dev, dg_args=[])
    rec = sub.add_parser("reconcile", help=cmd_reconcile.__doc__)
    rec.set_defaults(func=cmd_reconcile)
    qry = sub.add_parser("query", help=cmd_query.__doc__)
    qry.add_argument("--as", dest="as_user", required=True, metavar="USER", help="a user of the access policy")
    qry.add_argument("sql", help="one SELECT over the gold views (prod_dim, site_dim, store_day_fact, ...)")
    qry.add_argument("--policy", help="access policy YAML (default: defs/serving/access_policy.yaml)")
    qry.add_argument("--max-rows", type=int, default=50, help="rows to print (0: all)")
    qry.add_argument("--format", choices=("table", "csv", "json"), default="table", help="table (fits the terminal), csv or json")
    qry.set_defaults(func=cmd_query)
    ucs = sub.add_parser("uc-sql", help=cmd_uc_sql.__doc__)
    ucs.add_argument("--policy", help="access policy YAML (default: defs/serving/access_policy.yaml)")
    ucs.add_argument("--catalog", default="pos", help="Unity Catalog catalog")
    ucs.add_argument("--gold-schema", default="gold", help="schema holding the gold tables")
    ucs.add_argument("--view-schema", default="gold_secure", help="schema for the secure views")
    ucs.set_defaults(func=cmd_uc_sql)
    cat = sub.add_parser("catalog", help=cmd_catalog.__doc__)
    cat.add_argument("--markdown", metavar="PATH", help="write the catalog as Markdown to PATH instead of printing it")
    cat.set_defaults(func=cmd_catalog)
    cal = sub.add_parser("calendar", help=cmd_calendar.__doc__)
    cal.add_argument("--retailer", help="one retailer's stores instead of every retailer")
    cal.add_argument("--weeks", type=int, default=4, help="weeks back from yesterday (default 4)")
    cal.set_defaults(func=cmd_calendar)
    from pos_lakehouse.onboarding.command import add_parser as add_onboard

    add_onboard(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "dev":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.dg_args = extra  # `dev` hands every other option to `dg dev` (--port, --host, ...)
    quiet_deliberate_warnings()
    # One command, one load of the code location: its resources read the environment as it is now
    # (a second `main` in the same process, e.g. with another data root, must not reuse the first's).
    tree.cache_clear()
    from pos_lakehouse.runner.process import DaemonFailed
    from pos_lakehouse.runner.processes import Interrupted, stop_on_signals

    try:
        # Ctrl-C or SIGTERM: what was started is stopped, one line says so, exit 130 / 143.
        with stop_on_signals() if threading.current_thread() is threading.main_thread() else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except Interrupted as stop:
        print(f"stopped by {stop}" + (f": {stop.note}" if stop.note else ""), file=sys.stderr)
        return stop.exit_code
    except DaemonFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly, and keep Python from complaining at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        # A defs YAML that cannot load: its mistakes, one line each (file, line, field, allowed values).
        from pos_lakehouse.components.yaml_errors import load_error_lines

        lines = load_error_lines(exc)
        if lines is None:
            raise
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
