"""The retailer specification: everything one `defs/retailers/<name>/defs.yaml` says.

These models are the contract between the YAML a data engineer writes and the pipeline;
every attribute carries a description that `dg` shows when scaffolding or checking YAML.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from pos_lakehouse.retailer_files import FileFormat, FileSpec, ObservedOn, ReadLimits
from pos_lakehouse.retailer_model import CanonicalName, Model

__all__ = ["CanonicalName", "FileFormat", "FileSpec", "Model", "ObservedOn", "ReadLimits"]


# ---- pulled deliveries: API, database and SFTP sub-models -------------------------------
# Secrets never live in YAML: each names the environment variable that holds it.


class ApiSpec(Model):
    """A retailer's REST API: paged JSON, bearer-token auth, an incremental `updated_after` filter."""

    base_url: str | None = Field(default=None, description="API root, e.g. `https://api.retailer.com`; `base_url_env` wins when set.")
    base_url_env: str | None = Field(default=None, description="Environment variable holding the API root (e.g. a port chosen at start).")
    token_env: str = Field(description="Environment variable holding the bearer token (never logged).")
    endpoints: dict[str, str] = Field(
        description="Per bronze table (`files[].name`): the endpoint path that lists its records, e.g. `/v1/products`."
    )
    page_size: int = Field(default=500, description="Records asked for per page.")
    updated_after_param: str = Field(default="updated_after", description="Query parameter of the incremental filter.")
    updated_at_field: str = Field(default="updated_at", description="Record field holding its last-change timestamp.")
    max_retries: int = Field(default=6, description="Retries of one request on 429, 5xx or network errors.")
    backoff_seconds: float = Field(default=0.5, description="First retry delay; doubles per retry (Retry-After wins).")
    timeout_seconds: float = Field(default=30.0, description="Per-request timeout.")


class DatabaseSpec(Model):
    """A retailer's warehouse read over a SQLAlchemy URL, incrementally on an `updated_at` column."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL without a password, e.g. `sqlite:///{data_root}/sources/x.sqlite` "
        "(`{data_root}` is the data root). `url_env` wins when that variable is set.",
    )
    url_env: str | None = Field(
        default=None, description="Environment variable holding the connection URL (may carry credentials; never logged)."
    )
    password_env: str | None = Field(
        default=None, description="Environment variable holding the password, when the URL has a user but no password."
    )
    tables: dict[str, str] = Field(description="Per bronze table (`files[].name`): the source table (or `schema.table`).")
    updated_at_column: str = Field(default="updated_at", description="Column holding each row's last-change time.")
    lag_seconds: int = Field(default=300, description="Re-read this far behind the watermark, for transactions that commit late.")
    chunk_rows: int = Field(default=50_000, description="Rows per chunk read and appended (memory bound).")

    @model_validator(mode="after")
    def _no_secret_in_yaml(self) -> DatabaseSpec:
        if self.url and re.match(r"^[^:/]+://[^/@:]*:[^/@]+@", self.url):
            raise ValueError("delivery.database.url must not carry a password: use `url_env` or `password_env`")
        if not self.url and not self.url_env:
            raise ValueError("delivery.database needs `url` or `url_env`")
        return self


class SftpSpec(Model):
    """A landing folder on the retailer's (or our) SFTP server."""

    host: str | None = Field(default=None, description="SFTP host; `host_env` wins when set.")
    host_env: str | None = Field(default=None, description="Environment variable holding the host.")
    port: int = Field(default=22, description="SFTP port; `port_env` wins when set.")
    port_env: str | None = Field(default=None, description="Environment variable holding the port.")
    username_env: str = Field(description="Environment variable holding the account name.")
    password_env: str = Field(description="Environment variable holding the password (never logged).")
    path: str = Field(default=".", description="Folder of the retailer's files on the server (relative to its login folder).")
    known_hosts: str | None = Field(
        default=None, description="known_hosts file to verify the server; null accepts any host key (loopback demo only)."
    )
    settle_seconds: float = Field(default=0.0, description="A file must keep its size (and mtime) this long before it is taken.")
    done_suffix: str | None = Field(
        default=None, description="If set, a file is taken only once `<file><suffix>` (e.g. `.done`) exists next to it."
    )


