"""Read a delivered file into raw string columns, exactly as delivered, or say precisely why not.

Every read is bounded (`ReadLimits` in the retailer YAML): file size, expanded size and
expansion ratio of compressed files, line length and column count are checked while the
bytes stream by, so a hostile file (a decompression bomb, a file without line ends) is
rejected after a few megabytes with a reason, in bounded memory.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pos_lakehouse.ingest.archives import check_zip_container, compression_of, expand
from pos_lakehouse.ingest.delivery_error import DeliveryError
from pos_lakehouse.retailer import FileFormat, ReadLimits

_UTF8 = {"utf-8", "utf8", "utf-8-sig", "utf_8"}
_CHUNK = 8 << 20


def _check_columns(n: int, limits: ReadLimits, name: str) -> None:
    if n > limits.max_columns:
        raise DeliveryError(name, "too_many_columns", f"{n} columns is more than max_columns={limits.max_columns}")


def _as_strings(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lf = frame.lazy()
    names = lf.collect_schema().names()
    renamed = {n: " ".join(str(n).split()) for n in names}
    return lf.rename(renamed).select(pl.all().cast(pl.String))


def read_raw(
    path: Path,
    fmt: FileFormat,
    *,
    display_name: str | None = None,
    limits: ReadLimits | None = None,
    workdir: Path | None = None,
    scanned: TextScan | None = None,
) -> pl.LazyFrame:
    """All columns as strings, header names trimmed; raises `DeliveryError` for unreadable files.

    `limits` (default `ReadLimits()`) are enforced while streaming. Compressed and non-UTF-8
    files are expanded/transcoded into `workdir` and scanned lazily from there, so the caller
    keeps `workdir` until it has consumed the frame; without one the frame is read eagerly.
    `scanned` is `hash_and_check`'s pass over the same file: its checks are not made again.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="pos_lakehouse_read_") as work:
            return read_raw(path, fmt, display_name=display_name, limits=limits, workdir=Path(work), scanned=scanned).collect().lazy()
    name = display_name or path.name
    limits = limits or ReadLimits()
    size = path.stat().st_size
    if size == 0:
        raise DeliveryError(name, "empty_file", "the file has zero bytes")
    if size > limits.max_compressed_bytes:
        raise DeliveryError(name, "too_large", f"{size} bytes is more than max_compressed_bytes={limits.max_compressed_bytes}")
    compression = compression_of(path, fmt)
    plain = path if compression == "none" else expand(path, compression, limits, name, workdir / "expanded")
    try:
        if fmt.type == "parquet":
            try:
                schema = pl.read_parquet_schema(plain)
            except Exception as exc:
                raise DeliveryError(name, "corrupt", f"not a readable Parquet file ({exc})") from exc
            if not schema:
                raise DeliveryError(name, "no_columns", "the Parquet file has no columns")
            _check_columns(len(schema), limits, name)
            frame = _as_strings(pl.scan_parquet(plain))
        elif fmt.type == "csv":
            frame = _as_strings(_read_csv(plain, fmt, name, limits, workdir, scanned))
        elif fmt.type == "jsonl":
            if _first_byte(plain) == b"[":  # before the line checks: a one-line array is "too long"
                raise DeliveryError(
                    name,
                    "wrong_format",
                    "the file is one JSON array (its first character is `[`), not JSON lines: set `format: {type: json}` for this kind of file",
                )
            text_path, _, _, _ = scanned.result() if scanned is not None else _scan_text(plain, fmt.encoding, name, limits, workdir)
            lf = pl.scan_ndjson(text_path, infer_schema_length=None)
            _check_columns(len(lf.collect_schema()), limits, name)
            frame = _as_strings(lf)
        elif fmt.type == "json":
            # A whole document has to be parsed at once; its size is already bounded by the limits above.
            frame = _as_strings(json_records(_decode(plain.read_bytes(), fmt.encoding, name), fmt.record_path, name))
        elif fmt.type == "excel":
            check_zip_container(plain, limits, name)
            data = plain.read_bytes()
            read = (
                pl.read_excel(io.BytesIO(data), sheet_name=fmt.sheet_name, infer_schema_length=0)
                if fmt.sheet_name
                else pl.read_excel(io.BytesIO(data), infer_schema_length=0)
            )
            _check_columns(read.width, limits, name)
            frame = _as_strings(read)
        else:  # pragma: no cover - the YAML model rejects other types
            raise DeliveryError(name, "unsupported_format", fmt.type)
    except DeliveryError:
        raise
    except Exception as exc:
        raise DeliveryError(name, "corrupt", f"cannot read as {fmt.type}: {exc}") from exc
    return frame


