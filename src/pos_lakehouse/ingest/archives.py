"""Compressed deliveries (.gz, .zip) and zip containers (.xlsx) expanded within bounds: expanded size
and expansion ratio are checked while the bytes stream by, so a decompression bomb is rejected early."""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

from pos_lakehouse.ingest.delivery_error import DeliveryError
from pos_lakehouse.retailer import FileFormat, ReadLimits

_CHUNK = 8 << 20
# Files expanding to less than this are exempt from the ratio limit: a few hundred repetitive
# bytes may pack very well and harm nobody.
_RATIO_GRACE = 1 << 20


class _Expansion:
    """Counts bytes coming out of a decompressor and stops at the first limit crossed."""

    def __init__(self, name: str, compressed_size: int, limits: ReadLimits, kind: str):
        self.name, self.compressed, self.limits, self.kind, self.total = name, max(1, compressed_size), limits, kind, 0

    def add(self, n: int) -> None:
        self.total += n
        lim = self.limits
        if self.total > lim.max_decompressed_bytes:
            raise DeliveryError(
                self.name,
                "too_large",
                f"expands beyond max_decompressed_bytes={lim.max_decompressed_bytes} "
                f"({self.kind}, {self.compressed} bytes compressed); stopped reading",
            )
        if self.total > _RATIO_GRACE and self.total > lim.max_ratio * self.compressed:
            raise DeliveryError(
                self.name,
                "compression_ratio",
                f"expands more than max_ratio={lim.max_ratio:g}x ({self.kind}: {self.compressed} bytes compressed, "
                f"over {self.total} bytes expanded so far): a decompression bomb or corrupt data; stopped reading",
            )


def compression_of(path: Path, fmt: FileFormat) -> str:
    if fmt.compression != "infer":
        return fmt.compression
    return {".gz": "gzip", ".zip": "zip"}.get(path.suffix.lower(), "none")


def expand(path: Path, compression: str, limits: ReadLimits, name: str, target: Path) -> Path:
    """Stream-decompress `path` into `target` within the limits; memory stays at one chunk."""
    counter = _Expansion(name, path.stat().st_size, limits, compression)
    try:
        if compression == "gzip":
            with gzip.open(path, "rb") as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    counter.add(len(chunk))
                    out.write(chunk)
        else:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise DeliveryError(name, "zip_members", f"expected one file in the zip, found {len(members)}")
                with zf.open(members[0]) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        counter.add(len(chunk))
                        out.write(chunk)
    except EOFError as exc:  # the compressed stream ends early: a partial upload
        raise DeliveryError(name, "truncated", f"compressed data ends early ({compression}): {exc}") from exc
    except (OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise DeliveryError(name, "corrupt", f"cannot decompress ({compression}): {exc}") from exc
    return target


def check_zip_container(path: Path, limits: ReadLimits, name: str) -> None:
    """An .xlsx is a zip: refuse one whose members declare more than the limits before opening it."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise DeliveryError(name, "corrupt", f"cannot read as excel: not a readable .xlsx (zip) file ({exc})") from exc
    _Expansion(name, path.stat().st_size, limits, "xlsx").add(declared)
