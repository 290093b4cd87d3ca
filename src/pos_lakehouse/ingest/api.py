"""REST API retailers: page through each endpoint from the durable position, one bronze delivery per page.

Protocol (what `delivery.api` describes): `GET <base_url><endpoint>?limit=N[&updated_after=T][&cursor=C]`
with `Authorization: Bearer <token>` answers `{"data": [records...], "next_cursor": C | null}`,
records ordered by their `updated_at`. The position per endpoint is
`{"updated_after": T, "cursor": C, "high": H}`: while paging, `cursor` is the next page of the
listing that started at `T`; when the listing ends, `updated_after` moves to the newest
`updated_at` seen (`H`). It is committed with each page (see `ingest.pulled`), so:

* the next run asks only for records changed after the last one it has (incremental);
* a run that dies on page k resumes at page k, and the pages before are neither lost nor re-appended;
* a page that is somehow fetched again (same request, same content) has the same delivery id and is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from pos_lakehouse.ingest.pulled import (
    PullOutcome,
    already_in_bronze,
    append_pulled,
    commit_state,
    delivery_id,
    read_state,
    records_frame,
)
from pos_lakehouse.redaction import redact, redacting
from pos_lakehouse.retailer import ApiSpec, RetailerSpec
from pos_lakehouse.storage.lake import Lake

logger = logging.getLogger(__name__)
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 30.0


class ApiError(RuntimeError):
    """The retailer API could not be read; the message says which call and why."""


class ApiAuthError(ApiError):
    """The API refused our credentials (401/403): retrying cannot help."""


def _api(spec: RetailerSpec) -> ApiSpec:
    if spec.delivery.api is None:
        raise ApiError(f"{spec.name}: delivery.api is not configured")
    return spec.delivery.api


def resolve_base_url(spec: RetailerSpec) -> str:
    api = _api(spec)
    url = (os.environ.get(api.base_url_env) if api.base_url_env else None) or api.base_url
    if not url:
        raise ApiError(
            f"{spec.name}: no API address: set environment variable {api.base_url_env!r}"
            if api.base_url_env
            else f"{spec.name}: delivery.api.base_url is empty"
        )
    return url.rstrip("/")


def resolve_token(spec: RetailerSpec) -> str:
    api = _api(spec)
    token = os.environ.get(api.token_env, "").strip()
    if not token:
        raise ApiAuthError(f"{spec.name}: environment variable {api.token_env!r} holding the API token is not set")
    return token


@dataclass
class ApiClient:
    """GETs with bearer auth, retrying 429/5xx/network errors with backoff; never logs the token."""

    retailer: str
    base_url: str = field(repr=False)  # may carry user-info
    token: str = field(repr=False)
    api: ApiSpec
    sleep: Callable[[float], None] = time.sleep
    requests: int = 0

    def __post_init__(self) -> None:
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
            timeout=self.api.timeout_seconds,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        where = redact(f"GET {self.base_url}{path}")  # names the source, never its credentials
        last = ""
        for attempt in range(self.api.max_retries + 1):
            delay = self.api.backoff_seconds * (2**attempt)
            try:
                self.requests += 1
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                last = redact(f"network error: {type(exc).__name__}: {exc}")
            else:
                status = response.status_code
                if status in (401, 403):
                    raise ApiAuthError(
                        f"{self.retailer}: {where} answered {status} {response.reason_phrase}: the API refused the "
                        f"token from environment variable {self.api.token_env!r} (missing, expired or wrong); "
                        "no data was read from this endpoint"
                    )
                if status < 300:
                    try:
                        body = response.json()
                    except ValueError:
                        raise ApiError(
                            f"{self.retailer}: {where} answered {status} but not JSON: {redact(response.text)[:200]!r}"
                        ) from None
                    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                        raise ApiError(
                            f"{self.retailer}: {where}: expected {{'data': [...], 'next_cursor': ...}}, got {redact(body)[:200]}"
                        )
                    return body
                if status not in RETRYABLE:
                    raise ApiError(f"{self.retailer}: {where} answered {status} {response.reason_phrase}: {redact(response.text)[:300]}")
                last = f"{status} {response.reason_phrase}"
                retry_after = response.headers.get("Retry-After")
                if retry_after:
                    try:
                        delay = min(float(retry_after), MAX_RETRY_AFTER)
                    except ValueError:
                        pass
            if attempt < self.api.max_retries:
                logger.warning("%s: %s -> %s; retry %d/%d in %.2fs", self.retailer, where, last, attempt + 1, self.api.max_retries, delay)
                self.sleep(delay)
        raise ApiError(f"{self.retailer}: {where} still failing after {self.api.max_retries} retries (last: {last})")


@redacting
def client_for(spec: RetailerSpec) -> ApiClient:
    return ApiClient(spec.name, resolve_base_url(spec), resolve_token(spec), _api(spec))


def _ts(value: Any) -> datetime:
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


def _newest(values: list[Any], current: str | None) -> str | None:
    best = current
    for v in values:
        if v is None:
            continue
        if best is None or _ts(v) > _ts(best):
            best = str(v)
    return best


def pull_endpoint(
    lake: Lake,
    spec: RetailerSpec,
    table: str,
    client: ApiClient,
    *,
    state: dict[str, Any] | None = None,
    max_pages: int | None = None,
    log: Callable[[str], None] | None = None,
) -> PullOutcome:
    """Page one endpoint into `bronze/<retailer>/<table>` from the durable position (or `state`, for tests)."""
    api = _api(spec)
    path = api.endpoints[table]
    uri = lake.bronze(spec.name, table)
    state = dict(read_state(lake, uri) if state is None else state)
    outcome = PullOutcome(table, redact(f"GET {path}"), state_before=dict(state))
    requests_before = client.requests
    pages = 0
    while max_pages is None or pages < max_pages:
        params: dict[str, Any] = {"limit": api.page_size}
        if state.get("updated_after"):
            params[api.updated_after_param] = state["updated_after"]
        if state.get("cursor"):
            params["cursor"] = state["cursor"]
        body = client.get(path, params)
        pages += 1
        records = body["data"]
        next_cursor = body.get("next_cursor")
        high = _newest([r.get(api.updated_at_field) for r in records], state.get("high"))
        if next_cursor:
            new_state = {"updated_after": state.get("updated_after"), "cursor": next_cursor, "high": high}
        else:
            new_state = {"updated_after": high or state.get("updated_after"), "cursor": None, "high": None}
        content = json.dumps(records, sort_keys=True, separators=(",", ":"))
        did = delivery_id(spec.name, path, json.dumps(params, sort_keys=True), content)
        source = redact(f"api:{path}?" + "&".join(f"{k}={v}" for k, v in sorted(params.items())))
        if records and not already_in_bronze(lake, spec, table, did):
            append_pulled(lake, spec, table, records_frame(records), source=source, delivery=did, state=new_state)
            outcome.deliveries += 1
            outcome.rows += len(records)
        else:
            if records:
                outcome.duplicates_skipped += 1
                if log:
                    log(f"{spec.name}.{table}: page {source} already in bronze (delivery {did[:12]}); skipped")
            if new_state != state:
                commit_state(lake, spec, table, new_state)
        state = new_state
        if not next_cursor:
            break
    outcome.requests = client.requests - requests_before
    outcome.state_after = state
    if log:
        log(outcome.describe())
    return outcome


def pull_order(spec: RetailerSpec, tables: list[str] | None = None) -> list[str]:
    """Bronze tables to pull, dimensions before facts (so a fact's products and stores arrive no later)."""
    files = [f for f in spec.delivery.files if tables is None or f.name in tables]
    return [f.name for f in sorted(files, key=lambda f: 0 if all(h.endswith("_dim") for h in f.holds) else 1)]


@redacting
def pull_api(
    lake: Lake,
    spec: RetailerSpec,
    tables: list[str] | None = None,
    *,
    client: ApiClient | None = None,
    log: Callable[[str], None] | None = None,
) -> list[PullOutcome]:
    """Pull every (or the named) endpoint(s) of an API retailer into bronze; dimensions first."""
    names = pull_order(spec, tables)
    own = client is None
    client = client or client_for(spec)
    try:
        return [pull_endpoint(lake, spec, name, client, log=log) for name in names]
    finally:
        if own:
            client.close()


@redacting
def probe_api(lake: Lake, spec: RetailerSpec, client: ApiClient | None = None) -> dict[str, str | None]:
    """Per endpoint, the `updated_at` of the first record changed after the durable position (None: nothing new).

    Costs one small request per endpoint; the sensor turns a non-empty answer into a run whose
    key is derived from it, so the same news never starts two runs.
    """
    api = _api(spec)
    own = client is None
    client = client or client_for(spec)
    news: dict[str, str | None] = {}
    try:
        for f in spec.delivery.files:
            state = read_state(lake, lake.bronze(spec.name, f.name))
            if state.get("cursor"):
                news[f.name] = f"resume:{state['cursor']}"  # an interrupted listing: finish it
                continue
            params: dict[str, Any] = {"limit": 1}
            if state.get("updated_after"):
                params[api.updated_after_param] = state["updated_after"]
            body = client.get(api.endpoints[f.name], params)
            first = body["data"][0] if body["data"] else None
            news[f.name] = None if first is None else f"{state.get('updated_after')}->{first.get(api.updated_at_field)}"
    finally:
        if own:
            client.close()
    return news
