"""Landing zones: where retailers' files arrive, behind one `landing` resource.

Sensors and bronze assets only talk to `LandingZone`; the local folder is the default
implementation, others (SFTP in `sftp.py`, object stores in `object_store.py`) implement the same
three methods.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import dagster as dg
from pydantic import Field

T = TypeVar("T")

# Temporary names upload tools write under and rename when done: WinSCP and FileZilla (`.filepart`,
# `.part`), OpenSSH/lftp and scripts (`.partial`, `.tmp`), browsers saving a download (`.crdownload`).
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", ".crdownload")


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


def finished_uploads(
    listed: Mapping[str, T], modified_ns: Callable[[str, T], int | None], settle_seconds: float = 0.0, done_suffix: str | None = None
) -> list[tuple[str, T]]:
    """The entries of `listed` (every file of a zone: relative name -> what the zone knows of it)
    whose upload is finished; every landing zone takes a file by this one rule.

    A file is not finished while it has an in-progress name (`IN_PROGRESS_SUFFIXES`), while its
    done marker `<name><done_suffix>` is missing (when the zone has a `done_suffix`; the marker
    itself is never a delivery), or while it was modified less than `settle_seconds` ago
    (`modified_ns` reads the modification time, in ns, only of files that pass the other checks;
    None: the file went away meanwhile and is skipped).
    """
    horizon = time.time_ns() - int(settle_seconds * 1e9)
    finished = []
    for name, entry in listed.items():
        if name.endswith(IN_PROGRESS_SUFFIXES):
            continue  # an upload in progress under a temporary name
        if done_suffix and name.endswith(done_suffix):
            continue  # a marker, not a delivery
        if done_suffix and name + done_suffix not in listed:
            continue  # upload not declared complete yet
        if settle_seconds:
            modified = modified_ns(name, entry)
            if modified is None or modified > horizon:
                continue  # gone, or modified too recently: maybe still being written
        finished.append((name, entry))
    return finished


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
    done_suffix: str | None = Field(
        default=None,
        description="If set (e.g. '.done'), take a file only once '<name><suffix>' exists beside it.",
    )

    def folder(self, retailer: str) -> Path:
        return Path(self.root) / retailer

    def list_files(self, retailer: str) -> list[LandedFile]:
        folder = self.folder(retailer)
        if not folder.is_dir():
            return []
        paths: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
            for fn in filenames:
                if fn.startswith((".", "~$")):
                    continue  # hidden files, office lock files
                path = Path(dirpath) / fn
                paths[path.relative_to(folder).as_posix()] = path
        found = []
        for rel, path in finished_uploads(paths, _mtime_ns, self.settle_seconds, self.done_suffix):
            st = _stat(path)
            if st is not None:
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


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:  # renamed or removed since it was listed (an upload tool finishing)
        return None


def _mtime_ns(_: str, path: Path) -> int | None:
    st = _stat(path)
    return st.st_mtime_ns if st is not None else None


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes: the delivery id that makes ingestion exactly-once."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
