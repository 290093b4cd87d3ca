"""Read a delivered file into raw string columns, exactly as delivered, or say precisely why not."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import zipfile
from pathlib import Path

import polars as pl

from pos_lakehouse.retailer import FileFormat


class DeliveryError(Exception):
    """A delivered file that cannot be ingested; `reason` is a machine-readable code."""

    def __init__(self, file: str, reason: str, detail: str):
        self.file = file
        self.reason = reason
        self.detail = detail
        super().__init__(f"{file}: {reason}: {detail}")


def _decompressed_bytes(path: Path, fmt: FileFormat) -> bytes:
    data = path.read_bytes()
    compression = fmt.compression
    if compression == "infer":
        suffix = path.suffix.lower()
        compression = {".gz": "gzip", ".zip": "zip"}.get(suffix, "none")
    try:
        if compression == "gzip":
            return gzip.decompress(data)
        if compression == "zip":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/")]
                if len(members) != 1:
                    raise DeliveryError(path.name, "zip_members", f"expected one file in the zip, found {len(members)}")
                return zf.read(members[0])
    except EOFError as exc:  # the compressed stream ends early: a partial upload
        raise DeliveryError(path.name, "truncated", f"compressed data ends early ({compression}): {exc}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise DeliveryError(path.name, "corrupt", f"cannot decompress ({compression}): {exc}") from exc
    return data


def _as_strings(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lf = frame.lazy()
    names = lf.collect_schema().names()
    renamed = {n: " ".join(str(n).split()) for n in names}
    return lf.rename(renamed).select(pl.all().cast(pl.String))


def read_raw(path: Path, fmt: FileFormat, *, display_name: str | None = None) -> pl.LazyFrame:
    """All columns as strings, header names trimmed; raises `DeliveryError` for unreadable files."""
    name = display_name or path.name
    if path.stat().st_size == 0:
        raise DeliveryError(name, "empty_file", "the file has zero bytes")
    try:
        if fmt.type == "parquet":
            raw = path if fmt.compression in ("none", "infer") and path.suffix.lower() not in (".gz", ".zip") else None
            if raw is not None:
                try:
                    schema = pl.read_parquet_schema(raw)
                except Exception as exc:
                    raise DeliveryError(name, "corrupt", f"not a readable Parquet file ({exc})") from exc
                lf = pl.scan_parquet(raw)
                frame = _as_strings(lf)
                if not schema:
                    raise DeliveryError(name, "no_columns", "the Parquet file has no columns")
            else:
                frame = _as_strings(pl.read_parquet(io.BytesIO(_decompressed_bytes(path, fmt))))
        elif fmt.type == "csv":
            frame = _as_strings(_read_csv(path, fmt, name))
        elif fmt.type == "jsonl":
            text = _decode(_decompressed_bytes(path, fmt), fmt.encoding, name)
            frame = _as_strings(pl.read_ndjson(io.StringIO(text), infer_schema_length=None))
        elif fmt.type == "json":
            frame = _as_strings(json_records(_decode(_decompressed_bytes(path, fmt), fmt.encoding, name), fmt.record_path, name))
        elif fmt.type == "excel":
            data = _decompressed_bytes(path, fmt)
            frame = _as_strings(
                pl.read_excel(io.BytesIO(data), sheet_name=fmt.sheet_name, infer_schema_length=0)
                if fmt.sheet_name
                else pl.read_excel(io.BytesIO(data), infer_schema_length=0)
            )
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
        raise DeliveryError(name, "corrupt", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
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


_UTF8 = {"utf-8", "utf8", "utf-8-sig", "utf_8"}
_CHUNK = 8 << 20


def _validate_utf8(path: Path, name: str) -> None:
    """Stream the file through a strict UTF-8 decoder; name the first bad byte's offset and line."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                line = lines + chunk[: exc.start].count(b"\n") + 1
                raise DeliveryError(
                    name, "bad_encoding", f"byte 0x{chunk[exc.start]:02x} at offset {at} (line {line}) is not valid utf-8"
                ) from exc
            offset += len(chunk)
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise DeliveryError(name, "bad_encoding", f"the file ends inside a utf-8 character (line {lines + 1})") from exc


def _fields(line: str, fmt: FileFormat) -> int:
    quoting = {"quotechar": fmt.quote_char} if fmt.quote_char else {"quoting": csv.QUOTE_NONE}
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


def _read_csv(path: Path, fmt: FileFormat, name: str) -> pl.LazyFrame:
    """Plain UTF-8 files are scanned lazily (large deliveries stream); others are decoded in memory first."""
    compressed = fmt.compression in ("gzip", "zip") or (fmt.compression == "infer" and path.suffix.lower() in (".gz", ".zip"))
    if not compressed and fmt.encoding.lower() in _UTF8:
        _validate_utf8(path, name)
        with open(path, "rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff")
            size = path.stat().st_size
            fh.seek(max(0, size - (1 << 16)))
            tail_bytes = fh.read()
        if not head.strip():
            raise DeliveryError(name, "empty_file", "the file holds no text")
        _check_not_truncated(head, tail_bytes.decode("utf-8", errors="replace"), tail_bytes.endswith((b"\n", b"\r")), fmt, name)
        return pl.scan_csv(path, **_csv_options(fmt))
    text = _decode(_decompressed_bytes(path, fmt), fmt.encoding, name)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DeliveryError(name, "empty_file", "the file holds no text")
    _check_not_truncated(text[: 1 << 16], text[-(1 << 16) :], text.endswith(("\n", "\r")), fmt, name)
    return pl.read_csv(io.BytesIO(text.encode("utf-8")), **_csv_options(fmt)).lazy()
