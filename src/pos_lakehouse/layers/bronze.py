"""Bronze: each delivered file appended once, as raw strings, with where and when it came from."""

from __future__ import annotations

import hashlib
import itertools
import json
import tempfile
from collections import deque
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from pos_lakehouse.ingest.landing import LandingZone, UnsafePathError, safe_relative
from pos_lakehouse.ingest.lineage import BronzeDeliveries, lineage_bounds, with_lineage
from pos_lakehouse.ingest.readers import DeliveryError, TextScan, hash_and_check, read_raw
from pos_lakehouse.redaction import redact
from pos_lakehouse.retailer import FileSpec, RetailerSpec
from pos_lakehouse.storage.lake import Lake, StagedFile
from pos_lakehouse.storage.object_store import put_bytes, put_file
from pos_lakehouse.transform.mapping import absent_columns_message, absent_mapped_columns, missing_required, resolve_columns

REJECTED_FILES_TABLE = "rejected_files"
# What a rejection quotes from a file (reader messages can embed whole rows) is cut to this.
MAX_DETAIL_CHARS = 1000


@dataclass
class FileOutcome:
    """What happened to one delivered file."""

    file: str
    status: (
        str  # ingested | empty (an incremental file with nothing new) | duplicate | rejected | known_rejected (same bytes rejected before)
    )
    table: str | None = None
    delivery_id: str | None = None
    rows: int = 0
    reason: str | None = None
    detail: str | None = None
    extra_columns: list[str] = field(default_factory=list)
    # Fingerprint of what the YAML said about reading this kind of file when it was rejected.
    read_as: str | None = None

    def describe(self) -> str:
        if self.status == "rejected":
            return f"{self.file}: rejected ({self.reason}): {self.detail}"
        if self.status == "empty":
            return f"{self.file}: no rows ({self.reason}); accepted as nothing new (incremental file kind)"
        if self.status == "known_rejected":
            return f"{self.file}: rejected before ({self.reason}), in quarantine; not read again"
        if self.status == "duplicate":
            return f"{self.file}: already in bronze (delivery {(self.delivery_id or '')[:12]}), skipped"
        return f"{self.file}: {self.rows} rows -> bronze.{self.table}"


# Reader outcomes that mean "the file holds no rows" (accepted for incremental file kinds).
NOTHING_NEW = ("empty_file", "header_only", "no_records")


def read_as(spec: RetailerSpec, file_spec: FileSpec) -> str:
    """Fingerprint of everything the retailer's YAML says about reading one kind of file (format,
    mapping, limits): a file rejected under one fingerprint is read again under another, so a
    corrected YAML takes a file the old one rejected -- and an unchanged one never reads it twice."""
    said = [file_spec.model_dump(mode="json"), spec.columns.get(file_spec.name, {}), spec.delivery.limits.model_dump(mode="json")]
    return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _owner(spec: RetailerSpec | str) -> str:
    """Whose quarantine: a retailer's, or another named folder's (corporate reference data: `_corporate`)."""
    return spec if isinstance(spec, str) else spec.name


def previous_rejection(lake: Lake, spec: RetailerSpec | str, delivery_id: str) -> dict | None:
    """The recorded rejection of these exact bytes (under any name), if they were rejected before."""
    uri = lake.quarantine(_owner(spec), REJECTED_FILES_TABLE)
    dt = lake.snapshot(uri)
    if dt is None:
        return None
    hit = pl.scan_delta(dt).filter(pl.col("delivery_id") == delivery_id).select("file", "reason", "rejected_at").head(1).collect()
    return hit.row(0, named=True) if hit.height else None


def _clip(text: str | None, limit: int = MAX_DETAIL_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more characters cut)"


# Staged files are committed at the latest after this many (and at the end of the call): a batch
# of deliveries costs one Delta commit, while a failure mid-way loses at most this much work.
COMMIT_EVERY_FILES = 100


@dataclass
class _Table:
    """One bronze table's share of a call: what it holds already, and the files staged for it."""

    uri: str
    description: str
    known: BronzeDeliveries
    staged: dict[str, tuple[StagedFile, FileOutcome]] = field(default_factory=dict)
    writing: set[str] = field(default_factory=set)


