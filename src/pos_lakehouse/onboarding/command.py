"""`pos-lakehouse onboard FOLDER --name NAME [--out PATH]`: profile sample files, write a proposed retailer YAML."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `onboard` subcommand and its options."""
    p = sub.add_parser("onboard", help=run.__doc__, description=run.__doc__)
    p.add_argument("folder", type=Path, help="folder of sample files as the retailer delivers them")
    p.add_argument("--name", required=True, help="snake_case retailer name (its landing folder, tables and asset group)")
    p.add_argument("--out", help="where to write the YAML (default: defs/retailers/<name>/defs.yaml; `-`: print it)")
    p.add_argument("--retailer-id", type=int, help="retailer id (default: the next free one)")
    p.add_argument("--secure-group-key", type=int, help="row-level security key (default: the next free one)")
    p.add_argument("--country", help="ISO country code (default: guessed, marked for review)")
    p.add_argument("--currency", help="ISO currency code (default: guessed, marked for review)")
    p.add_argument("--force", action="store_true", help="overwrite an existing YAML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Propose a retailer YAML from a folder of sample files (format, columns, grain, cadence); `# REVIEW:` marks guesses."""
    from pos_lakehouse.components.retailer_scaffold import _free_ids
    from pos_lakehouse.onboarding.profile import OnboardingError, propose
    from pos_lakehouse.onboarding.render import render
    from pos_lakehouse.retailer import RetailerSpec
    from pos_lakehouse.settings import retailers_dir

    if not re.fullmatch(r"[a-z][a-z0-9_]*", args.name):
        print(f"error: --name {args.name!r} must be snake_case (a-z, 0-9, _)", file=sys.stderr)
        return 2
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder of sample files", file=sys.stderr)
        return 2
    out = None if args.out == "-" else Path(args.out) if args.out else retailers_dir() / args.name / "defs.yaml"
    if out is not None and out.exists() and not args.force:
        print(f"error: {out} exists; --force overwrites it, --out PATH writes elsewhere", file=sys.stderr)
        return 2
    try:
        proposal = propose(
            args.folder,
            args.name,
            retailer_id=args.retailer_id,
            secure_group_key=args.secure_group_key,
            country=args.country,
            currency=args.currency,
            taken_ids=_free_ids(retailers_dir()),
        )
    except OnboardingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = render(proposal)
    RetailerSpec.model_validate(yaml.safe_load(text)["attributes"])  # what is written loads
    if out is None:
        print(text, end="")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        reviews = text.count("# REVIEW:")
        print(
            f"wrote {out}: {len(proposal.kinds)} file kind(s), {reviews} line(s) marked # REVIEW:; then `uv run dg check defs`",
            file=sys.stderr,
        )
    return 0
