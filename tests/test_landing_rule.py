"""One "is this upload finished?" rule for every landing zone: the same files are taken and held back by
the local folder, a real SFTP server on loopback and an S3-compatible object store on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from object_store_server import bucket, s3_env, s3_server  # noqa: F401 - fixtures

from pos_lakehouse.demo.sftp_server import SftpServer
from pos_lakehouse.ingest.landing import IN_PROGRESS_SUFFIXES, LandingZone, LocalLandingZone
from pos_lakehouse.ingest.object_store import ObjectStoreLandingZone
from pos_lakehouse.ingest.sftp import SftpLandingZone

RETAILER = "kaufhalle_de"


@dataclass
class Zone:
    put: Callable[[str, bytes], None]  # a file under the retailer's folder, as its uploader leaves it
    make: Callable[..., LandingZone]  # the zone, with settle_seconds / done_suffix


def _local(tmp_path: Path) -> Zone:
    root = tmp_path / "landing"

    def put(name: str, body: bytes) -> None:
        path = root / RETAILER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    return Zone(put, lambda **settings: LocalLandingZone(root=str(root), **settings))


def _sftp(server: SftpServer, monkeypatch) -> Zone:
    monkeypatch.setenv("T_SFTP_USER", RETAILER)
    monkeypatch.setenv("T_SFTP_PASSWORD", "k-pass-1")

    def put(name: str, body: bytes) -> None:
        path = server.folder(RETAILER) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    def make(**settings) -> LandingZone:
        return SftpLandingZone(
            retailer=RETAILER,
            host="127.0.0.1",
            port=server.port,
            username_env="T_SFTP_USER",
            password_env="T_SFTP_PASSWORD",
            **settings,
        )

    return Zone(put, make)


def _s3(s3, bucket_name: str) -> Zone:
    client = s3.client()

    def put(name: str, body: bytes) -> None:
        client.put_object(Bucket=bucket_name, Key=f"landing/{RETAILER}/{name}", Body=body)

    return Zone(put, lambda **settings: ObjectStoreLandingZone(root=f"s3://{bucket_name}/landing", **settings))


@pytest.fixture(params=["local", "sftp", "s3"])
def zone(request, tmp_path, monkeypatch):
    if request.param == "local":
        yield _local(tmp_path)
    elif request.param == "sftp":
        with SftpServer(tmp_path / "sftp", {RETAILER: "k-pass-1"}) as server:
            yield _sftp(server, monkeypatch)
    else:
        yield _s3(request.getfixturevalue("s3_env"), request.getfixturevalue("bucket"))


def names(zone: LandingZone) -> list[str]:
    return [f.name for f in zone.list_files(RETAILER)]


def test_every_zone_takes_a_file_once_its_upload_is_finished(zone):
    zone.put("a.csv", b"x;y\n1;2\n")
    zone.put("sub/b.csv", b"x;y\n3;4\n")
    zone.put("b.csv.done", b"")
    zone.put("sub/b.csv.done", b"")
    # Uploads in progress under the temporary names of every tool the rule knows.
    for suffix in IN_PROGRESS_SUFFIXES:
        zone.put(f"c.csv{suffix}", b"x;y\n")
    written = time.monotonic()

    # In-progress names are never taken; without a done suffix, a marker is just another file.
    assert names(zone.make()) == ["a.csv", "b.csv.done", "sub/b.csv", "sub/b.csv.done"]
    # With a done suffix: only files whose marker exists, never the markers themselves.
    assert names(zone.make(done_suffix=".done")) == ["sub/b.csv"]
    # A settle time longer than the files' age holds everything back ...
    assert names(zone.make(settle_seconds=3600)) == []
    assert names(zone.make(settle_seconds=3600, done_suffix=".done")) == []
    # ... and once they are older than it (the stores keep whole seconds), they are taken.
    time.sleep(max(0.0, written + 2.5 - time.monotonic()))
    assert names(zone.make(settle_seconds=1)) == ["a.csv", "b.csv.done", "sub/b.csv", "sub/b.csv.done"]
    assert names(zone.make(settle_seconds=1, done_suffix=".done")) == ["sub/b.csv"]