class _Batch:
    """The bronze tables and quarantine of one `ingest_files` call, each looked up once."""

    def __init__(self, lake: Lake, spec: RetailerSpec):
        self.lake, self.spec = lake, spec
        self.tables: dict[str, _Table] = {}
        self._rejected: dict[str, list[dict]] | None = None
        self.read_again = False

    def table(self, file_spec: FileSpec) -> _Table:
        uri = self.lake.bronze(self.spec.name, file_spec.name)
        if uri not in self.tables:
            description = f"Raw `{file_spec.name}` deliveries of {self.spec.name}, as delivered (strings)."
            self.tables[uri] = _Table(uri, description, BronzeDeliveries(self.lake, uri))
        return self.tables[uri]

    def rejected_before(self, delivery_id: str, fingerprint: str) -> dict | None:
        """The rejection of these bytes read as the YAML says now (or before fingerprints were kept), if any."""
        if self._rejected is None:
            dt = self.lake.snapshot(self.lake.quarantine(_owner(self.spec), REJECTED_FILES_TABLE))
            self._rejected = {}
            if dt is not None:
                scan = pl.scan_delta(dt)
                if "read_as" not in scan.collect_schema().names():
                    scan = scan.with_columns(pl.lit(None, pl.String).alias("read_as"))
                for row in scan.select("delivery_id", "file", "reason", "rejected_at", "read_as").collect().rows(named=True):
                    self._rejected.setdefault(row["delivery_id"], []).append(row)
        return next((r for r in self._rejected.get(delivery_id, []) if r["read_as"] in (None, fingerprint)), None)

    def reject(self, outcome: FileOutcome, path: Path | None, now: datetime) -> FileOutcome:
        record_rejection(self.lake, self.spec, outcome, path, now)
        if self._rejected is not None and outcome.delivery_id:
            row = {"file": outcome.file, "reason": outcome.reason, "rejected_at": now, "read_as": outcome.read_as}
            self._rejected.setdefault(outcome.delivery_id, []).append(row)
        return outcome

    def commit(self, table: _Table) -> None:
        """Commit the table's staged files; those another run committed first become duplicates."""
        if not table.staged:
            return
        staged, table.staged = table.staged, {}
        committed = self.lake.commit_staged(table.uri, {i: f for i, (f, _) in staged.items()}, description=table.description)
        for once_id, (_, outcome) in staged.items():
            if once_id not in committed:
                outcome.status, outcome.rows, outcome.extra_columns = "duplicate", 0, []
        table.known = BronzeDeliveries(self.lake, table.uri)