class DeliverySpec(Model):
    """Where and how the retailer delivers."""

    channel: Literal["landing", "sftp", "api", "database"] = Field(
        default="landing", description="landing (local/object-store folder), sftp, api or database."
    )
    files: list[FileSpec] = Field(default_factory=list, description="The kinds of file the retailer sends.")
    max_files_per_run: int = Field(default=100, description="Upper bound of files one sensor run ingests; more become further runs.")
    api: ApiSpec | None = Field(default=None, description="For `channel: api`: the retailer's REST API.")
    database: DatabaseSpec | None = Field(default=None, description="For `channel: database`: the retailer's warehouse.")
    sftp: SftpSpec | None = Field(default=None, description="For `channel: sftp`: the SFTP landing folder.")
    poll_seconds: int = Field(default=300, description="For api/database: how often the sensor asks the source for news.")
    limits: ReadLimits = Field(
        default_factory=ReadLimits, description="Size, expansion, line-length and column bounds on each delivered file."
    )

    @model_validator(mode="after")
    def _channel_settings(self) -> DeliverySpec:
        names = [f.name for f in self.files]
        if self.channel in ("api", "database"):
            sub = self.api if self.channel == "api" else self.database
            if sub is None:
                raise ValueError(f"delivery.channel {self.channel} needs a `delivery.{self.channel}` block")
            sources = sub.endpoints if isinstance(sub, ApiSpec) else sub.tables
            missing = [n for n in names if n not in sources]
            unknown = [n for n in sources if n not in names]
            if missing or unknown:
                raise ValueError(
                    f"delivery.{self.channel}: every files[].name needs a source and vice versa "
                    f"(no source for {missing}, no file for {unknown})"
                )
        elif self.channel == "sftp" and self.sftp is None:
            raise ValueError("delivery.channel sftp needs a `delivery.sftp` block")
        if self.channel in ("api", "database"):
            whole_days = [
                f.name for f in self.files if getattr(f, "replaces", "rows") == "site_days" and any(h.endswith("_fact") for h in f.holds)
            ]
            if whole_days:
                raise ValueError(
                    f"delivery.files {whole_days}: pulled pages/chunks hold only changed rows, not whole store-days; set `replaces: rows`"
                )
        if self.channel in ("landing", "sftp"):
            unmatched = [f.name for f in self.files if not f.match]
            if unmatched:
                raise ValueError(f"delivery.files {unmatched}: `match` (a file-name glob) is required for channel {self.channel}")
        return self


class CompletenessSpec(Model):
    """What the retailer owes and how missing deliveries are reported (the delivery calendar and its check)."""

    starts_on: str | None = Field(
        default=None,
        description="First day the retailer owes data, `YYYY-MM-DD`; default: the first date it delivered (nothing before it is missing).",
    )
    per_store: bool = Field(
        default=True,
        description="Every store (known from the site dimension or the facts) owes every day; false: the retailer owes "
        "each day as a whole, whichever stores it holds.",
    )
    due_days: int = Field(
        default=1,
        description="A day's rows are due by the end of this many days after it (a weekly sender's: after its week); "
        "a cell whose rows came later is `late`, one with none past it is `missing`.",
    )
    window_days: int = Field(
        default=28, description="The completeness check looks at this many days back from yesterday (older gaps are history)."
    )
    blocking: bool = Field(
        default=False,
        description="A missing day in the window fails the check as an error, so gold is not published until it "
        "arrives (late days are still a warning); default: a warning, gold flows.",
    )

    @model_validator(mode="after")
    def _start_is_a_date(self) -> CompletenessSpec:
        if self.due_days < 0 or self.window_days < 1:
            raise ValueError("completeness: due_days must be >= 0 and window_days >= 1")
        if self.starts_on is not None:
            try:
                date.fromisoformat(self.starts_on)
            except ValueError:
                raise ValueError(f"completeness.starts_on {self.starts_on!r} is not a date (YYYY-MM-DD)") from None
        return self

    @property
    def start_date(self) -> date | None:
        return date.fromisoformat(self.starts_on) if self.starts_on else None


