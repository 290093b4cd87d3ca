"""kaufhalle_de's landing folder on a real SFTP server on loopback (asyncssh): listing, exactly-once, half uploads, auth, confinement."""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest
from conftest import spec_named

from pos_lakehouse.demo.file_retailers import write_kaufhalle_de
from pos_lakehouse.demo.sftp_server import SftpServer
from pos_lakehouse.ingest.reachability import SourcesUnreachable
from pos_lakehouse.ingest.sftp import SftpError, SftpLandingZone

RETAILER = "kaufhalle_de"


@pytest.fixture
def server(tmp_path):
    with SftpServer(tmp_path / "sftp", {RETAILER: "k-pass-1", "other_retailer": "o-pass-2"}) as srv:
        yield srv


def zone(server: SftpServer, monkeypatch, **settings) -> SftpLandingZone:
    monkeypatch.setenv("T_SFTP_USER", RETAILER)
    monkeypatch.setenv("T_SFTP_PASSWORD", "k-pass-1")
    return SftpLandingZone(
        retailer=RETAILER, host="127.0.0.1", port=server.port, username_env="T_SFTP_USER", password_env="T_SFTP_PASSWORD", **settings
    )


async def _session(port: int, user: str, password: str, fn):
    async with asyncssh.connect("127.0.0.1", port, username=user, password=password, known_hosts=None, client_keys=None) as conn:
        async with conn.start_sftp_client() as sftp:
            return await fn(sftp)


def as_retailer(server: SftpServer, fn, user: str = RETAILER, password: str = "k-pass-1"):
    return asyncio.run(_session(server.port, user, password, fn))


def test_the_kaufhalle_yaml_lands_over_sftp():
    spec = spec_named(RETAILER)
    assert spec.delivery.channel == "sftp" and spec.delivery.sftp.password_env and spec.delivery.sftp.username_env


def test_new_files_are_ingested_once(data_root, lake, headless):
    # The test session serves <data root>/landing over SFTP (conftest), as `pos-lakehouse demo` does:
    # kaufhalle_de's account sees only its own folder, and the pipeline downloads through the protocol.
    # (tests/test_file_retailers.py carries kaufhalle_de on through silver and gold and reconciles it.)
    landing = data_root / "landing" / RETAILER
    files = write_kaufhalle_de(landing, data_root / "expected", weeks=1, n_products=20, n_stores=3)
    runs = headless.tick_landing()
    assert [r.name for r in runs] == [f"{RETAILER}_ingest"] and runs[0].success, [r.error for r in runs]
    spec = spec_named(RETAILER)

    def delivered() -> list[str]:
        names = []
        for fs in spec.delivery.files:
            names += lake.scan(lake.bronze(RETAILER, fs.name)).select("_source_file").collect()["_source_file"].unique().to_list()
        return sorted(names)

    assert delivered() == sorted(f.name for f in files)
    rows = {fs.name: lake.row_count(lake.bronze(RETAILER, fs.name)) for fs in spec.delivery.files}
    # A second look at the server finds nothing new; a new upload is taken, alone.
    assert headless.tick_landing() == []
    extra = write_kaufhalle_de(data_root / "staging", data_root / "expected_2", weeks=2, n_products=20, n_stores=3)[-1]
    (landing / extra.name).write_bytes(extra.read_bytes())
    runs = headless.tick_landing()
    assert len(runs) == 1 and runs[0].success
    assert delivered() == sorted([*(f.name for f in files), extra.name])
    assert {fs.name: lake.row_count(lake.bronze(RETAILER, fs.name)) for fs in spec.delivery.files if fs.name != "sales"} == {
        k: v for k, v in rows.items() if k != "sales"
    }


def test_listing_and_download_through_the_landing_zone(server, monkeypatch):
    (server.folder(RETAILER) / "sub").mkdir()
    (server.folder(RETAILER) / "a.csv").write_text("x;y\n1;2\n")
    (server.folder(RETAILER) / "sub" / "b.csv").write_text("x;y\n3;4\n")
    (server.folder(RETAILER) / "c.csv.part").write_text("x;y\n")  # an upload in progress under a temporary name
    (server.folder("other_retailer") / "theirs.csv").write_text("secret\n")
    z = zone(server, monkeypatch)
    assert [f.name for f in z.list_files(RETAILER)] == ["a.csv", "sub/b.csv"]
    with z.local_copy(RETAILER, "sub/b.csv") as path:
        assert path.read_text() == "x;y\n3;4\n"
    assert "k-pass-1" not in z.describe(RETAILER)


