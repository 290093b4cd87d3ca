"""Is a retailer's source configured here, and the failure a sensor raises when a configured one cannot be reached.

A source whose settings are missing from this environment (no URL, token or password variable)
is skipped with a note: this deployment does not serve it. A configured source that does not
answer (refused, timed out, wrong password) is a failure: the sensor's tick fails naming each
retailer, the host and the reason, so `dg dev` shows it red and `pos-lakehouse run` counts it and
exits non-zero. A tick still requests the runs of the retailers it could reach; it fails only when
it requests none, so one retailer's dead source never holds back another's deliveries (and a
run's last tick, once everything is processed, reports it).
"""

from __future__ import annotations

import os
from pathlib import Path

from pos_lakehouse.redaction import redact
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import current_settings


def settings_missing(spec: RetailerSpec) -> str | None:
    """Why a retailer's source (API, database, SFTP server) cannot be reached from this environment, or None."""
    d = spec.delivery
    needed: list[str | None] = []
    if d.channel == "api" and d.api:
        needed = [d.api.token_env, *([d.api.base_url_env] if not d.api.base_url and d.api.base_url_env else [])]
    elif d.channel == "database" and d.database:
        needed = [d.database.url_env] if not d.database.url and d.database.url_env else []
    elif d.channel == "sftp" and d.sftp:
        needed = [d.sftp.username_env, d.sftp.password_env] + ([d.sftp.host_env] if d.sftp.host_env or not d.sftp.host else [])
    missing = [v for v in needed if v and not os.environ.get(v)]
    if missing:
        return f"{', '.join(missing)} not set"
    if d.channel == "database" and d.database and not (d.database.url_env and os.environ.get(d.database.url_env)):
        return _demo_database_missing(d.database.url or "")
    return None


def _demo_database_missing(url: str) -> str | None:
    """The embedded demo warehouse (a SQLite file under the data root) is this environment's
    source only once the demo made it; before that the retailer is not served here."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = Path(url[len(prefix) :].replace("{data_root}", current_settings().data_root.rstrip("/")))
    return None if path.exists() else f"its demo warehouse {path} does not exist (`pos-lakehouse demo` makes it)"


class SourcesUnreachable(Exception):
    """Configured sources that could not be asked; the message names each retailer first, then why."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.retailers = [name for name, _ in failures]
        why = "; ".join(redact(message) for _, message in failures)
        super().__init__(f"source unreachable for {', '.join(self.retailers)}: {why}")


def sort_failures(spec: RetailerSpec, message: str, unreachable: list[tuple[str, str]], notes: list[str]) -> None:
    """File a source's failure: a note when it is not configured here, else one of the unreachable."""
    if settings_missing(spec):
        notes.append(message)
    else:
        unreachable.append((spec.name, message))
