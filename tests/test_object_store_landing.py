"""The object-store landing zone against a real S3-compatible server on loopback: what is listed,
the identity that drives the sensor's cursor, half-uploaded objects, staging and the env switch."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import pytest
from object_store_server import bucket, s3_env, s3_server  # noqa: F401 - fixtures

from pos_lakehouse.ingest.landing import LocalLandingZone, UnsafePathError, content_hash
from pos_lakehouse.ingest.object_store import ObjectStoreLandingZone, landing_zone_for

MARCHE = "marche_fr"


def put(s3, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_lists_deliveries_with_size_and_etag_and_skips_what_is_not_one(s3_env, bucket):
    s3 = s3_env.client()
    delivered = {
        "ventes_2026-01-01.parquet": b"a" * 10,
        "archive/ventes_2025-12-31.parquet": b"b" * 20,
    }
    for name, body in delivered.items():
        put(s3, bucket, f"landing/{MARCHE}/{name}", body)
    not_deliveries = [
        "landing/marche_fr/.hidden",
        "landing/marche_fr/~$ventes.xlsx",  # office lock file
        "landing/marche_fr/ventes_2026-01-02.parquet.part",  # upload under a temporary name
        "landing/marche_fr/upload.tmp",
        "landing/marche_fr/_system/x.parquet",  # system folder
        "landing/marche_fr/.trash/y.parquet",
        "landing/marche_fr/empty-folder/",  # folder marker a console creates
        "landing/marche_fr_old/ventes.parquet",  # another retailer whose name shares the prefix
        "landing/other/ventes.parquet",
    ]
    for key in not_deliveries:
        put(s3, bucket, key, b"" if key.endswith("/") else b"zz")

    zone = ObjectStoreLandingZone(root=f"s3://{bucket}/landing")
    listed = zone.list_files(MARCHE)
    assert [f.name for f in listed] == sorted(delivered)
    for f in listed:
        assert f.retailer == MARCHE
        assert f.size == len(delivered[f.name])
        # S3's ETag of a single-part upload is the MD5 of the bytes: the identity is the content's.
        assert f.etag == hashlib.md5(delivered[f.name]).hexdigest()
        assert f.identity == f"{f.size}:{f.etag}"
        assert f.mtime_ns > 0
    assert zone.list_files("nobody") == []
    assert zone.describe(MARCHE) == f"s3://{bucket}/landing/{MARCHE}"


def test_identity_changes_with_content_not_with_a_reupload_of_the_same_bytes(s3_env, bucket):
    s3 = s3_env.client()
    key = f"landing/{MARCHE}/ventes.parquet"
    zone = ObjectStoreLandingZone(root=f"s3://{bucket}/landing")
    put(s3, bucket, key, b"version one")
    first = zone.list_files(MARCHE)[0].identity
    put(s3, bucket, key, b"version one")
    assert zone.list_files(MARCHE)[0].identity == first
    put(s3, bucket, key, b"version two")  # same size, new content
    second = zone.list_files(MARCHE)[0].identity
    assert second != first and second.startswith(f"{len(b'version two')}:")


def test_half_uploaded_objects_are_not_taken(s3_env, bucket):
    s3 = s3_env.client()
    zone = ObjectStoreLandingZone(root=f"s3://{bucket}/landing")
    key = f"landing/{MARCHE}/ventes_big.parquet"
    # A multipart upload in progress: one part sent, not completed.
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the upload is in progress on the server"
    assert zone.list_files(MARCHE) == []
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    listed = zone.list_files(MARCHE)
    assert [(f.name, f.size) for f in listed] == [("ventes_big.parquet", 1024)]
    assert listed[0].etag.endswith("-1"), "a multipart ETag names its part count"

    # Upload under a temporary name, then "rename" (copy + delete): taken only after the rename.
    put(s3, bucket, f"landing/{MARCHE}/ventes_2.parquet.part", b"y" * 10)
    assert [f.name for f in zone.list_files(MARCHE)] == ["ventes_big.parquet"]
    s3.copy_object(
        Bucket=bucket,
        Key=f"landing/{MARCHE}/ventes_2.parquet",
        CopySource={"Bucket": bucket, "Key": f"landing/{MARCHE}/ventes_2.parquet.part"},
    )
    s3.delete_object(Bucket=bucket, Key=f"landing/{MARCHE}/ventes_2.parquet.part")
    assert [f.name for f in zone.list_files(MARCHE)] == ["ventes_2.parquet", "ventes_big.parquet"]


def test_done_marker_and_settle_time(s3_env, bucket):
    s3 = s3_env.client()
    marked = ObjectStoreLandingZone(root=f"s3://{bucket}/landing", done_suffix=".done")
    put(s3, bucket, f"landing/{MARCHE}/a.parquet", b"a")
    put(s3, bucket, f"landing/{MARCHE}/b.parquet", b"b")
    put(s3, bucket, f"landing/{MARCHE}/b.parquet.done", b"")
    assert [f.name for f in marked.list_files(MARCHE)] == ["b.parquet"]
    # Everything was just written: a settle time longer than that hides it all, zero shows it.
    assert ObjectStoreLandingZone(root=f"s3://{bucket}/landing", settle_seconds=3600).list_files(MARCHE) == []
    assert len(ObjectStoreLandingZone(root=f"s3://{bucket}/landing").list_files(MARCHE)) == 3


def test_local_copy_streams_the_exact_bytes_and_cleans_up(s3_env, bucket):
    s3 = s3_env.client()
    body = bytes(range(256)) * 40_000  # ~10 MB: several stream chunks
    put(s3, bucket, f"landing/{MARCHE}/sub/ventes.parquet", body)
    zone = ObjectStoreLandingZone(root=f"s3://{bucket}/landing")
    with zone.local_copy(MARCHE, "sub/ventes.parquet") as path:
        assert path.stat().st_size == len(body)
        assert content_hash(path) == hashlib.sha256(body).hexdigest()
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(FileNotFoundError, match="ventes_absent.parquet"):
        with zone.local_copy(MARCHE, "ventes_absent.parquet"):
            pass
    with pytest.raises(UnsafePathError):
        with zone.local_copy(MARCHE, "../other/ventes.parquet"):
            pass


def test_sensor_on_the_store_takes_each_object_version_once(s3_env, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("POS_LAKEHOUSE_ENV", "local")
    monkeypatch.setenv("POS_LAKEHOUSE_DATA", f"s3://{bucket}/data")
    monkeypatch.delenv("POS_LAKEHOUSE_LANDING", raising=False)
    from pos_lakehouse.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.resolve_sensor_def("retailer_landing_sensor")
    s3 = s3_env.client()

    def tick(cursor):
        with dg.DagsterInstance.ephemeral() as instance:
            with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as context:
                result = sensor(context)
        return result, result.cursor

    result, cursor = tick(None)
    assert not result.run_requests and f"s3://{bucket}/data/landing/{MARCHE}" in result.skip_reason.skip_message
    put(s3, bucket, f"data/landing/{MARCHE}/marche_fr_pos_2026-01-01.parquet", b"one")
    put(s3, bucket, f"data/landing/{MARCHE}/marche_fr_pos_2026-01-02.parquet.part", b"half")
    result, cursor = tick(cursor)
    files = [r.run_config["ops"][f"{MARCHE}_bronze"]["config"]["files"] for r in result.run_requests]
    assert files == [["marche_fr_pos_2026-01-01.parquet"]]
    assert json.loads(cursor)[MARCHE] == {"marche_fr_pos_2026-01-01.parquet": f"3:{hashlib.md5(b'one').hexdigest()}"}
    result, cursor = tick(cursor)
    assert not result.run_requests, "nothing changed: no run"
    put(s3, bucket, f"data/landing/{MARCHE}/marche_fr_pos_2026-01-01.parquet", b"ONE")  # a corrected re-delivery
    result, cursor = tick(cursor)
    assert [r.run_config["ops"][f"{MARCHE}_bronze"]["config"]["files"] for r in result.run_requests] == [
        ["marche_fr_pos_2026-01-01.parquet"]
    ]


def test_environment_switch_picks_the_landing_zone(monkeypatch, tmp_path):
    from pos_lakehouse.settings import current_settings

    monkeypatch.setenv("POS_LAKEHOUSE_DATA", "s3://corp-lake/pos/")
    monkeypatch.delenv("POS_LAKEHOUSE_LANDING", raising=False)
    settings = current_settings()
    assert settings.data_root == "s3://corp-lake/pos" and settings.remote
    zone = landing_zone_for(settings.landing_root)
    assert isinstance(zone, ObjectStoreLandingZone) and zone.root == "s3://corp-lake/pos/landing"

    monkeypatch.setenv("POS_LAKEHOUSE_LANDING", "abfss://landing@corpstore.dfs.core.windows.net/pos")
    monkeypatch.setenv("POS_LAKEHOUSE_LANDING_SETTLE_SECONDS", "120")
    monkeypatch.setenv("POS_LAKEHOUSE_LANDING_DONE_SUFFIX", ".done")
    settings = current_settings()
    zone = landing_zone_for(settings.landing_root, settings.landing_settle_seconds, settings.landing_done_suffix)
    assert (
        isinstance(zone, ObjectStoreLandingZone)
        and zone.describe("marche_fr") == "abfss://landing@corpstore.dfs.core.windows.net/pos/marche_fr"
    )
    assert (zone.settle_seconds, zone.done_suffix) == (120.0, ".done")
    # What `defs/resources.py` builds from the same environment.
    from pos_lakehouse.defs.resources import resources

    built = resources().resources["landing"]
    assert isinstance(built, ObjectStoreLandingZone) and built.root == zone.root and built.done_suffix == ".done"
    monkeypatch.setenv("POS_LAKEHOUSE_LANDING_SETTLE_SECONDS", "soon")
    with pytest.raises(ValueError, match="POS_LAKEHOUSE_LANDING_SETTLE_SECONDS"):
        current_settings()
    monkeypatch.delenv("POS_LAKEHOUSE_LANDING_SETTLE_SECONDS")
    monkeypatch.delenv("POS_LAKEHOUSE_LANDING_DONE_SUFFIX")

    monkeypatch.setenv("POS_LAKEHOUSE_DATA", str(tmp_path))
    monkeypatch.delenv("POS_LAKEHOUSE_LANDING")
    settings = current_settings()
    assert not settings.remote
    zone = landing_zone_for(settings.landing_root)
    assert isinstance(zone, LocalLandingZone) and zone.root == str(tmp_path / "landing")


# ---- Azure (Azurite) ---------------------------------------------------------------------------------
from object_store_server import azure_env, azure_server  # noqa: E402,F401 - fixtures


def test_azure_listing_identity_and_uncommitted_blocks(azure_env):
    import base64

    import obstore

    from pos_lakehouse.storage.object_store import store_for

    container = azure_env.new_container()
    zone = landing_zone_for(f"az://{container}/landing")
    assert isinstance(zone, ObjectStoreLandingZone)
    store = store_for(zone.root)
    obstore.put(store, f"landing/{MARCHE}/ventes_1.csv", b"a;b\n1;2\n")
    obstore.put(store, f"landing/{MARCHE}/ventes_2.csv.part", b"half")
    obstore.put(store, f"landing/{MARCHE}/_system/x.csv", b"x")

    # A block blob being uploaded: a block staged, the block list not committed yet.
    blob = f"{container}/landing/{MARCHE}/ventes_big.csv"
    block_id = base64.b64encode(b"block-000001").decode()
    azure_env.request("PUT", blob, {"comp": "block", "blockid": block_id}, body=b"z" * 2048)
    listed = zone.list_files(MARCHE)
    assert [f.name for f in listed] == ["ventes_1.csv"]
    first = listed[0].identity
    assert listed[0].etag and first == f"8:{listed[0].etag}"

    block_list = f'<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>{block_id}</Latest></BlockList>'.encode()
    azure_env.request("PUT", blob, {"comp": "blocklist"}, body=block_list, content_type="application/xml")
    assert [(f.name, f.size) for f in zone.list_files(MARCHE)] == [("ventes_1.csv", 8), ("ventes_big.csv", 2048)]

    obstore.put(store, f"landing/{MARCHE}/ventes_1.csv", b"a;b\n1;3\n")  # corrected re-delivery, same size
    assert next(f for f in zone.list_files(MARCHE) if f.name == "ventes_1.csv").identity != first
    with zone.local_copy(MARCHE, "ventes_big.csv") as path:
        assert path.read_bytes() == b"z" * 2048
    assert not path.exists()
