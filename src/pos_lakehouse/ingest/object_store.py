"""The landing zone in an object store: `s3://bucket/landing/<retailer>/...`, `abfss://...`, `gs://...`.

Same contract as the local folder (`LandingZone`): list a retailer's files with an identity that
changes whenever the object does, and stage one locally for reading. Differences that matter:

- Identity is size + ETag (the store's content version), not an mtime: re-uploading the same
  name with new bytes is a new identity, touching nothing is not.
- An object becomes visible only once its upload is complete (a single PUT or a completed
  multipart upload), so a half-uploaded object is never listed. Tools that upload under a
  temporary name and rename afterwards, done markers and the settle time follow the one rule
  of every landing zone (`landing.finished_uploads`).
- `local_copy` streams the object (one consistent version, even if it is overwritten meanwhile)
  into a temporary file that is removed after the block.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import Field

from pos_lakehouse.ingest.landing import LandedFile, LandingZone, LocalLandingZone, finished_uploads, safe_relative
from pos_lakehouse.storage import object_store


class ObjectStoreLandingZone(LandingZone):
    """Landing folders under an object-store URI; credentials from the environment (docs/storage.md)."""

    root: str = Field(description="URI that holds one folder (key prefix) per retailer, e.g. s3://bucket/landing.")
    settle_seconds: float = Field(
        default=0.0,
        description="Ignore objects modified more recently than this (for uploaders that write several objects per delivery).",
    )
    done_suffix: str | None = Field(
        default=None,
        description="If set (e.g. '.done'), take an object only once '<name><suffix>' exists beside it.",
    )

    def _prefix(self, retailer: str) -> str:
        _, base = object_store.split(self.root)
        return posixpath.join(base, retailer) if base else retailer

    def list_files(self, retailer: str) -> list[LandedFile]:
        import obstore

        store = object_store.store_for(self.root)
        prefix = self._prefix(retailer)
        objects = {}
        for batch in obstore.list(store, prefix=prefix + "/"):
            for meta in batch:
                rel = meta["path"][len(prefix) + 1 :]
                *dirs, name = rel.split("/")
                if not name or (meta["size"] == 0 and "." not in name):
                    # A folder marker (`folder/`, which consoles create; the store lists it without
                    # its slash). An empty *file* has an extension and is listed, to be rejected.
                    continue
                if any(d.startswith((".", "_")) for d in dirs) or name.startswith((".", "~$")):
                    continue  # hidden and system folders, office lock files
                objects[rel] = meta
        found = []
        for rel, meta in finished_uploads(objects, _modified_ns, self.settle_seconds, self.done_suffix):
            found.append(
                LandedFile(
                    retailer,
                    rel,
                    int(meta["size"]),
                    _modified_ns(rel, meta),
                    etag=(meta.get("e_tag") or "").strip('"') or None,
                )
            )
        return sorted(found, key=lambda f: f.name)

    @contextmanager
    def local_copy(self, retailer: str, name: str) -> Iterator[Path]:
        rel = safe_relative(name)
        root, _ = object_store.split(self.root)
        uri = f"{root}/{self._prefix(retailer)}/{rel}"
        tmp = Path(tempfile.mkdtemp(prefix=f"landing_{retailer}_"))
        try:
            target = tmp / posixpath.basename(rel)
            try:
                object_store.download(uri, target)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{retailer}: landing file {name!r} is not in {self.describe(retailer)} (moved or deleted?)"
                ) from None
            yield target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def describe(self, retailer: str) -> str:
        return f"{self.root.rstrip('/')}/{retailer}"


def _modified_ns(_: str, meta: dict) -> int:
    modified: datetime = meta["last_modified"]
    return int(modified.timestamp() * 1_000_000_000)


def landing_zone_for(root: str, settle_seconds: float = 0.0, done_suffix: str | None = None) -> LandingZone:
    """The landing zone for a root: an object store for `s3://`/`abfss://`/`gs://`..., else a local folder
    (including a Unity Catalog volume path, `/Volumes/<catalog>/<schema>/<volume>/...`, which is mounted)."""
    if object_store.is_remote(root):
        return ObjectStoreLandingZone(root=root.rstrip("/"), settle_seconds=settle_seconds, done_suffix=done_suffix)
    return LocalLandingZone(root=str(object_store.local_path(root)), settle_seconds=settle_seconds, done_suffix=done_suffix)