def json_records(text: str, record_path: str | None, name: str) -> pl.DataFrame:
    """The records of a JSON document: the document itself when it is an array, else the array at `record_path`.

    Values are kept as delivered text: scalars as strings, nested objects/arrays as their JSON.
    """
    try:
        doc = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data" and text.lstrip("\ufeff \t\r\n").startswith("{"):
            hint = "; it looks like JSON lines (one object per line): set `format: {type: jsonl}` for this kind of file"
        raise DeliveryError(name, "corrupt", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}") from exc
    where = "the document"
    for part in (record_path or "").split(".") if record_path else []:
        if not isinstance(doc, dict) or part not in doc:
            keys = ", ".join(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
            raise DeliveryError(name, "no_records", f"record_path `{record_path}`: no key `{part}` in {where} (has: {keys})")
        doc, where = doc[part], f"`{part}`"
    if not isinstance(doc, list):
        hint = "" if record_path else "; set `format.record_path` to the array inside the object"
        raise DeliveryError(name, "no_records", f"{where} is a JSON {type(doc).__name__}, not an array of records{hint}")
    if not doc:
        raise DeliveryError(name, "no_records", f"{where} holds an empty array: no records")
    bad = next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DeliveryError(name, "not_records", f"element {bad + 1} of {where} is a {type(doc[bad]).__name__}, not an object")

    def text_of(value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    columns = list(dict.fromkeys(k for r in doc for k in r))
    return pl.DataFrame({c: [text_of(r.get(c)) for r in doc] for c in columns}, schema={c: pl.String for c in columns})


def _first_byte(path: Path) -> bytes:
    """The first byte of a text file that is not a byte-order mark or white space."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1]


def _decode(data: bytes, encoding: str, name: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DeliveryError(
            name,
            "bad_encoding",
            f"byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) is not valid {encoding}",
        ) from exc


def _line_over(chunk: bytes, run: int, longest: int) -> tuple[bool, int]:
    """Whether a line in `chunk` (the first continuing `run` bytes from the previous chunk) is
    longer than `longest` bytes, and the bytes of the line still running at the chunk's end.

    Scanned in C, a window at a time: the last line end within `longest + 1` bytes of a line's
    start ends every line in between; a window with none holds a line that is too long.
    """
    first = chunk.find(b"\n")
    if first < 0:
        return run + len(chunk) > longest, run + len(chunk)
    if run + first > longest:
        return True, 0
    start, size = first + 1, len(chunk)
    while size - start > longest:
        end = chunk.rfind(b"\n", start, start + longest + 1)
        if end < 0:
            return True, 0
        start = end + 1
    return False, size - chunk.rfind(b"\n") - 1


class _TextCheck:
    """Strict decoding (naming the first bad byte's offset and line) and the line-length limit,
    fed a chunk at a time; for non-UTF-8 files it writes a UTF-8 copy to `out`."""

    def __init__(self, encoding: str, name: str, limits: ReadLimits, out: Path | None = None):
        self.encoding, self.name, self.longest = encoding, name, limits.max_line_bytes
        self.utf8 = encoding.lower() in _UTF8
        self.decoder = codecs.getincrementaldecoder("utf-8" if self.utf8 else encoding)(errors="strict")
        self.out = None if self.utf8 or out is None else open(out, "w", encoding="utf-8", newline="")
        self.offset = self.lines = 0
        self.run = 0  # bytes of the line in progress at the end of the previous chunk

    def feed(self, chunk: bytes) -> None:
        widest_over, self.run = _line_over(chunk, self.run, self.longest)
        if widest_over:
            raise DeliveryError(
                self.name,
                "line_too_long",
                f"a line at or after line {self.lines + 1} is longer than max_line_bytes={self.longest}; stopped reading",
            )
        try:
            # UTF-8 deliveries: an ASCII chunk is valid as it is (checked in C, no text built).
            text = None if self.utf8 and chunk.isascii() and not self.decoder.getstate()[0] else self.decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            at = self.offset + exc.start
            line = self.lines + chunk[: exc.start].count(b"\n") + 1
            raise DeliveryError(
                self.name, "bad_encoding", f"byte 0x{chunk[exc.start]:02x} at offset {at} (line {line}) is not valid {self.encoding}"
            ) from exc
        if self.out is not None and text is not None:  # `out` is only for non-UTF-8 text, always decoded
            self.out.write(text)
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")

    def finish(self) -> None:
        try:
            rest = self.decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise DeliveryError(
                self.name, "bad_encoding", f"the file ends inside a {self.encoding} character (line {self.lines + 1})"
            ) from exc
        if self.out is not None:
            self.out.write(rest)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


@dataclass
class TextScan:
    """What one pass over a delivered text file found: the UTF-8 path to parse, its first and last
    64 KiB as text and whether it ends with a line end -- or the error that rejects it."""

    text_path: Path
    head: str = ""
    tail: str = ""
    ends_with_newline: bool = True
    error: DeliveryError | None = None

    def result(self) -> tuple[Path, str, str, bool]:
        if self.error is not None:
            raise self.error
        return self.text_path, self.head, self.tail, self.ends_with_newline


def _ends(text_path: Path) -> tuple[str, str, bool]:
    with open(text_path, "rb") as fh:
        head = fh.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff")
        size = text_path.stat().st_size
        fh.seek(max(0, size - (1 << 16)))
        tail_bytes = fh.read()
    return head, tail_bytes.decode("utf-8", errors="replace"), tail_bytes.endswith((b"\n", b"\r"))


def _scan_text(path: Path, encoding: str, name: str, limits: ReadLimits, workdir: Path) -> tuple[Path, str, str, bool]:
    """One streaming pass over a text file: strict decoding (naming the first bad byte's offset and
    line), the line-length limit, and for non-UTF-8 files a UTF-8 copy in `workdir` to scan.

    Returns the UTF-8 path, its first and last 64 KiB as text, and whether it ends with a line end.
    """
    target = workdir / "utf8.txt"
    check = _TextCheck(encoding, name, limits, target)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                check.feed(chunk)
        check.finish()
    finally:
        check.close()
    text_path = path if check.utf8 else target
    return (text_path, *_ends(text_path))


def hash_and_check(
    path: Path, fmt: FileFormat, *, display_name: str | None = None, limits: ReadLimits | None = None
) -> tuple[str, TextScan | None]:
    """The file's SHA-256 (its delivery id) and, in the same pass over its bytes, the text checks
    `read_raw` would make (a plain UTF-8 CSV or JSON-lines file; None for other files).

    A failed check does not stop the hash: the caller first learns whether these bytes are known
    (in bronze, rejected before), and `read_raw(..., scanned=...)` raises the check's error. The
    hash runs on a second thread (hashlib releases the GIL) while the checks run on this one.
    """
    name = display_name or path.name
    limits = limits or ReadLimits()
    digest = hashlib.sha256()
    text = fmt.type in ("csv", "jsonl") and compression_of(path, fmt) == "none" and fmt.encoding.lower() in _UTF8
    check = _TextCheck(fmt.encoding, name, limits) if text else None
    error: DeliveryError | None = None
    with open(path, "rb") as fh, ThreadPoolExecutor(1, thread_name_prefix="pos_lakehouse_hash") as pool:
        hashing = None
        while chunk := fh.read(_CHUNK):
            if hashing is not None:
                hashing.result()
            hashing = pool.submit(digest.update, chunk)
            if check is not None and error is None:
                try:
                    check.feed(chunk)
                except DeliveryError as exc:
                    error = exc
        if hashing is not None:
            hashing.result()
    if check is None:
        return digest.hexdigest(), None
    if error is None:
        try:
            check.finish()
        except DeliveryError as exc:
            error = exc
    if error is not None:
        return digest.hexdigest(), TextScan(path, error=error)
    return digest.hexdigest(), TextScan(path, *_ends(path))


def _fields(line: str, fmt: FileFormat) -> int:
    quoting: dict[str, Any] = {"quotechar": fmt.quote_char} if fmt.quote_char else {"quoting": csv.QUOTE_NONE}
    rows = list(csv.reader([line], delimiter=fmt.separator, **quoting))
    return len(rows[0]) if rows else 0


def _check_not_truncated(head: str, tail: str, ends_with_newline: bool, fmt: FileFormat, name: str) -> None:
    """A file cut off mid-row (no final newline, last row shorter than the header) is a partial delivery.

    Loading it would silently lose the missing rows, so the whole file is rejected and the
    retailer's complete re-delivery loads instead.
    """
    if ends_with_newline:
        return
    lines = head.splitlines()[fmt.skip_rows :]
    last = tail.splitlines()[-1] if tail.splitlines() else ""
    if len(lines) < 2 or not last:
        return
    expected, got = _fields(lines[0], fmt), _fields(last, fmt)
    if got < expected:
        raise DeliveryError(
            name, "truncated", f"the last row has {got} of {expected} fields and no line end: the file was cut off (incomplete upload?)"
        )


def _csv_options(fmt: FileFormat) -> dict:
    return {
        "separator": fmt.separator,
        "quote_char": fmt.quote_char,
        "has_header": fmt.has_header,
        "skip_rows": fmt.skip_rows,
        "infer_schema": False,
        "truncate_ragged_lines": False,
    }


def _read_csv(path: Path, fmt: FileFormat, name: str, limits: ReadLimits, workdir: Path, scanned: TextScan | None = None) -> pl.LazyFrame:
    """Scanned lazily (large deliveries stream); non-UTF-8 files through a transcoded copy in `workdir`."""
    if scanned is not None:
        text_path, head, tail, ends_with_newline = scanned.result()
    else:
        text_path, head, tail, ends_with_newline = _scan_text(path, fmt.encoding, name, limits, workdir)
    if not head.strip():
        raise DeliveryError(name, "empty_file", "the file holds no text")
    header = head.splitlines()[fmt.skip_rows :]
    if header:
        _check_columns(_fields(header[0], fmt), limits, name)
    _check_not_truncated(head, tail, ends_with_newline, fmt, name)
    return pl.scan_csv(text_path, **_csv_options(fmt))
