"""SFTP landing zones: a retailer's landing folder on an SFTP server, behind the `LandingZone` interface.

The landing sensor lists it and the bronze run downloads exactly the files it was given, so
everything downstream (content-hash delivery ids, exactly-once, quarantine) is the same as for
a local folder. Half-uploaded files are never taken:

* hidden files are skipped, and uploads in progress, done markers (`done_suffix`) and the settle
  time (`settle_seconds`) follow the one rule of every landing zone (`landing.finished_uploads`);
* the download re-checks the file's size and mtime afterwards and refuses a file that changed.

Credentials come only from the environment variables named in the retailer's `delivery.sftp`;
the password is never logged or put into a message.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field

from pos_lakehouse.ingest.landing import LandedFile, LandingZone, finished_uploads, safe_relative
from pos_lakehouse.redaction import redact
from pos_lakehouse.retailer import RetailerSpec, SftpSpec


class SftpError(RuntimeError):
    """The SFTP landing zone could not be read; the message says which server, account and why (never the password)."""


def _run(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _env(name: str | None, what: str, retailer: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if value is None or value == "":
        raise SftpError(f"{retailer}: environment variable {name!r} holding the SFTP {what} is not set")
    return value


class SftpLandingZone(LandingZone):
    """A retailer's landing folder on an SFTP server (password auth from the environment)."""

    retailer: str = Field(description="Retailer whose folder this is (its account is confined to it).")
    host: str = Field(description="SFTP host.")
    port: int = Field(default=22, description="SFTP port.")
    username_env: str = Field(description="Environment variable holding the account name.")
    password_env: str = Field(description="Environment variable holding the password (never logged).")
    path: str = Field(default=".", description="Folder of the retailer's files, relative to the login folder.")
    known_hosts: str | None = Field(default=None, description="known_hosts file; null accepts any host key (loopback only).")
    settle_seconds: float = Field(default=0.0, description="Only files unmodified for this long are listed.")
    done_suffix: str | None = Field(default=None, description="Only files whose `<name><suffix>` marker exists are listed.")
    connect_timeout: float = Field(default=15.0, description="Seconds to wait for the server.")

    @classmethod
    def for_spec(cls, spec: RetailerSpec) -> SftpLandingZone:
        sftp: SftpSpec | None = spec.delivery.sftp
        if sftp is None:
            raise SftpError(f"{spec.name}: delivery.sftp is not configured")
        host = _env(sftp.host_env, "host", spec.name) if sftp.host_env else sftp.host
        if not host:
            raise SftpError(f"{spec.name}: delivery.sftp needs `host` or `host_env`")
        port_text = _env(sftp.port_env, "port", spec.name)
        port = int(port_text) if port_text else sftp.port
        return cls(
            retailer=spec.name,
            host=host,
            port=port,
            username_env=sftp.username_env,
            password_env=sftp.password_env,
            path=sftp.path,
            known_hosts=sftp.known_hosts,
            settle_seconds=sftp.settle_seconds,
            done_suffix=sftp.done_suffix,
        )

    # ---- connection ---------------------------------------------------------------------------
    def _username(self) -> str:
        return _env(self.username_env, "account name", self.retailer) or ""

    def describe(self, retailer: str | None = None) -> str:
        try:
            user = self._username()
        except SftpError:
            user = f"${self.username_env}"
        return redact(f"sftp://{user}@{self.host}:{self.port}/{self.path.lstrip('/')}")

    async def _connect(self):
        import asyncssh  # imported when a connection is made: loading the definitions does not need it

        username = self._username()
        password = _env(self.password_env, "password", self.retailer)
        where = redact(f"{self.retailer}: SFTP {username}@{self.host}:{self.port}")
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    self.host,
                    self.port,
                    username=username,
                    password=password,
                    known_hosts=self.known_hosts,
                    client_keys=None,
                    agent_path=None,
                    preferred_auth="password",
                ),
                timeout=self.connect_timeout,
            )
        except asyncssh.PermissionDenied:
            raise SftpError(
                f"{where}: login refused (wrong password or unknown account); check environment variables "
                f"{self.username_env!r} and {self.password_env!r}"
            ) from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SftpError(f"{where}: host key not verifiable against {self.known_hosts}: {redact(exc.reason)}") from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise SftpError(f"{where}: cannot connect: {type(exc).__name__}: {redact(exc)}") from None
        return conn

    def _remote(self, rel: str) -> str:
        return posixpath.normpath(posixpath.join(self.path or ".", rel))

    # ---- LandingZone ----------------------------------------------------------------------------
    def list_files(self, retailer: str) -> list[LandedFile]:
        return _run(self._list())

    async def _list(self) -> list[LandedFile]:
        import asyncssh
        from asyncssh.constants import FILEXFER_TYPE_DIRECTORY, FILEXFER_TYPE_REGULAR

        conn = await self._connect()
        try:
            async with conn.start_sftp_client() as sftp:
                entries: dict[str, asyncssh.SFTPAttrs] = {}
                base = self.path or "."
                if not await sftp.isdir(base):
                    return []
                pending = [""]
                while pending:
                    rel_dir = pending.pop()
                    for entry in await sftp.readdir(posixpath.join(base, rel_dir) if rel_dir else base):
                        # A str path lists str names (asyncssh types a name as str or bytes).
                        name: str = entry.filename  # pyright: ignore[reportAssignmentType]
                        if name in (".", "..") or name.startswith((".", "~$", "_")):
                            continue
                        rel = posixpath.join(rel_dir, name) if rel_dir else name
                        kind = entry.attrs.type
                        if kind == FILEXFER_TYPE_DIRECTORY or (entry.attrs.permissions and stat.S_ISDIR(entry.attrs.permissions)):
                            pending.append(rel)
                        elif kind == FILEXFER_TYPE_REGULAR or (entry.attrs.permissions and stat.S_ISREG(entry.attrs.permissions)):
                            entries[rel] = entry.attrs
        finally:
            conn.close()
        found = []
        for rel, attrs in finished_uploads(entries, _modified_ns, self.settle_seconds, self.done_suffix):
            found.append(LandedFile(self.retailer, rel, int(attrs.size or 0), _modified_ns(rel, attrs)))
        return sorted(found, key=lambda f: f.name)

    @contextmanager
    def local_copy(self, retailer: str, name: str) -> Iterator[Path]:
        rel = safe_relative(name)
        tmp = Path(tempfile.mkdtemp(prefix=f"sftp_{self.retailer}_"))
        target = tmp / posixpath.basename(rel)
        try:
            _run(self._download(rel, target))
            yield target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _download(self, rel: str, target: Path) -> None:
        import asyncssh

        remote = self._remote(rel)
        conn = await self._connect()
        try:
            async with conn.start_sftp_client() as sftp:
                try:
                    before = await sftp.stat(remote)
                    await sftp.get(remote, str(target), preserve=False)
                    after = await sftp.stat(remote)
                except asyncssh.SFTPNoSuchFile:
                    raise FileNotFoundError(f"{self.retailer}: {rel!r} is not on the SFTP server any more (moved or deleted?)") from None
                except asyncssh.SFTPError as exc:
                    raise SftpError(f"{self.retailer}: cannot download {rel!r}: {exc.reason}") from None
        finally:
            conn.close()
        if (before.size, before.mtime) != (after.size, after.mtime) or target.stat().st_size != after.size:
            raise SftpError(
                f"{self.retailer}: {rel!r} changed while it was downloaded ({before.size} -> {after.size} bytes): "
                "still being uploaded; it will be taken once it is complete"
            )


def _modified_ns(_: str, attrs) -> int:
    return int((attrs.mtime or 0) * 1_000_000_000)


def landing_for(spec: RetailerSpec, landing: LandingZone) -> LandingZone:
    """The landing zone of this retailer: its SFTP folder when `delivery.channel` is sftp, else the shared one."""
    if spec.delivery.channel == "sftp":
        return SftpLandingZone.for_spec(spec)
    return landing
