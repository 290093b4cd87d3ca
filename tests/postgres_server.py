"""A real PostgreSQL server on loopback, started by the tests in a temporary folder (binaries from
`.ci/install-services`); used by the database retailer tests and the PostgreSQL-instance test."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from ports import free_port


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0
    )
    return candidates[-1] if candidates else None


@dataclass(frozen=True)
class Server:
    port: int
    admin_password: str

    def create_database(self, role: str, password: str, database: str) -> str:
        """A database owned by a password-authenticated role (no superuser); returns its psycopg URL."""
        admin = sa.create_engine(
            f"postgresql+psycopg://postgres:{self.admin_password}@127.0.0.1:{self.port}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {role}"))
        admin.dispose()
        return f"postgresql+psycopg://{role}:{password}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    """Start a fresh server (skips the test when the binaries are missing); stopped and removed on exit."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; .ci/install-services installs Debian's postgresql")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="pos_lakehouse_pg_"))
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the `postgres` OS user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run the server as")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"
    port = free_port()
    admin_password = "admin-" + os.urandom(6).hex()
    pwfile = folder / "pw"
    pwfile.write_text(admin_password + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    subprocess.run(
        [
            *as_user,
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"], check=True, capture_output=True
    )
    try:
        yield Server(port, admin_password)
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