def ingest_files(
    lake: Lake, landing: LandingZone, spec: RetailerSpec, names: list[str], now: datetime | None = None, *, read_again: bool = False
) -> list[FileOutcome]:
    """Append each named landing file to its bronze table exactly once; reject unreadable ones to quarantine.

    A file's content hash is its delivery id: a file already in bronze is skipped, so a
    retry or a manual re-run never appends twice. A rejected file is copied to the
    quarantine area with a machine-readable reason; nothing else is affected. Bytes rejected
    before are not read again while the YAML reads their kind of file the same way, unless
    `read_again` (a replay that names them).

    Each file is read once to hash and check it and once to write it (Polars streams it into a
    Parquet file in the table's folder); the files of a call are committed together, one Delta
    commit per bronze table carrying each file's delivery id (`Lake.stage`, `Lake.commit_staged`).
    """
    now = now or datetime.now(UTC)
    batch = _Batch(lake, spec)
    batch.read_again = read_again
    outcomes: list[FileOutcome] = []
    ahead: deque[_Opened | FileOutcome] = deque()
    writing: deque[_Writing | FileOutcome] = deque()
    pending = iter(names)
    # Files are hashed and checked on one worker thread, ahead of the writes; two files are written
    # at once (one file's write leaves a core idle between its parsing and its footer). Whether a
    # file is new, and staging it, stay on this thread, in the order the files were named.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="pos_lakehouse_bronze_check") as checks,
        ThreadPoolExecutor(_WRITERS, thread_name_prefix="pos_lakehouse_bronze_write") as writes,
    ):
        try:
            for name in itertools.islice(pending, _WRITERS + 1):
                ahead.append(_open(batch, landing, name, now, checks))
            while ahead or writing:
                while ahead and len(writing) < _WRITERS:
                    current = ahead.popleft()
                    for name in itertools.islice(pending, 1):
                        ahead.append(_open(batch, landing, name, now, checks))
                    writing.append(current if isinstance(current, FileOutcome) else _start_write(batch, current, now, writes))
                done = writing.popleft()
                outcomes.append(done if isinstance(done, FileOutcome) else _finish_write(batch, done, now))
                table = next((t for t in batch.tables.values() if len(t.staged) >= COMMIT_EVERY_FILES), None)
                if table is not None:
                    batch.commit(table)
            for table in batch.tables.values():
                batch.commit(table)
        except BaseException:
            # The run fails: files written but not committed are removed (a retry writes them again).
            for table in batch.tables.values():
                for staged, _ in table.staged.values():
                    lake.discard(staged)
            # So are files still being written, once their writes end.
            for started in writing:
                if isinstance(started, _Writing):
                    futures.wait([started.written])
                    if not started.written.cancelled() and started.written.exception() is None:
                        lake.discard(started.written.result()[0])
                    started.opened.stack.close()
            raise
        finally:
            for opened in ahead:
                if isinstance(opened, _Opened):
                    futures.wait([opened.checked])
                    opened.stack.close()
    return _count_each_file(outcomes)


def _count_each_file(outcomes: list[FileOutcome]) -> list[FileOutcome]:
    """Byte-identical files of one call share a delivery id; each is still a file of its own. A copy
    of an empty incremental file ("nothing new") is such a file too, not a duplicate delivery."""
    empty = {o.delivery_id: o for o in outcomes if o.status == "empty"}
    for o in outcomes:
        if o.status == "duplicate" and o.delivery_id in empty:
            o.status, o.reason, o.detail = "empty", empty[o.delivery_id].reason, empty[o.delivery_id].detail
    return outcomes


_WRITERS = 2  # files written at once


@dataclass
class _Opened:
    """A landing file held locally (`stack` lets it go) whose hash and checks run on `checked`."""

    rel: str
    file_spec: FileSpec
    path: Path
    stack: ExitStack
    checked: futures.Future


@dataclass
class _Writing:
    """A new delivery being written to its bronze table's folder on `written` (staged file, extra columns)."""

    opened: _Opened
    delivery_id: str
    table: _Table
    written: futures.Future


def _open(batch: _Batch, landing: LandingZone, name: str, now: datetime, pool: ThreadPoolExecutor) -> _Opened | FileOutcome:
    spec = batch.spec
    try:
        rel = safe_relative(name)
    except UnsafePathError as exc:
        return batch.reject(FileOutcome(name, "rejected", reason="unsafe_path", detail=str(exc)), None, now)
    file_spec = spec.file_spec_for(rel)
    if file_spec is None:
        outcome = FileOutcome(rel, "rejected", reason="unmatched_file", detail=f"no delivery.files pattern of {spec.name} matches it")
        return batch.reject(outcome, None, now)
    stack = ExitStack()
    try:
        path = stack.enter_context(landing.local_copy(spec.name, rel))
    except UnsafePathError as exc:  # e.g. a symlink pointing out of the retailer's folder
        stack.close()
        outcome = FileOutcome(rel, "rejected", table=file_spec.name, reason="unsafe_path", detail=str(exc))
        return batch.reject(outcome, None, now)
    except FileNotFoundError as exc:  # moved or deleted between the sensor's listing and this run
        stack.close()
        outcome = FileOutcome(rel, "rejected", table=file_spec.name, reason="not_found", detail=str(exc))
        return batch.reject(outcome, None, now)
    # One pass over the bytes: the hash, and the line and encoding checks of a plain text file.
    checked = pool.submit(hash_and_check, path, file_spec.format, display_name=rel, limits=spec.delivery.limits)
    return _Opened(rel, file_spec, path, stack, checked)


