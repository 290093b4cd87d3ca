"""A real S3-compatible server on loopback for the object-store tests: moto's standalone server.

It runs in a child process, not a thread of the test process: some deltalake calls (the commit
history the bookmarks read) hold the GIL while they wait for the store, which would freeze a
server thread living in the same interpreter. The child stops when its stdin closes, so it never
outlives the tests.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest
from ports import free_port

_SERVE = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """The variables an AWS SDK reads; delta-rs, Polars and obstore read exactly these."""
        return {
            "AWS_ACCESS_KEY_ID": "loopback",
            "AWS_SECRET_ACCESS_KEY": "loopback-secret",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def start_server():
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise RuntimeError("moto server did not start (is moto[server] installed? `uv sync`)")
    return proc, S3Server(f"http://127.0.0.1:{int(line)}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def s3_server():
    proc, server = start_server()
    try:
        yield server
    finally:
        stop_server(proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The loopback server's credentials and endpoint in the environment, nothing else of AWS's."""
    import os

    for key in list(os.environ):
        if key.startswith(("AWS_", "AZURE_")):
            monkeypatch.delenv(key)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    return s3_env.new_bucket()


# ---- Azure: Azurite (Microsoft's Blob Storage emulator, from npm) on loopback --------------------------
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_VERSION = "2021-08-06"


def azurite_binary() -> str | None:
    """`azurite-blob`: `$AZURITE_BLOB`, on PATH, or where `.ci/install-services` puts it."""
    import os
    import shutil
    from pathlib import Path

    candidates = [
        os.environ.get("AZURITE_BLOB"),
        shutil.which("azurite-blob"),
        str(Path.home() / ".cache" / "pos_lakehouse" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
    ]
    return next((c for c in candidates if c and Path(c).exists()), None)


@dataclass
class AzureServer:
    endpoint: str

    def env(self) -> dict[str, str]:
        """What an Azure SDK reads for the emulator; delta-rs, Polars and obstore read exactly these."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.endpoint,
            "AZURE_ALLOW_HTTP": "true",
        }

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: bytes = b"", content_type: str = ""):
        """A SharedKey-signed Blob REST call (container creation and block uploads, which obstore does not expose)."""
        import base64
        import hashlib
        import hmac
        from email.utils import formatdate

        import httpx

        query = query or {}
        date = formatdate(usegmt=True)
        canon_headers = f"x-ms-date:{date}\nx-ms-version:{AZURITE_VERSION}\n"
        canon_resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
        length = str(len(body)) if body else ""
        to_sign = f"{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n" + canon_headers + canon_resource
        signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
        headers = {"x-ms-date": date, "x-ms-version": AZURITE_VERSION, "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}"}
        if content_type:
            headers["Content-Type"] = content_type
        response = httpx.request(method, f"{self.endpoint}/{AZURITE_ACCOUNT}/{path}", params=query, headers=headers, content=body)
        response.raise_for_status()
        return response

    def new_container(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.request("PUT", name, {"restype": "container"})
        return name


@pytest.fixture(scope="module")
def azure_server(tmp_path_factory):
    import socket
    import time

    binary = azurite_binary()
    if binary is None:
        pytest.skip("Azurite is not installed (.ci/install-services installs it from npm)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(tmp_path_factory.mktemp("azurite")),
            "--silent",
            "--skipApiVersionCheck",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("Azurite exited at start")
                time.sleep(0.1)
        yield AzureServer(f"http://127.0.0.1:{port}")
    finally:
        # Azurite waits ~20 s on SIGTERM for connections to drain; its store is a temporary folder, so
        # nothing is lost by killing it.
        proc.kill()
        proc.wait(timeout=20)


@pytest.fixture
def azure_env(azure_server: AzureServer, monkeypatch: pytest.MonkeyPatch) -> AzureServer:
    import os

    for key in list(os.environ):
        if key.startswith(("AWS_", "AZURE_", "AZURITE_")):
            monkeypatch.delenv(key)
    for key, value in azure_server.env().items():
        monkeypatch.setenv(key, value)
    return azure_server


@pytest.fixture(params=["s3", "azure"])
def store_root(request) -> str:
    """A fresh bucket/container on a loopback server, its variables in the environment: `<scheme>://<name>/pos`."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_env")
        return f"s3://{server.new_bucket()}/pos"
    server = request.getfixturevalue("azure_env")
    return f"az://{server.new_container()}/pos"
