"""Replay: silver and gold derived again from bronze with the retailer's current YAML.

Bronze keeps every delivery as delivered (raw strings), so a corrected mapping needs no new
delivery: a replay sets back the bookmark each silver table keeps of the bronze version it has
consumed, and the silver step reads those deliveries again -- in their delivery order, each
restating its store-days, exactly as if they had just arrived -- and publishes gold from there.
Files rejected under an earlier YAML are read from landing again in the same run.

What a replay does is fixed when it is planned (`ReplayPlan`: bronze versions, files): running
the same plan twice gives the same tables, and the CLI launches one plan once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import polars as pl

from pos_lakehouse.layers.bronze import REJECTED_FILES_TABLE, read_as
from pos_lakehouse.layers.silver.plan import bronze_bookmark
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake

# `replay_from` value: read every bronze row again (no version consumed).
FROM_THE_START = -1


class ReplayError(ValueError):
    """A replay that cannot be planned (unknown file, nothing to replay): said in one line."""


@dataclass
class ReplayPlan:
    """What one replay does: per bronze table the version silver reads again after, and the
    landing files read into bronze again (rejected under an earlier YAML, or named)."""

    replay_from: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    read_again: bool = False
    notes: list[str] = field(default_factory=list)


def _version_before(lake: Lake, uri: str, instant: datetime) -> int | None:
    """The newest version of a table committed before `instant` (FROM_THE_START if none); None: no table.

    A delivery stamped `_ingested_at` was committed after that instant, so silver reading again
    after this version reads it (and what came after it) again.
    """
    dt = lake.snapshot(uri)
    if dt is None:
        return None
    cutoff = instant.timestamp() * 1000
    before = [c["version"] for c in dt.history() if c.get("timestamp", 0) < cutoff]
    return max(before) if before else FROM_THE_START


def _ingested_at(lake: Lake, uri: str, file: str) -> datetime | None:
    dt = lake.snapshot(uri)
    if dt is None:
        return None
    found = pl.scan_delta(dt).filter(pl.col("_source_file") == file).select(pl.col("_ingested_at").min()).collect().item()
    return found


def rejected_files(lake: Lake, spec: RetailerSpec) -> pl.DataFrame:
    """The retailer's rejected files: file, bronze table, reason, when, and how the YAML read them (`read_as`)."""
    dt = lake.snapshot(lake.quarantine(spec.name, REJECTED_FILES_TABLE))
    schema = {
        "file": pl.String,
        "bronze_table": pl.String,
        "reason": pl.String,
        "rejected_at": pl.Datetime("us", "UTC"),
        "read_as": pl.String,
    }
    if dt is None:
        return pl.DataFrame(schema=schema)
    scan = pl.scan_delta(dt)
    if "read_as" not in scan.collect_schema().names():
        scan = scan.with_columns(pl.lit(None, pl.String).alias("read_as"))
    return scan.select(list(schema)).collect()


def rejected_under_another_yaml(lake: Lake, spec: RetailerSpec, since: datetime | None = None) -> list[str]:
    """Files rejected under a YAML that read their kind of file differently from the current one
    (and not ingested since): a replay reads them again."""
    rows = rejected_files(lake, spec)
    if since is not None:
        rows = rows.filter(pl.col("rejected_at") >= since)
    out = []
    for file, _table, group in (
        (f, t, g) for (f, t), g in rows.group_by("file", "bronze_table", maintain_order=True) if f is not None and t is not None
    ):
        file_spec = spec.file_spec_for(file)
        if file_spec is None or file_spec.name != _table:
            continue
        current = read_as(spec, file_spec)
        if current not in set(group["read_as"].to_list()) and not _in_bronze(lake, spec, file_spec.name, file):
            out.append(file)
    return sorted(out)


def _in_bronze(lake: Lake, spec: RetailerSpec, table: str, file: str) -> bool:
    return _ingested_at(lake, lake.bronze(spec.name, table), file) is not None


def plan_replay(lake: Lake, spec: RetailerSpec, file: str | None = None, since: date | None = None) -> ReplayPlan:
    """What `pos-lakehouse replay` does for a retailer: one file, everything since a day, or everything."""
    plan = ReplayPlan()
    if file is not None:
        file_spec = spec.file_spec_for(file)
        if file_spec is None:
            raise ReplayError(f"{file!r} matches no delivery.files pattern of {spec.name}")
        uri = lake.bronze(spec.name, file_spec.name)
        ingested = _ingested_at(lake, uri, file)
        if ingested is not None:
            plan.replay_from[file_spec.name] = _version_before(lake, uri, ingested)  # type: ignore[assignment]
            plan.notes.append(f"{file} is in bronze.{file_spec.name}: silver reads it (and the deliveries after it) again")
        elif file in set(rejected_files(lake, spec)["file"].to_list()):
            plan.files, plan.read_again = [file], True
            plan.notes.append(f"{file} was rejected: it is read from landing again with the current YAML")
        else:
            raise ReplayError(
                f"{file!r} is neither in bronze nor among the rejected files of {spec.name}; `pos-lakehouse run` takes new files"
            )
        return plan
    instant = datetime(since.year, since.month, since.day, tzinfo=UTC) if since is not None else None
    for file_spec in spec.delivery.files:
        uri = lake.bronze(spec.name, file_spec.name)
        version = _version_before(lake, uri, instant) if instant is not None else (FROM_THE_START if lake.exists(uri) else None)
        if version is not None:
            plan.replay_from[file_spec.name] = version
    plan.files = rejected_under_another_yaml(lake, spec, instant)
    what = f"deliveries ingested since {since}" if since else "every delivery in bronze"
    plan.notes.append(f"silver reads {what} again ({', '.join(f'bronze.{t}' for t in plan.replay_from) or 'none'})")
    if plan.files:
        plan.notes.append(f"{len(plan.files)} file(s) rejected under an earlier YAML are read again: {', '.join(plan.files)}")
    if not plan.replay_from and not plan.files:
        raise ReplayError(f"nothing to replay for {spec.name}: no bronze table and no file rejected under an earlier YAML")
    return plan


def rewind_silver(lake: Lake, spec: RetailerSpec, replay_from: dict[str, int], tables: Sequence[str] | None = None) -> list[str]:
    """Set back each silver table's bookmark of the replayed bronze tables (never forward); what was done, one line each."""
    done = []
    for name, version in replay_from.items():
        file_spec = next((f for f in spec.delivery.files if f.name == name), None)
        if file_spec is None:
            continue
        mark = bronze_bookmark(file_spec)
        for table in file_spec.holds:
            if tables is not None and table not in tables:
                continue
            uri = lake.silver(spec.name, table)
            consumed = lake.bookmarks(uri).get(mark)
            if not lake.exists(uri) or consumed is None or int(consumed) <= version:
                continue
            lake.commit_bookmarks(uri, {mark: str(version)})
            done.append(f"silver.{table}: reads bronze.{name} again after version {version} (had consumed {consumed})")
    return done
