"""Start the retailers' own systems on loopback for the demo (and tests): API, warehouse, SFTP server.

`start_demo_services(data_root)` is a context manager: it fills the simulated sources, starts
the servers, puts their addresses and credentials into the environment variables the retailer
YAMLs name (nothing is written into YAML), and stops everything when the block ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pos_lakehouse.retailer import RetailerSpec, load_retailer_specs
from pos_lakehouse.settings import retailers_dir

if TYPE_CHECKING:  # imported where the server starts: asyncssh is loaded only when it does
    from pos_lakehouse.demo.sftp_server import SftpServer

SetEnv = Callable[[str, str], None]


def _setenv(name: str, value: str) -> None:
    os.environ[name] = value


@dataclass
class DemoServices:
    """What is running, for messages (never the secrets)."""

    started: list[str] = field(default_factory=list)
    api: object | None = None
    database: object | None = None
    sftp: SftpServer | None = None


def _specs(channel: str, only: list[str] | None = None) -> list[RetailerSpec]:
    return [s for s in load_retailer_specs(retailers_dir()) if s.delivery.channel == channel and (not only or s.name in only)]


@contextmanager
def serve_sftp_landing(landing_root: Path, setenv: SetEnv = _setenv, only: list[str] | None = None) -> Iterator[SftpServer | None]:
    """An SFTP server whose disk is `landing_root`: each sftp retailer's account sees only `<landing_root>/<retailer>/`.

    The account name, a fresh random password, host and port go into the variables the
    retailer's `delivery.sftp` names. Yields the server (None when no retailer uses SFTP).
    """
    from pos_lakehouse.demo.sftp_server import SftpServer

    specs = _specs("sftp", only)
    if not specs:
        yield None
        return
    accounts = {s.name: secrets.token_urlsafe(16) for s in specs}
    server = SftpServer(Path(landing_root), accounts)
    server.start()
    try:
        for s in specs:
            sftp = s.delivery.sftp
            assert sftp is not None  # only sftp retailers are served
            setenv(sftp.username_env, s.name)
            setenv(sftp.password_env, accounts[s.name])
            if sftp.host_env:
                setenv(sftp.host_env, "127.0.0.1")
            if sftp.port_env:
                setenv(sftp.port_env, str(server.port))
        yield server
    finally:
        server.stop()


@contextmanager
def start_demo_services(data_root: Path, only: list[str] | None = None, setenv: SetEnv = _setenv) -> Iterator[DemoServices]:
    """Fill and start every simulated source the demo retailers need; stop them on exit.

    - api retailers (shopnow_us): the FastAPI simulator with some days of sales and occasional 429/503;
    - database retailers (highstreet_uk): the warehouse at `HIGHSTREET_DB_URL` if set, else the embedded SQLite file;
    - sftp retailers (kaufhalle_de): an SFTP server over `<data_root>/landing`.
    Each writes the expected totals (`<data_root>/expected/<retailer>.csv`) for reconciliation.
    """
    data_root = Path(data_root)
    services = DemoServices()
    with ExitStack() as stack:
        if _specs("api", only) and (not only or "shopnow_us" in only):
            from pos_lakehouse.demo.api_simulator import ApiSimulator, ShopNowData
            from pos_lakehouse.demo.generator import DEMO_LAST_DAY

            # 21 days of sales up to yesterday.
            data = ShopNowData(start=DEMO_LAST_DAY - timedelta(days=20))
            data.add_days(21)
            data.write_expected(data_root / "expected")
            sim = ApiSimulator(
                data,
                token=secrets.token_urlsafe(24),
                fault_rate=0.05,
                request_log=data_root / "sources" / "shopnow_us" / "requests.jsonl",
            )
            sim.start()
            stack.callback(sim.stop)
            setenv("SHOPNOW_API_URL", sim.base_url or "")
            setenv("SHOPNOW_API_TOKEN", sim.token)
            services.api = sim
            services.started.append(f"shopnow_us API simulator at {sim.base_url}")
        if _specs("database", only) and (not only or "highstreet_uk" in only):
            from pos_lakehouse.demo.retailer_db import sqlite_url, write_highstreet_uk

            url = os.environ.get("HIGHSTREET_DB_URL") or sqlite_url(data_root / "sources" / "highstreet_uk" / "warehouse.sqlite")
            from pos_lakehouse.demo.generator import DEMO_LAST_DAY

            # 30 days of trading up to yesterday.
            db = write_highstreet_uk(url, data_root / "expected", days=30, start=DEMO_LAST_DAY - timedelta(days=29))
            stack.callback(db.dispose)
            services.database = db
            services.started.append(f"highstreet_uk warehouse {db.engine.url.render_as_string(hide_password=True)}")
        server = stack.enter_context(serve_sftp_landing(data_root / "landing", setenv, only))
        if server is not None:
            services.sftp = server
            services.started.append(f"SFTP server at 127.0.0.1:{server.port} over {data_root / 'landing'}")
        yield services
