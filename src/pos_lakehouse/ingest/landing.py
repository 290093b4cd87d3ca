"""Landing zones: where retailers' files arrive, behind one `landing` resource.

Sensors and bronze assets only talk to `LandingZone`; the local folder is the default
implementation, others (SFTP in `sftp.py`, object stores in `object_store.py`) implement the same
three methods.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import dagster as dg
from pydantic import Field


@dataclass(frozen=True)
class LandedFile:
    """A file as the landing zone lists it; `identity` changes whenever the file does."""

    retailer: str
    name: str  # path relative to the retailer's folder, POSIX separators
    size: int
    mtime_ns: int
    # Object stores give each object version an ETag: a better identity than a timestamp (any
    # new content gets a new one; S3 keeps it when identical bytes are re-uploaded in one part).
    etag: str | None = None

    @property
    def identity(self) -> str:
        return f"{self.size}:{self.etag}" if self.etag else f"{self.size}:{self.mtime_ns}"


class UnsafePathError(ValueError):
    """A file name that would resolve outside its retailer's folder."""


def safe_relative(name: str) -> str:
    """Reject names that escape the retailer folder (`..`, absolute paths, drive letters)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or ":" in name or not posix.parts:
        raise UnsafePathError(f"file name {name!r} escapes its landing folder")
    return str(posix)


class LandingZone(dg.ConfigurableResource):
    """Abstract landing zone: list a retailer's files, open one, hash one."""

    def list_files(self, retailer: str) -> list[LandedFile]:
        raise NotImplementedError

    @contextmanager
    def local_copy(self, retailer: str, name: str) -> Iterator[Path]:
        """A local path holding the file's bytes for the duration of the block."""
        raise NotImplementedError
        yield  # pragma: no cover

    def describe(self, retailer: str) -> str:
        raise NotImplementedError


class LocalLandingZone(LandingZone):
    """Landing folders on the local file system: `<root>/<retailer>/...` (web upload, SharePoint or SFTP sync)."""

    root: str = Field(description="Folder that holds one sub-folder per retailer.")
    settle_seconds: float = Field(
        default=0.0,
        description="Ignore files modified more recently than this, so half-copied files are not picked up.",
    )

    def folder(self, retailer: str) -> Path:
        return Path(self.root) / retailer

    def list_files(self, retailer: str) -> list[LandedFile]:
        folder = self.folder(retailer)
        if not folder.is_dir():
            return []
        import time

        horizon = time.time_ns() - int(self.settle_seconds * 1e9)
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
            for fn in filenames:
                if fn.startswith((".", "~$")) or fn.endswith((".part", ".tmp", ".filepart")):
                    continue  # hidden files, office lock files and uploads in progress
                path = Path(dirpath) / fn
                st = path.stat()
                if self.settle_seconds and st.st_mtime_ns > horizon:
                    continue
                rel = path.relative_to(folder).as_posix()
                found.append(LandedFile(retailer, rel, st.st_size, st.st_mtime_ns))
        return sorted(found, key=lambda f: f.name)

    @contextmanager
    def local_copy(self, retailer: str, name: str) -> Iterator[Path]:
        rel = safe_relative(name)
        folder = self.folder(retailer).resolve()
        path = (folder / rel).resolve()
        if folder not in path.parents:
            raise UnsafePathError(f"file name {name!r} escapes its landing folder")
        if not path.is_file():
            raise FileNotFoundError(f"{retailer}: landing file {name!r} is not there (moved or deleted?)")
        yield path

    def describe(self, retailer: str) -> str:
        return str(self.folder(retailer))


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes: the delivery id that makes ingestion exactly-once."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
