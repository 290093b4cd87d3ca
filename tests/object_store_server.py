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