def _start_write(batch: _Batch, opened: _Opened, now: datetime, pool: ThreadPoolExecutor) -> _Writing | FileOutcome:
    """The file's outcome if it is known already (a duplicate, rejected before, gone); else its write,
    started (which then holds the local file until `_finish_write`)."""
    started = None
    try:
        started = _known_or_start(batch, opened, now, pool)
        return started
    finally:
        if not isinstance(started, _Writing):
            opened.stack.close()


def _known_or_start(batch: _Batch, opened: _Opened, now: datetime, pool: ThreadPoolExecutor) -> _Writing | FileOutcome:
    rel, file_spec = opened.rel, opened.file_spec
    try:
        delivery_id, scanned = opened.checked.result()
    except FileNotFoundError as exc:  # deleted while we held it (a remote copy is ours: a local file)
        outcome = FileOutcome(rel, "rejected", table=file_spec.name, reason="not_found", detail=str(exc))
        return batch.reject(outcome, None, now)
    table = batch.table(file_spec)
    # `writing` holds the ids of this call's files still being written: the same bytes twice in one
    # call are written once.
    if delivery_id in table.staged or delivery_id in table.writing or table.known.holds(delivery_id):
        return FileOutcome(rel, "duplicate", table=file_spec.name, delivery_id=delivery_id)
    fingerprint = read_as(batch.spec, file_spec)
    before = None if batch.read_again else batch.rejected_before(delivery_id, fingerprint)
    if before is not None:
        # Rejected once is enough: the bytes are in quarantine with their reason; reading them
        # again (a bomb, a huge corrupt file) on every run would only repeat the same verdict.
        return FileOutcome(
            rel,
            "known_rejected",
            table=file_spec.name,
            delivery_id=delivery_id,
            reason=before["reason"],
            detail=f"same bytes as {before['file']!r}, rejected at {before['rejected_at']}",
        )
    table.writing.add(delivery_id)
    written = pool.submit(_write_delivery, batch.lake, batch.spec, file_spec, rel, opened.path, delivery_id, scanned, now, table.uri)
    return _Writing(opened, delivery_id, table, written)


def _finish_write(batch: _Batch, started: _Writing, now: datetime) -> FileOutcome:
    """Stage the written file, or reject the delivery with what its write found."""
    opened, delivery_id, table = started.opened, started.delivery_id, started.table
    rel, file_spec = opened.rel, opened.file_spec
    with opened.stack:
        try:
            staged, extras = started.written.result()
        except pl.exceptions.PolarsError as exc:
            failure = _read_failure(rel, file_spec.format.type, exc)
            outcome = FileOutcome(
                rel, "rejected", table=file_spec.name, delivery_id=delivery_id, reason=failure.reason, detail=failure.detail
            )
            outcome.read_as = read_as(batch.spec, file_spec)
            return batch.reject(outcome, opened.path, now)
        except DeliveryError as exc:
            if file_spec.incremental and exc.reason in NOTHING_NEW:
                # An incremental file kind says "no changes" with an empty file: accepted, nothing appended.
                return FileOutcome(rel, "empty", table=file_spec.name, delivery_id=delivery_id, reason=exc.reason, detail=exc.detail)
            outcome = FileOutcome(rel, "rejected", table=file_spec.name, delivery_id=delivery_id, reason=exc.reason, detail=exc.detail)
            outcome.read_as = read_as(batch.spec, file_spec)
            return batch.reject(outcome, opened.path, now)
        finally:
            table.writing.discard(delivery_id)
    outcome = FileOutcome(rel, "ingested", table=file_spec.name, delivery_id=delivery_id, rows=staged.rows, extra_columns=extras)
    table.staged[delivery_id] = (staged, outcome)
    return outcome