def test_a_file_still_being_uploaded_is_not_taken(server, monkeypatch):
    z = zone(server, monkeypatch, settle_seconds=1.5)

    async def upload_in_two_halves(sftp):
        async with sftp.open("sales_big.csv", "wb") as fh:
            await fh.write(b"a;b\n" + b"1;2\n" * 1000)
            half_listing = await asyncio.to_thread(z.list_files, RETAILER)  # the client is mid-upload
            await fh.write(b"3;4\n" * 1000)
        return half_listing

    assert as_retailer(server, upload_in_two_halves) == []
    assert z.list_files(RETAILER) == []  # complete but not yet settled
    time.sleep(2.1)
    listed = z.list_files(RETAILER)
    assert [(f.name, f.size) for f in listed] == [("sales_big.csv", 4 + 2000 * 4)]


def test_upload_complete_marker(server, monkeypatch):
    z = zone(server, monkeypatch, done_suffix=".done")
    (server.folder(RETAILER) / "sales_1.csv").write_text("a;b\n1;2\n")
    assert z.list_files(RETAILER) == []
    (server.folder(RETAILER) / "sales_1.csv.done").write_text("")
    assert [f.name for f in z.list_files(RETAILER)] == ["sales_1.csv"]


def test_wrong_password_fails_clearly(server, monkeypatch):
    z = zone(server, monkeypatch)
    monkeypatch.setenv("T_SFTP_PASSWORD", "not-the-password")
    with pytest.raises(SftpError, match="login refused") as info:
        z.list_files(RETAILER)
    assert "T_SFTP_PASSWORD" in str(info.value) and "not-the-password" not in str(info.value)
    monkeypatch.delenv("T_SFTP_PASSWORD")
    with pytest.raises(SftpError, match="'T_SFTP_PASSWORD'.*not set"):
        z.list_files(RETAILER)


def test_wrong_password_shows_on_the_sensor_tick(data_root, defs, instance, monkeypatch):
    import dagster as dg

    monkeypatch.setenv("KAUFHALLE_SFTP_PASSWORD", "not-the-password")
    sensor = defs.resolve_sensor_def("retailer_landing_sensor")
    # A configured server that refuses the login fails the tick (nothing else is delivered here).
    with dg.build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources) as context:
        with pytest.raises(SourcesUnreachable, match="login refused") as info:
            sensor(context)
    assert info.value.retailers == ["kaufhalle_de"] and "not-the-password" not in str(info.value)


def test_the_account_cannot_leave_its_folder(server, tmp_path):
    (server.folder("other_retailer") / "theirs.csv").write_text("secret\n")
    outside = server.root.parent / "outside.txt"
    outside.write_text("host file\n")
    (tmp_path / "client").mkdir()
    local = tmp_path / "client" / "evil.csv"
    local.write_text("evil\n")

    async def attempts(sftp):
        outcomes = {}
        for name, path in {
            "sibling": "../other_retailer/theirs.csv",
            "absolute": "/../other_retailer/theirs.csv",
            "host": "../../outside.txt",
        }.items():
            try:
                await sftp.get(path, str(tmp_path / "client" / f"got_{name}"))
                outcomes[f"read_{name}"] = "read"
            except asyncssh.SFTPError as exc:
                outcomes[f"read_{name}"] = type(exc).__name__
        for name, path in {"sibling": "../other_retailer/evil.csv", "host": "../../evil.csv"}.items():
            try:
                await sftp.put(str(local), path)
                outcomes[f"write_{name}"] = "written"
            except asyncssh.SFTPError as exc:
                outcomes[f"write_{name}"] = type(exc).__name__
        try:
            await sftp.symlink("/etc/passwd", "passwd_link")
            outcomes["symlink"] = "created"
        except asyncssh.SFTPError as exc:
            outcomes["symlink"] = type(exc).__name__
        outcomes["root_listing"] = sorted(await sftp.listdir("/.."))
        return outcomes

    outcomes = as_retailer(server, attempts)
    assert all(v != "read" for k, v in outcomes.items() if k.startswith("read_")), outcomes
    assert not (tmp_path / "client" / "got_sibling").exists() and not (tmp_path / "client" / "got_host").exists()
    assert outcomes["symlink"] == "SFTPPermissionDenied"
    assert "other_retailer" not in outcomes["root_listing"]
    # Whatever a write to `..` did, it stayed inside the retailer's own folder.
    assert not (server.folder("other_retailer") / "evil.csv").exists()
    assert not (server.root / "evil.csv").exists() and not (server.root.parent / "evil.csv").exists()
    assert {p.name for p in server.folder("other_retailer").iterdir()} == {"theirs.csv"}
    assert not (server.folder(RETAILER) / "passwd_link").exists()
