"""Read a delivered file into raw string columns, exactly as delivered, or say precisely why not."""

from __future__ import annotations

import gzip
import io
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
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
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


def _read_csv(path: Path, fmt: FileFormat, name: str) -> pl.DataFrame:
    text = _decode(_decompressed_bytes(path, fmt), fmt.encoding, name)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DeliveryError(name, "empty_file", "the file holds no text")
    frame = pl.read_csv(
        io.StringIO(text),
        separator=fmt.separator,
        quote_char=fmt.quote_char,
        has_header=fmt.has_header,
        skip_rows=fmt.skip_rows,
        infer_schema=False,
        truncate_ragged_lines=False,
    )
    return frame
