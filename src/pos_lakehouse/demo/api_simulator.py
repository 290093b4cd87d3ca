"""shopnow_us's REST API, simulated: FastAPI + uvicorn on loopback, deterministic data, faults on demand.

Endpoints (bearer-token auth; `limit`, `updated_after`, `cursor` query parameters):
`/v1/products`, `/v1/stores`, `/v1/sales/daily` answer `{"data": [...], "next_cursor": ...}`,
records ordered by `(updated_at, id)`; the cursor is keyset-based, so records changing while a
client pages do not shift pages. Every request is logged (`requests`, and a JSON-lines file
when `request_log` is given) so tests can assert what a client asked for. Faults: `fail_next`
queues answers (429 with Retry-After, 5xx); `fault_rate` answers a seeded share of requests
with 429/503, as a busy real API does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pos_lakehouse.demo.generator import DEMO_START, _day_rows, catalogue, gln13, gtin13, write_expected

RETAILER = "shopnow_us"
ENDPOINTS = {"products": "/v1/products", "stores": "/v1/stores", "sales_daily": "/v1/sales/daily"}
CLOCK_START = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class ShopNowData:
    """The retailer's records, each with an `updated_at` from a logical clock that only moves forward."""

    seed: int = 1004
    n_products: int = 80
    n_stores: int = 10
    density: float = 0.3
    start: date = DEMO_START
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    sales: dict[str, dict[str, Any]] = field(default_factory=dict)
    days: int = 0
    clock: datetime = CLOCK_START

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        cat = catalogue(self.n_products, self.n_stores, self._rng)
        self._cat = cat
        ts = self.tick()
        for i, p in enumerate(cat.products.iter_rows(named=True)):
            sku = f"SN-{i:05d}"
            self.products[sku] = {
                "sku": sku,
                "upc": gtin13(500_000 + i),
                "title": f"ShopNow Item {i:05d}",
                "brand": p["marque"],
                "category": p["categorie"],
                "list_price": p["prix"],
                "updated_at": ts,
            }
        for i, s in enumerate(cat.stores.iter_rows(named=True)):
            sid = f"US{i:03d}"
            self.stores[sid] = {
                "store_id": sid,
                "store_name": f"ShopNow {s['ville']} {i:03d}",
                "gln": gln13(700_000 + i),
                "city": s["ville"],
                "state": s["region"],
                "format": s["format_magasin"],
                "updated_at": ts,
            }

    def tick(self) -> str:
        """Next timestamp: every change gets a later `updated_at` than anything before it."""
        self.clock += timedelta(seconds=1)
        return _iso(self.clock)

    def add_days(self, n: int) -> list[date]:
        """The next `n` days of sales appear (as a live API gains records)."""
        added = []
        for _ in range(n):
            day = self.start + timedelta(days=self.days)
            rows = _day_rows(self._cat, day, self._rng, self.density)
            ts = self.tick()
            for r in rows.iter_rows(named=True):
                sku, sid = f"SN-{r['p']:05d}", f"US{r['s']:03d}"
                rid = f"{day.isoformat()}|{sid}|{sku}"
                self.sales[rid] = {
                    "id": rid,
                    "sale_date": day.isoformat(),
                    "store_id": sid,
                    "sku": sku,
                    "units": int(r["qte_vendue"]),
                    # Cents as integers until here keep values exact; the API sends decimals as strings.
                    "net_sales": str(Decimal(int(r["ca_cents"])) / 100),
                    "returns_units": int(r["qte_retournee"]),
                    "on_hand": int(r["stock_fin_journee"]),
                    "updated_at": ts,
                }
            self.days += 1
            added.append(day)
        return added

    def restate(self, sale_id: str, units: int, net_sales: str) -> dict[str, Any]:
        """The retailer corrects a past sale: same record, new values, new `updated_at`."""
        rec = self.sales[sale_id]
        rec.update(units=units, net_sales=net_sales, updated_at=self.tick())
        return rec

    def rename_product(self, sku: str, title: str) -> None:
        self.products[sku].update(title=title, updated_at=self.tick())

    def collection(self, name: str) -> list[dict[str, Any]]:
        records = {"products": self.products, "stores": self.stores, "sales_daily": self.sales}[name]
        key = {"products": "sku", "stores": "store_id", "sales_daily": "id"}[name]
        return sorted(records.values(), key=lambda r: (r["updated_at"], r[key]))

    def expected_totals(self) -> list[dict[str, Any]]:
        frame = pl.DataFrame(list(self.sales.values()), infer_schema_length=None)
        if frame.is_empty():
            return []
        totals = (
            frame.with_columns(pl.col("net_sales").str.to_decimal(scale=2))
            .group_by("sale_date")
            .agg(pl.len().alias("rows"), pl.col("units").sum(), pl.col("net_sales").sum())
            .sort("sale_date")
        )
        return [
            {
                "retailer": RETAILER,
                "table": "store_day_fact",
                "date": date.fromisoformat(r["sale_date"]),
                "rows": r["rows"],
                "pos_sales_units": str(r["units"]),
                "pos_sales_value_lc": str(r["net_sales"]),
            }
            for r in totals.iter_rows(named=True)
        ]

    def write_expected(self, expected_dir: Path) -> Path:
        return write_expected(expected_dir, RETAILER, self.expected_totals())


