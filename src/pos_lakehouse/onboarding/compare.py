"""How a proposed retailer's mapping differs from another YAML's (e.g. one written by hand).

Compared are what the files decide -- file kinds (by glob), the tables each feeds, formats,
snapshot and week settings, the column mapping (names as the loader matches them: case and
whitespace ignored), cadence, week end and SCD2 attributes -- not the business settings (id,
security key, antitrust, engine, channel), which no file can tell.
"""

from __future__ import annotations

from pos_lakehouse.retailer import FileFormat, FileSpec, RetailerSpec


def _norm(name: str) -> str:
    return " ".join(name.split()).lower()


def _format(spec: FileSpec) -> dict:
    fmt: FileFormat = spec.format
    data = fmt.model_dump()
    if data["compression"] == "infer":
        match = (spec.match or "").lower()
        data["compression"] = "gzip" if match.endswith((".gz", ".gzip")) else "zip" if match.endswith(".zip") else "none"
    if fmt.type in ("parquet", "excel"):
        for key in ("separator", "encoding", "quote_char", "decimal_comma"):
            data.pop(key)
    if fmt.type == "excel" or fmt.type == "parquet":
        data.pop("date_formats") if not spec.format.date_formats or spec.format.date_formats == ["%Y-%m-%d"] else None
    return data


def mapping_differences(proposed: RetailerSpec, reference: RetailerSpec) -> list[str]:
    """One line per difference; empty when the proposal maps the files as `reference` does."""
    diffs = []
    for field in ("cadence", "week_ends_on"):
        if getattr(proposed, field) != getattr(reference, field):
            diffs.append(f"{field}: proposed {getattr(proposed, field)}, reference {getattr(reference, field)}")
    by_glob = {(f.match or "").lower(): f for f in proposed.delivery.files}
    for ref in reference.delivery.files:
        mine = by_glob.pop((ref.match or "").lower(), None)
        if mine is None:
            diffs.append(f"files {ref.match}: not proposed")
            continue
        where = f"files {ref.match}"
        if set(mine.holds) != set(ref.holds):
            diffs.append(f"{where}: holds {sorted(mine.holds)}, reference {sorted(ref.holds)}")
        mf, rf = _format(mine), _format(ref)
        for key in sorted(set(mf) | set(rf)):
            if mf.get(key) != rf.get(key):
                diffs.append(f"{where}: format.{key} {mf.get(key)!r}, reference {rf.get(key)!r}")
        for key in ("observed_on", "incremental", "replaces", "week_date", "misaligned_weeks"):
            if getattr(mine, key) != getattr(ref, key):
                diffs.append(f"{where}: {key} {getattr(mine, key)!r}, reference {getattr(ref, key)!r}")
        mc = {_norm(k): v for k, v in proposed.columns.get(mine.name, {}).items()}
        rc = {_norm(k): v for k, v in reference.columns.get(ref.name, {}).items()}
        for column in sorted(set(mc) | set(rc)):
            if mc.get(column) != rc.get(column):
                diffs.append(f"{where}: column {column!r} -> {mc.get(column)}, reference {rc.get(column)}")
    diffs += [f"files {glob}: proposed, not in the reference" for glob in by_glob]
    for table in ("store_day_fact", "store_week_fact"):
        mine_order = [(f.match or "").lower() for f in proposed.files_holding(table)]
        ref_order = [(f.match or "").lower() for f in reference.files_holding(table)]
        if len(ref_order) > 1 and mine_order != ref_order:
            diffs.append(f"{table}: fed by {mine_order} in this order, reference {ref_order}")
    for table in sorted(set(proposed.scd2) | set(reference.scd2)):
        mine, ref = set(proposed.scd2.get(table, [])), set(reference.scd2.get(table, []))
        if proposed.files_holding(table) and mine != ref:
            diffs.append(f"scd2.{table}: {sorted(mine)}, reference {sorted(ref)}")
    return diffs
