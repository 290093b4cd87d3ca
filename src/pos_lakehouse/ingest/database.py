"""Database retailers: read each source table incrementally on its `updated_at` column, in chunks.

Per table the durable position is a watermark: the newest `updated_at` already in bronze,
committed with each chunk (see `ingest.pulled`). A pull reads
`updated_at >= watermark - lag` ordered by `updated_at` (then the primary key), streaming
`chunk_rows` rows at a time (a server-side cursor on PostgreSQL), so a large table never has to
fit in memory. The lag re-reads a window behind the watermark so transactions that commit late
(with an older `updated_at`) are still seen; rows of that window already in bronze (same values,
same `updated_at`) are dropped before appending, so re-reading never duplicates. A row updated
at the source has a new `updated_at`: it is appended as a new bronze row and silver upserts it.

The connection URL comes from the environment (`url_env`), or from YAML without a password
(`url`, with `password_env` for the secret); it is only ever shown with the password masked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url

from pos_lakehouse.ingest.pulled import (
    PullOutcome,
    append_pulled,
    commit_state,
    delivery_id,
    read_state,
    records_frame,
)
from pos_lakehouse.redaction import redact, redacting
from pos_lakehouse.retailer import DatabaseSpec, RetailerSpec
from pos_lakehouse.storage.lake import Lake


class SourceDatabaseError(RuntimeError):
    """The retailer's database could not be reached or read; the message names which and why (no secrets)."""


def _db(spec: RetailerSpec) -> DatabaseSpec:
    if spec.delivery.database is None:
        raise SourceDatabaseError(f"{spec.name}: delivery.database is not configured")
    return spec.delivery.database


def resolve_url(spec: RetailerSpec, data_root: str) -> URL:
    """The connection URL: `url_env` if set, else the YAML `url` (`{data_root}` expanded) plus `password_env`."""
    db = _db(spec)
    raw = os.environ.get(db.url_env, "").strip() if db.url_env else ""
    if not raw:
        if not db.url:
            raise SourceDatabaseError(f"{spec.name}: environment variable {db.url_env!r} with the database URL is not set")
        raw = db.url.replace("{data_root}", data_root.rstrip("/"))
    try:
        url = make_url(raw)
    except Exception:  # the message of a parse error could echo the secret
        raise SourceDatabaseError(
            f"{spec.name}: the database URL (from {db.url_env or 'delivery.database.url'}) is not a valid SQLAlchemy URL"
        ) from None
    if db.password_env and url.password is None:
        password = os.environ.get(db.password_env)
        if password is None:
            raise SourceDatabaseError(f"{spec.name}: environment variable {db.password_env!r} with the database password is not set")
        url = url.set(password=password)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("", "psycopg2"):
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver this project ships
    return url


def display_url(url: URL) -> str:
    """The URL to show: password masked, and any `password=`/`token=` parameter too."""
    return redact(url.render_as_string(hide_password=True))


@redacting
def engine_for(spec: RetailerSpec, data_root: str) -> Engine:
    url = resolve_url(spec, data_root)
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        raise SourceDatabaseError(f"{spec.name}: SQLite database {url.database} does not exist")
    return sa.create_engine(url, pool_pre_ping=True)


def _connect_error(spec: RetailerSpec, engine: Engine, exc: Exception) -> SourceDatabaseError:
    # Driver messages may quote the connection string: only the masked URL and the redacted first line are shown.
    first = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SourceDatabaseError(f"{spec.name}: cannot read database {display_url(engine.url)}: {redact(first)}")


def _table(engine: Engine, name: str) -> sa.Table:
    schema, _, table = name.rpartition(".")
    return sa.Table(table, sa.MetaData(), schema=schema or None, autoload_with=engine)


