"""The local mirror the DuckDB views read when gold lives in an object store, and quarantine copies."""

from __future__ import annotations

from pathlib import Path

import obstore
from object_store_server import bucket, s3_env, s3_server  # noqa: F401 - fixtures

from pos_lakehouse.storage.object_store import is_remote, mirror, put_bytes, put_file, split, store_for


def test_mirror_downloads_each_file_once_and_keeps_one_previous_generation(s3_env, bucket, tmp_path):
    store = store_for(f"s3://{bucket}")
    for name in "abc":
        obstore.put(store, f"gold/t/{name}.parquet", name.encode() * 3)
    uri = {n: f"s3://{bucket}/gold/t/{n}.parquet" for n in "abc"}
    cache = tmp_path / "files"

    first = mirror([uri["a"], uri["b"]], cache)
    assert [Path(p).read_bytes() for p in first] == [b"aaa", b"bbb"]
    stamp = Path(first[1]).stat().st_mtime_ns
    second = mirror([uri["b"], uri["c"]], cache)
    assert second[0] == first[1] and Path(second[0]).stat().st_mtime_ns == stamp, "b is reused, not downloaded again"
    assert Path(first[0]).exists(), "a belongs to the previous generation: a reader of the old views still finds it"
    mirror([uri["c"]], cache)
    assert not Path(first[0]).exists(), "two generations later a is removed"
    assert Path(second[0]).exists()
    # Local files are passed through untouched.
    local = tmp_path / "x.parquet"
    local.write_bytes(b"x")
    assert mirror([str(local)], tmp_path / "other") == [str(local)]


def test_put_file_and_bytes_to_a_store_and_to_a_folder(s3_env, bucket, tmp_path):
    source = tmp_path / "rejected.csv"
    source.write_bytes(b"a;b\n\xff\xfe")
    for target in (f"s3://{bucket}/quarantine/x/files/rejected.csv", str(tmp_path / "quarantine" / "x" / "rejected.csv")):
        put_file(source, target)
        put_bytes(target + ".reason.json", b'{"reason": "encoding"}')
        if is_remote(target):
            store, key = store_for(target), split(target)[1]
            assert bytes(obstore.get(store, key).bytes()) == source.read_bytes()
            assert bytes(obstore.get(store, key + ".reason.json").bytes()) == b'{"reason": "encoding"}'
        else:
            assert Path(target).read_bytes() == source.read_bytes()
            assert Path(target + ".reason.json").read_text() == '{"reason": "encoding"}'
    assert split("s3a://bucket/a/b/") == ("s3://bucket", "a/b")
    assert split("abfss://c@acct.dfs.core.windows.net/pos/x") == ("abfss://c@acct.dfs.core.windows.net", "pos/x")
    assert not is_remote("/data/pos") and not is_remote("file:///data/pos") and is_remote("gs://b/p")
