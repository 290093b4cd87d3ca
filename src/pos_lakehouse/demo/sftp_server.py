"""An SFTP server for retailers' landing folders (asyncssh) on loopback, one confined account per retailer.

Each account logs in with a password and sees only `<root>/<account>/` as `/` (chroot): `..`
cannot leave it, symlinks and hard links cannot be created, and shells, exec and port
forwarding are refused. Used by the demo and the tests as the real server a retailer uploads to.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from pathlib import Path

import asyncssh


class _Auth(asyncssh.SSHServer):
    def __init__(self, accounts: dict[str, str]):
        self._accounts = accounts

    def begin_auth(self, username: str) -> bool:
        return True  # always require authentication

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        expected = self._accounts.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


class _ConfinedSftp(asyncssh.SFTPServer):
    """SFTP confined to the account's own folder."""

    root: Path

    def __init__(self, chan: asyncssh.SSHServerChannel):
        username = chan.get_extra_info("username")
        home = (self.root / username).resolve()
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(chan, chroot=str(home).encode())

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("symbolic links are not allowed on this server")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("hard links are not allowed on this server")


class SftpServer:
    """`with SftpServer(root, {"kaufhalle_de": "secret"}) as server: server.port` — serves until the block ends."""

    def __init__(self, root: Path, accounts: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root).resolve()
        self.accounts = dict(accounts)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None

    def folder(self, account: str) -> Path:
        return self.root / account

    def start(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        for account in self.accounts:
            self.folder(account).mkdir(parents=True, exist_ok=True)
        sftp_class = type("RetailerSftp", (_ConfinedSftp,), {"root": self.root})
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            key = asyncssh.generate_private_key("ssh-ed25519")
            self._acceptor = await asyncssh.create_server(
                lambda: _Auth(self.accounts),
                self.host,
                self.port,
                server_host_keys=[key],
                sftp_factory=sftp_class,
                allow_scp=False,
                agent_forwarding=False,
                x11_forwarding=False,
            )
            self.port = self._acceptor.get_port()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="sftp-server", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("the SFTP server did not start")
        if failure:
            raise RuntimeError(f"the SFTP server did not start: {failure[0]}")
        return self.port

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._acceptor is not None:
                self._acceptor.close()
                await self._acceptor.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> SftpServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
