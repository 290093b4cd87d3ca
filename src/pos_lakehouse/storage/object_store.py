"""Object-store URIs (`s3://`, `abfss://`, `az://`, `gs://`) next to local paths, for the few places
that handle plain files rather than Delta tables: the landing zone, quarantine copies and the
local mirror the DuckDB views read.

Credentials and endpoints are never passed around: `obstore` (the Python binding of the Rust
`object_store` crate) reads the same environment variables as delta-rs and Polars, which use that
crate too -- `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, web identity / instance roles; `AZURE_STORAGE_ACCOUNT_NAME`,
`AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, `AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/
`AZURE_TENANT_ID`, managed identity; `GOOGLE_APPLICATION_CREDENTIALS`. One set of variables
configures the lake, the landing zone and the serving mirror alike (docs/storage.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:  # obstore is imported where a store is first used
    from obstore.store import ObjectStore

# Schemes the object store handles; anything else (no scheme, `file://`) is the local file system.
REMOTE_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure")
_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_")
_CHUNK = 8 << 20

_stores: dict[tuple, ObjectStore] = {}
_stores_lock = threading.Lock()


def is_remote(uri: str) -> bool:
    """Whether `uri` lives in an object store (as opposed to a local path or `file://`)."""
    return urlparse(uri).scheme.lower() in REMOTE_SCHEMES


def local_path(uri: str) -> Path:
    """The local path of a non-remote URI (`file:///x` or `/x`)."""
    if is_remote(uri):
        raise ValueError(f"{uri} is in an object store, not on the local file system")
    return Path(uri.removeprefix("file://"))


def split(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`s3://bucket`, `a/b`): the store's root URI and the object key."""
    parsed = urlparse(uri)
    if parsed.scheme.lower() not in REMOTE_SCHEMES or not parsed.netloc:
        raise ValueError(
            f"not an object-store URI: {uri!r} (expected e.g. s3://bucket/path or abfss://container@account.dfs.core.windows.net/path)"
        )
    scheme = "s3" if parsed.scheme.lower() == "s3a" else parsed.scheme.lower()
    return f"{scheme}://{parsed.netloc}", parsed.path.strip("/")


def store_for(uri: str) -> ObjectStore:
    """The obstore store of the bucket/container holding `uri` (cached per bucket and environment)."""
    from obstore.store import from_url

    root, _ = split(uri)
    # The store reads credentials when built: key the cache on the environment so a rotated
    # credential or a different endpoint (tests start their own server) gets a fresh client.
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = (root, env)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = from_url(root)
            _stores[key] = store
        return store


def put_file(source: Path, uri: str) -> None:
    """Copy a local file to `uri` (object store or local path); multipart for large files."""
    if not is_remote(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return
    import obstore

    _, key = split(uri)
    obstore.put(store_for(uri), key, Path(source))


def put_bytes(uri: str, data: bytes) -> None:
    if not is_remote(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return
    import obstore

    _, key = split(uri)
    obstore.put(store_for(uri), key, data)


@contextmanager
def written_at(target: str) -> Iterator[Path]:
    """A local path to write the file `target` at: `target` itself on a local file system; for an
    object store, a temporary file uploaded to `target` when the block ends (and then removed).
    A block that fails leaves nothing behind at either place."""
    if not is_remote(target):
        path = local_path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return
    handle, tmp = tempfile.mkstemp(prefix="pos_lakehouse_part_", suffix=".parquet")
    os.close(handle)
    path = Path(tmp)
    try:
        yield path
        put_file(path, target)
    finally:
        path.unlink(missing_ok=True)


def delete_uri(uri: str) -> None:
    """Remove one file or object; nothing happens when it is already gone."""
    if not is_remote(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    import obstore

    _, key = split(uri)
    obstore.delete(store_for(uri), key)


def download(uri: str, target: Path) -> int:
    """Stream one object into a local file; returns its size. `FileNotFoundError` when absent."""
    import obstore
    from obstore.exceptions import NotFoundError

    _, key = split(uri)
    try:
        result = obstore.get(store_for(uri), key)
    except NotFoundError:
        raise FileNotFoundError(f"{uri} is not there (moved or deleted?)") from None
    expected = int(result.meta["size"])
    written = 0
    with open(target, "wb") as fh:
        for chunk in result.stream(min_chunk_size=_CHUNK):
            fh.write(chunk)
            written += len(chunk)
    if written != expected:
        raise OSError(f"{uri}: read {written} of {expected} bytes")
    return written


def mirror(uris: list[str], cache_dir: Path) -> list[str]:
    """Local copies of remote Delta data files, for readers that only read local files (DuckDB here).

    Delta never rewrites a data file in place (every write adds files with new names), so a file
    already in the cache is reused and only files added since the last mirror are downloaded.
    Files that neither this nor the previous mirror named (compacted, vacuumed) are removed: the
    previous generation stays, so a reader of the database built from it is not cut off while
    the new one is being built. Local paths are returned as they are.
    """
    out, keep = [], set()
    for uri in uris:
        if not is_remote(uri):
            out.append(str(local_path(uri)))
            continue
        root, key = split(uri)
        target = cache_dir / urlparse(root).netloc / key
        keep.add(target)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            download(uri, partial)
            os.replace(partial, target)
        out.append(str(target))
    if cache_dir.is_dir() or keep:
        cache_dir.mkdir(parents=True, exist_ok=True)
        manifest = cache_dir / ".mirrored"
        previous = set(manifest.read_text().splitlines()) if manifest.exists() else set()
        for path in cache_dir.rglob("*"):
            if path.is_file() and path not in keep and str(path) not in previous and not path.name.startswith("."):
                path.unlink(missing_ok=True)
        manifest.write_text("\n".join(sorted(str(p) for p in keep)))
    return out