def _parse_ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def pull_table(
    lake: Lake,
    spec: RetailerSpec,
    table: str,
    engine: Engine,
    *,
    log: Callable[[str], None] | None = None,
) -> PullOutcome:
    """Append rows of one source table changed since the watermark (minus lag) to `bronze/<retailer>/<table>`."""
    db = _db(spec)
    source_name = db.tables[table]
    uri = lake.bronze(spec.name, table)
    state = read_state(lake, uri)
    outcome = PullOutcome(table, f"{display_url(engine.url)} {source_name}", state_before=dict(state))
    try:
        src = _table(engine, source_name)
    except sa_exc.NoSuchTableError:
        raise SourceDatabaseError(f"{spec.name}: table {source_name!r} not found in {display_url(engine.url)}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise _connect_error(spec, engine, exc) from exc
    if db.updated_at_column not in src.c:
        raise SourceDatabaseError(
            f"{spec.name}: table {source_name!r} has no column {db.updated_at_column!r} (delivery.database.updated_at_column); "
            f"it has {list(src.c.keys())}"
        )
    updated = src.c[db.updated_at_column]
    watermark = _parse_ts(state.get("watermark"))
    lower = watermark - timedelta(seconds=db.lag_seconds) if watermark else None
    order = [updated, *[c for c in src.primary_key.columns]] or [updated]
    query = sa.select(src).order_by(*order)
    if lower is not None:
        query = query.where(updated >= lower)
    bronze_cols: set[str] = set(lake.scan(uri).collect_schema().names()) if lake.exists(uri) else set()
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=db.chunk_rows).execute(query)
            columns = list(result.keys())
            for index, part in enumerate(result.partitions(db.chunk_rows)):
                outcome.requests += 1
                records = [dict(zip(columns, row)) for row in part]
                newest = max((r[db.updated_at_column] for r in records if r[db.updated_at_column] is not None), default=None)
                if newest is not None and newest.tzinfo is None and watermark is not None and watermark.tzinfo is not None:
                    newest = newest.replace(tzinfo=watermark.tzinfo)
                if newest is not None and (watermark is None or newest > watermark):
                    watermark = newest
                new_state = {"watermark": watermark.isoformat() if watermark else None}
                frame = records_frame(records, columns)
                read = frame.height
                frame = _drop_already_in_bronze(lake, uri, frame, db.updated_at_column, bronze_cols)
                outcome.duplicates_skipped += read - frame.height
                if frame.height:
                    did = delivery_id(spec.name, source_name, str(lower), str(index), frame.write_csv())
                    source = f"db:{source_name}?{db.updated_at_column}>={lower.isoformat() if lower else '-'}#chunk{index:05d}"
                    append_pulled(lake, spec, table, frame, source=source, delivery=did, state=new_state)
                    bronze_cols = set(lake.scan(uri).collect_schema().names())
                    outcome.deliveries += 1
                    outcome.rows += frame.height
                elif new_state != state:
                    commit_state(lake, spec, table, new_state)
                state = new_state
    except sa_exc.SQLAlchemyError as exc:
        raise _connect_error(spec, engine, exc) from exc
    outcome.state_after = state
    if log:
        log(outcome.describe())
    return outcome


def _drop_already_in_bronze(lake: Lake, uri: str, frame: pl.DataFrame, updated_col: str, bronze_cols: set[str]) -> pl.DataFrame:
    """Rows whose exact values (incl. `updated_at`) bronze already holds: the lag window and resumed chunks."""
    if not bronze_cols or frame.is_empty() or updated_col not in bronze_cols:
        return frame
    on = [c for c in frame.columns if c in bronze_cols]
    stamps = frame[updated_col].unique().drop_nulls().implode()
    have = lake.scan(uri).filter(pl.col(updated_col).is_in(stamps)).select(on).unique().collect()
    if have.is_empty():
        return frame
    return frame.join(have, on=on, how="anti", nulls_equal=True)


@redacting
def pull_database(
    lake: Lake,
    spec: RetailerSpec,
    tables: list[str] | None = None,
    *,
    engine: Engine | None = None,
    log: Callable[[str], None] | None = None,
) -> list[PullOutcome]:
    """Pull every (or the named) source table(s) of a database retailer into bronze; dimensions first."""
    from pos_lakehouse.ingest.api import pull_order

    own = engine is None
    engine = engine or engine_for(spec, lake.root)
    try:
        return [pull_table(lake, spec, name, engine, log=log) for name in pull_order(spec, tables)]
    finally:
        if own:
            engine.dispose()


@redacting
def probe_database(lake: Lake, spec: RetailerSpec, engine: Engine | None = None) -> dict[str, Any]:
    """Per table, `count:max(updated_at)` of rows newer than the watermark (None: nothing new)."""
    db = _db(spec)
    own = engine is None
    engine = engine or engine_for(spec, lake.root)
    news: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            for f in spec.delivery.files:
                src = _table(engine, db.tables[f.name])
                updated = src.c[db.updated_at_column]
                watermark = _parse_ts(read_state(lake, lake.bronze(spec.name, f.name)).get("watermark"))
                query = sa.select(sa.func.count(), sa.func.max(updated)).select_from(src)
                if watermark is not None:
                    query = query.where(updated > watermark)
                count, newest = conn.execute(query).one()
                news[f.name] = f"{count}:{newest}" if count else None
    except sa_exc.SQLAlchemyError as exc:
        raise _connect_error(spec, engine, exc) from exc
    finally:
        if own:
            engine.dispose()
    return news


def state_summary(lake: Lake, spec: RetailerSpec) -> str:
    return json.dumps({f.name: read_state(lake, lake.bronze(spec.name, f.name)) for f in spec.delivery.files}, sort_keys=True)