class RetailerSpec(Model):
    """A retailer's delivery, mapping and policies: one YAML file per retailer."""

    retailer_id: int = Field(description="Numeric retailer id; the data provider code is `cds_<id>`.")
    name: str = Field(description="Short snake_case retailer name; names its folders, tables and asset group.")
    description: str | None = Field(default=None, description="Free text about the retailer, shown on its assets.")
    country: str = Field(description="ISO country code of the retailer's business.")
    currency: str = Field(description="ISO currency of the retailer's values, used when the files do not say.")
    secure_group_key: int = Field(description="Row-level security key every row of this retailer carries.")
    engine: Literal["polars", "spark", "auto"] = Field(
        default="polars",
        description="Compute engine for silver and gold; `auto`: Polars for a delivery of fewer new rows than "
        "`spark_from_rows`, Spark from there on (the same tables either way).",
    )
    spark_from_rows: int = Field(
        default=1_000_000, ge=1, description="`engine: auto`: new bronze rows in a delivery from which it runs on Spark."
    )
    spark_master: str | None = Field(
        default=None,
        description="Spark engine only: where its job runs, `local`, a standalone master `spark://host:port` or a "
        "Spark Connect server `sc://host:port`; default: the `spark` resource's. `POS_LAKEHOUSE_SPARK_REMOTE` overrides it.",
    )
    antitrust: Literal["none", "value", "volume"] = Field(
        default="none",
        description="Competition sensitivity, i.e. what is antitrust-masked for analysts: `none`; `value` (money: "
        "sales, returns and inventory values in local currency and USD, and the sales and returns units and stock on "
        "hand they are a price times, since visible units times the last real price give the value back); `volume` "
        "(every measure, stock on order too).",
    )
    mask_younger_than_days: int = Field(
        default=28,
        ge=1,
        description="From what age records show real values: a record stays masked while its two-month masking block "
        "(Jan-Feb, Mar-Apr, ...) holds a day younger than this many days. Ignored with `antitrust: none`.",
    )
    cadence: Literal["daily", "weekly"] = Field(default="daily", description="How often data arrives; sets freshness.")
    delivery: DeliverySpec = Field(default_factory=DeliverySpec, description="Where and how files arrive.")
    columns: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per delivered file kind (`files[].name`): source column -> canonical column.",
    )
    week_ends_on: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        default="sunday", description="Last day of the retailer's business week, for weekly aggregates."
    )
    completeness: CompletenessSpec = Field(
        default_factory=CompletenessSpec,
        description="What the retailer owes (start, per store, due time) and how its delivery calendar's check reports gaps.",
    )
    scd2: dict[Literal["prod_dim", "site_dim"], list[str]] = Field(
        default_factory=lambda: {"prod_dim": ["prod_name", "brand", "category"], "site_dim": ["site_name", "channel"]},
        description="Attributes whose change opens a new dimension version (SCD2).",
    )

    @model_validator(mode="after")
    def _check(self) -> RetailerSpec:
        names = [f.name for f in self.delivery.files]
        if len(names) != len(set(names)):
            raise ValueError(f"retailer {self.name}: duplicate file names in delivery.files: {names}")
        unknown = set(self.columns) - set(names)
        if unknown:
            raise ValueError(f"retailer {self.name}: columns given for unknown files {sorted(unknown)}")
        from pos_lakehouse.retailer_checks import check_against_model

        check_against_model(self)
        self._check_scd2()
        if self.spark_master is not None:
            from pos_lakehouse.settings import check_spark_master

            check_spark_master(self.spark_master, f"retailer {self.name}: spark_master")
        return self

    def _check_scd2(self) -> None:
        """SCD2 attributes must be attributes the retailer maps: an unmapped one would stay null in silver and gold."""
        from pos_lakehouse.retailer_checks import FieldError
        from pos_lakehouse.transform.canonical import TABLES

        explicit = "scd2" in self.model_fields_set
        for table, attrs in list(self.scd2.items()):
            files = self.files_holding(table)
            if not files:
                continue
            mapped = {target for f in files for target in self.columns.get(f.name, {}).values()}
            if not explicit:  # the default list: keep only what this retailer maps
                self.scd2[table] = [a for a in attrs if a in mapped]
                continue
            keys = set(TABLES[table].natural_keys)
            allowed = [c.name for c in TABLES[table].source_columns if c.name not in keys]
            wrong = [a for a in attrs if a not in allowed]
            if wrong:
                raise FieldError(("scd2", table), f"{wrong} are not {table} attributes; allowed: {', '.join(allowed)}")
            unmapped = [a for a in attrs if a not in mapped]
            if unmapped:
                where = ", ".join(f"columns.{f.name}" for f in files)
                raise FieldError(
                    ("scd2", table),
                    f"tracks {unmapped}, but no file holding {table} maps a source column to "
                    f"{'it' if len(unmapped) == 1 else 'them'}: add `<source column>: {unmapped[0]}` under {where}, "
                    f"or remove {'it' if len(unmapped) == 1 else 'them'} from scd2.{table}",
                )

    @property
    def data_provider_code(self) -> str:
        return f"cds_{self.retailer_id}"

    @property
    def derived_tables(self) -> list[str]:
        """What silver derives from delivered facts: period aggregates of daily facts (weekly senders deliver
        weeks), and the delivery calendar of every retailer that delivers facts."""
        calendar = ["delivery_calendar"] if {"store_day_fact", "store_week_fact"} & set(self.canonical_tables) else []
        if "store_day_fact" not in self.canonical_tables:
            return calendar
        derived = ["store_month_fact"]
        if "store_week_fact" not in self.canonical_tables:
            derived.insert(0, "store_week_fact")
        return [*derived, *calendar]

    @property
    def silver_tables(self) -> list[str]:
        """Every silver table of the retailer: delivered ones, then derived aggregates."""
        return [*self.canonical_tables, *self.derived_tables]

    @property
    def canonical_tables(self) -> list[str]:
        """Canonical tables this retailer feeds, dimensions first."""
        order = ["prod_dim", "site_dim", "store_day_fact", "store_week_fact"]
        held = {t for f in self.delivery.files for t in f.holds}
        return [t for t in order if t in held]

    def file_spec_for(self, file_name: str) -> FileSpec | None:
        for spec in self.delivery.files:
            if spec.matches(Path(file_name).name):
                return spec
        return None

    def files_holding(self, table: str) -> list[FileSpec]:
        return [f for f in self.delivery.files if table in f.holds]


