"""`pos-lakehouse uc-sql` and `catalog`: what gold holds, and its access policy as Databricks SQL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pos_lakehouse.cli.common import UsageError, existing_data_root, first_line, specs


def cmd_uc_sql(args: argparse.Namespace) -> int:
    """Print the access policy rendered as Databricks SQL (Unity Catalog dynamic views and grants)."""
    from pos_lakehouse.serving.policy import PolicyError, load_policy
    from pos_lakehouse.serving.unity_catalog import render

    try:
        policy = load_policy(args.policy, specs())
    except (PolicyError, OSError, ValueError) as exc:
        raise UsageError(first_line(str(exc))) from exc
    print(render(policy, catalog=args.catalog, gold_schema=args.gold_schema, view_schema=args.view_schema), end="")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    """List every gold table: description, columns, partition column, rows per retailer, last update."""
    from pos_lakehouse.serving.catalog import gold_catalog, to_markdown
    from pos_lakehouse.storage.lake import Lake

    root = existing_data_root()
    names = {s.data_provider_code: s.name for s in specs()}
    text = to_markdown(gold_catalog(Lake(root=str(root))), names)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
        print(f"wrote {args.markdown}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_calendar(args: argparse.Namespace) -> int:
    """Print the delivery calendar of the last weeks: days x retailers (or one retailer's stores); delivered, late, missing."""
    from pos_lakehouse.quality.calendar_report import calendar_report
    from pos_lakehouse.storage.lake import Lake

    try:
        print(calendar_report(Lake(root=str(existing_data_root())), specs(), args.retailer, args.weeks))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0