def _write_delivery(
    lake: Lake,
    spec: RetailerSpec,
    file_spec: FileSpec,
    rel: str,
    path: Path,
    delivery_id: str,
    scanned: TextScan | None,
    now: datetime,
    uri: str,
) -> tuple[StagedFile, list[str]]:
    """Write one delivery into a new data file of its bronze table (staged, not committed), and
    name its extra columns. Raises `DeliveryError` (or a Polars reader error) for a file that
    cannot be loaded, leaving nothing behind. Runs on a writer thread: touches nothing shared."""
    # Compressed deliveries are expanded (within the limits) into this folder and streamed from there.
    with tempfile.TemporaryDirectory(prefix="pos_lakehouse_read_") as work:
        raw = read_raw(path, file_spec.format, display_name=rel, limits=spec.delivery.limits, workdir=Path(work), scanned=scanned)
        columns = raw.collect_schema().names()
        mapping = spec.columns.get(file_spec.name, {})
        absent = absent_mapped_columns(columns, mapping)
        if absent:
            raise DeliveryError(rel, "missing_column", absent_columns_message(rel, file_spec.name, absent, len(mapping), columns))
        renames, extras = resolve_columns(columns, mapping, file_spec.holds)
        missing = missing_required(renames, file_spec.holds)
        if missing:
            raise DeliveryError(
                rel,
                "missing_column",
                f"required column(s) {missing} not found; the file has {columns} "
                f"(check the separator and `columns.{file_spec.name}` in the retailer YAML)",
            )
        frame = with_lineage(raw, spec, rel, delivery_id, now)
        staged = lake.stage(uri, frame, lineage_bounds(spec, rel, delivery_id, now), row_number="_row_number")
        if staged.rows == 0:  # counted by the writer: the footer of the file just written
            lake.discard(staged)
            raise DeliveryError(rel, "header_only", "the file has a header but no data rows")
    return staged, extras


def _read_failure(rel: str, kind: str, exc: BaseException) -> DeliveryError:
    """A reader error met while streaming a file, as a delivery error with a machine-readable reason."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "more fields" in message:
        return DeliveryError(rel, "wrong_field_count", f"a row has more fields than the header: {message}")
    return DeliveryError(rel, "corrupt", f"cannot read as {kind}: {message}")


def record_rejection(lake: Lake, spec: RetailerSpec | str, outcome: FileOutcome, path: Path | None, now: datetime) -> None:
    """Keep the rejected bytes and a machine-readable reason under `<root>/quarantine/<retailer>/`."""
    outcome.detail = _clip(redact(outcome.detail))  # reader and driver messages may quote a source address
    copy_path = None
    if path is not None:
        # A local folder or an object store alike (the quarantine lives under the data root).
        target = lake.quarantine(_owner(spec), "files", f"{(outcome.delivery_id or 'unknown')[:16]}_{Path(outcome.file).name}")
        put_file(path, target)
        put_bytes(target + ".reason.json", json.dumps(asdict(outcome) | {"rejected_at": now.isoformat()}, indent=2).encode())
        copy_path = target
    row = pl.DataFrame(
        {
            "file": [outcome.file],
            "delivery_id": [outcome.delivery_id],
            "bronze_table": [outcome.table],
            "reason": [outcome.reason],
            "detail": [outcome.detail],
            "quarantined_copy": [copy_path],
            "rejected_at": [now],
            "read_as": [outcome.read_as],
        },
        schema={
            "file": pl.String,
            "delivery_id": pl.String,
            "bronze_table": pl.String,
            "reason": pl.String,
            "detail": pl.String,
            "quarantined_copy": pl.String,
            "rejected_at": pl.Datetime("us", "UTC"),
            "read_as": pl.String,
        },
    )
    uri = lake.quarantine(_owner(spec), REJECTED_FILES_TABLE)
    description = "Delivered files that could not be ingested, with the reason."
    if outcome.delivery_id:
        # One row per rejected content, even when two runs reject the same bytes at once (per way of
        # reading them: a corrected YAML that rejects them again records why).
        once = f"rejected.{outcome.delivery_id}" + (f".{outcome.read_as}" if outcome.read_as else "")
        lake.append_once(uri, row, once_id=once, description=description)
    else:
        lake.append(uri, row, description=description)