def _encode_cursor(updated_at: str, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([updated_at, key]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    updated_at, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return updated_at, key


class ApiSimulator:
    """The FastAPI app plus a uvicorn server on a free loopback port, run in a background thread."""

    def __init__(
        self,
        data: ShopNowData | None = None,
        *,
        token: str = "shopnow-demo-token",
        fault_rate: float = 0.0,
        fault_seed: int = 7,
        request_log: Path | None = None,
        max_limit: int = 1000,
    ) -> None:
        self.data = data or ShopNowData()
        self.token = token
        self.fault_rate = fault_rate
        self._fault_rng = np.random.default_rng(fault_seed)
        self.request_log = request_log
        self.max_limit = max_limit
        self.requests: list[dict[str, Any]] = []
        self._faults: deque[tuple[int, str | None, str]] = deque()
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None
        self.app = self._build_app()

    # ---- faults and log ---------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1, *, path: str | None = None, retry_after: str = "0", after: int = 0) -> None:
        """After `after` more good answers, the next `times` requests (to `path`, if given) get `status`."""
        with self._lock:
            for _ in range(after):
                self._faults.append((0, path, ""))  # a placeholder that lets one request through
            for _ in range(times):
                self._faults.append((status, path, retry_after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_to(self, path: str, status: int | None = 200) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path and (status is None or r["status"] == status)]

    def _log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.request_log:
                self.request_log.parent.mkdir(parents=True, exist_ok=True)
                with open(self.request_log, "a") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def _fault_for(self, path: str) -> tuple[int, str] | None:
        with self._lock:
            for i, (status, only, retry_after) in enumerate(self._faults):
                if only is None or only == path:
                    del self._faults[i]
                    return (status, retry_after) if status else None
            if self.fault_rate and self._fault_rng.random() < self.fault_rate:
                return (429, "1") if self._fault_rng.random() < 0.5 else (503, "1")
        return None

    # ---- the API ------------------------------------------------------------------------
    def _build_app(self):
        app = FastAPI(title="ShopNow retailer API (simulated)", version="1.0")
        sim = self

        def listing(name: str):
            async def handler(request: Request):
                params = dict(request.query_params)
                entry = {
                    "at": datetime.now(UTC).isoformat(),
                    "method": request.method,
                    "path": request.url.path,
                    "params": params,
                }
                auth = request.headers.get("authorization", "")
                if auth != f"Bearer {sim.token}":
                    sim._log(entry | {"status": 401, "records": 0})
                    return JSONResponse({"error": "invalid_token", "detail": "missing or wrong bearer token"}, status_code=401)
                fault = sim._fault_for(request.url.path)
                if fault:
                    status, retry_after = fault
                    sim._log(entry | {"status": status, "records": 0})
                    headers = {"Retry-After": retry_after} if status in (429, 503) else {}
                    return JSONResponse({"error": "try again later"}, status_code=status, headers=headers)
                try:
                    limit = max(1, min(int(params.get("limit", 100)), sim.max_limit))
                except ValueError:
                    sim._log(entry | {"status": 400, "records": 0})
                    return JSONResponse({"error": "limit must be an integer"}, status_code=400)
                key = {"products": "sku", "stores": "store_id", "sales_daily": "id"}[name]
                with sim._lock:
                    records = [dict(r) for r in sim.data.collection(name)]
                after = params.get("updated_after") or params.get("since")
                if after:
                    records = [r for r in records if r["updated_at"] > after]
                if params.get("cursor"):
                    try:
                        position = _decode_cursor(params["cursor"])
                    except Exception:
                        sim._log(entry | {"status": 400, "records": 0})
                        return JSONResponse({"error": "bad cursor"}, status_code=400)
                    records = [r for r in records if (r["updated_at"], r[key]) > position]
                page = records[:limit]
                more = len(records) > limit
                next_cursor = _encode_cursor(page[-1]["updated_at"], page[-1][key]) if more else None
                sim._log(entry | {"status": 200, "records": len(page)})
                return {"data": page, "next_cursor": next_cursor}

            return handler

        for name, path in ENDPOINTS.items():
            app.add_api_route(path, listing(name), methods=["GET"], name=name)

        @app.get("/health")
        async def health():
            return {"status": "ok"}

        return app

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on 127.0.0.1 on a free port; returns the base URL."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), name="shopnow-api", daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{port}"
        import time

        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API simulator did not start")
            time.sleep(0.02)
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> ApiSimulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
