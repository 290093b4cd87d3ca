"""The proposal as a commented retailer YAML (the schema of `defs/retailers/<name>/defs.yaml`).

Every value is written as a JSON scalar (valid YAML, quoting whatever needs it); every guess
the profiler is unsure of carries a `# REVIEW:` comment saying why.
"""

from __future__ import annotations

import json

import yaml

from pos_lakehouse.onboarding.profile import KindProfile, Proposal
from pos_lakehouse.retailer import FileFormat

_DEFAULT_FORMAT = FileFormat()


def _s(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    """A column name as a YAML key: bare when YAML reads it back as the same string, else quoted."""
    try:
        if yaml.safe_load(f"{name}: x") == {name: "x"}:
            return name
    except yaml.YAMLError:
        pass
    return _s(name)


def _review(note: str | None) -> str:
    return f"   # REVIEW: {note}" if note else ""


def _format(fmt: FileFormat) -> str:
    """The format block with only what differs from the defaults (type always)."""
    data = fmt.model_dump()
    parts = [f"type: {fmt.type}"]
    for key in ("separator", "encoding", "decimal_comma", "date_formats", "record_path", "sheet_name", "compression"):
        if key == "type" or data[key] == getattr(_DEFAULT_FORMAT, key):
            continue
        if key in ("separator", "encoding") and fmt.type not in ("csv", "json", "jsonl"):
            continue
        parts.append(f"{key}: {_s(data[key])}")
    return "{" + ", ".join(parts) + "}"


def _kind_lines(kind: KindProfile) -> list[str]:
    lines = [
        f"      - name: {kind.name}",
        f"        match: {_s(kind.glob)}" + f"   # {len(kind.files)} sample file(s), e.g. {kind.files[0].name}",
    ]
    lines.append(f"        holds: [{', '.join(kind.holds)}]")
    lines.append(f"        format: {_format(kind.fmt)}")
    if kind.observed_on:
        lines.append(f"        observed_on: {{pattern: '{kind.observed_on[0]}', format: {_s(kind.observed_on[1])}}}")
    if kind.incremental:
        lines.append("        incremental: true")
    if kind.replaces != "site_days":
        lines.append(f"        replaces: {kind.replaces}")
    if "store_week_fact" in kind.holds and kind.grain:
        lines.append(f"        week_date: {kind.grain.week_date}")
        lines.append("        misaligned_weeks: quarantine   # or `align`: move an off-boundary date to the end of its week")
    lines += [f"        # REVIEW: {n}" if _doubt(n) else f"        # {n}" for n in kind.notes]
    return lines


def _doubt(note: str) -> bool:
    """Notes that ask for a decision (others only explain what was seen)."""
    return not note.startswith(("every date is a", "a file covers 7", "one file per store", "no date column", "each file ends"))


def _column_lines(kind: KindProfile) -> list[str]:
    lines = [f"    {kind.name}:"]
    for source, target in kind.mapping.columns.items():
        lines.append(f"      {_key(source)}: {target}{_review(kind.mapping.notes.get(source))}")
    if kind.mapping.unmapped:
        lines.append(f"      # not mapped (kept in bronze; dimensions carry them in extra_attributes): {', '.join(kind.mapping.unmapped)}")
    return lines


def render(p: Proposal) -> str:
    """The YAML text of the proposal."""
    n = p.notes
    lines = [
        f"# Retailer `{p.name}`, proposed by `pos-lakehouse onboard` from {sum(len(k.files) for k in p.kinds)} sample file(s).",
        "# Check each line marked REVIEW, then `uv run dg check defs`; business settings (id, key, antitrust) are yours to set.",
        "type: pos_lakehouse.components.RetailerPipeline",
        "",
        "attributes:",
        f"  retailer_id: {p.retailer_id}   # the next free id; the data provider code becomes cds_{p.retailer_id}",
        f"  name: {p.name}",
        f"  description: {_s('Proposed from sample files: ' + '; '.join(k.glob for k in p.kinds) + '.')}",
        f"  country: {p.country}{_review(n.get('country'))}",
        f"  currency: {p.currency}{_review(n.get('currency'))}",
        f"  secure_group_key: {p.secure_group_key}   # the next free key; give a group of defs/serving/access_policy.yaml read access",
        "  engine: polars",
        "  antitrust: none   # REVIEW: none | value | volume -- competition sensitivity is not in the files",
        f"  cadence: {p.cadence}{_review(n.get('cadence'))}",
        f"  week_ends_on: {p.week_ends_on}",
        "  delivery:",
        "    channel: landing",
        "    files:",
    ]
    for kind in p.kinds:
        lines += _kind_lines(kind)
    lines.append("  columns:")
    for kind in p.kinds:
        lines += _column_lines(kind)
    if p.scd2:
        lines.append("  scd2:   # attributes whose change opens a new dimension version")
        for table, attrs in p.scd2.items():
            lines.append(f"    {table}: [{', '.join(attrs)}]")
    return "\n".join(lines) + "\n"