# libyaml's loader where PyYAML was built with it: the same safe subset, several times faster to parse.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Parsed specs by folder, with the (path, mtime, size) of every YAML they came from: gold, serving and
# the CLI each ask for all retailers while one code location loads, and an edited, added or removed
# file changes the key, so a reload (`dg dev`) reads the folder afresh.
_specs_cache: dict[Path, tuple[tuple[tuple[str, int, int], ...], list[RetailerSpec]]] = {}


def load_retailer_specs(retailers_dir: Path) -> list[RetailerSpec]:
    """Every retailer YAML under `retailers_dir`, in id order (used where all retailers are needed, e.g. gold)."""
    folder = Path(retailers_dir).resolve()
    paths = sorted(folder.glob("*/defs.yaml"))
    stamp = tuple((str(p), (st := p.stat()).st_mtime_ns, st.st_size) for p in paths)
    cached = _specs_cache.get(folder)
    if cached is None or cached[0] != stamp:
        specs = []
        for path in paths:
            doc = yaml.load(path.read_text(), Loader=_YamlLoader)  # noqa: S506 - a safe loader
            if doc and str(doc.get("type", "")).endswith("RetailerPipeline"):
                specs.append(RetailerSpec.model_validate(doc["attributes"]))
        cached = (stamp, sorted(specs, key=lambda s: s.retailer_id))
        _specs_cache[folder] = cached
    # Copies, so a caller that adjusts a spec cannot change what the next caller reads.
    return [spec.model_copy(deep=True) for spec in cached[1]]
