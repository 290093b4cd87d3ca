"""Where this code location runs: the one place that reads the environment.

`POS_LAKEHOUSE_ENV` chooses `local` (default) or `databricks`; `POS_LAKEHOUSE_DATA` is the
data root (a local path by default, or an object-store URI: `s3://`, `abfss://`, `az://`, `gs://`);
`POS_LAKEHOUSE_LANDING` optionally puts the landing zone elsewhere than `<data root>/landing`
(often another bucket than the lake's); `POS_LAKEHOUSE_LANDING_SETTLE_SECONDS` and
`POS_LAKEHOUSE_LANDING_DONE_SUFFIX` hold back deliveries still being uploaded; `POS_LAKEHOUSE_SPARK_REMOTE`
overrides where the Spark engine runs (`spark_master`);
`POS_LAKEHOUSE_SENSOR_MAX_INTERVAL_SECONDS` and `POS_LAKEHOUSE_ONLY_RETAILERS` are set by
`pos-lakehouse run` for the daemon it starts (see `sensor_interval`, `only_retailers`); `POS_LAKEHOUSE_DEFS_DIR`
loads another folder laid out like the package's `defs/` (see `defs_dir`). Every other module asks this one instead of reading
environment variables itself. Object-store credentials are not read here: delta-rs, Polars and
obstore read the cloud's standard variables themselves (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pos_lakehouse.storage.layout import join_uri

# Files shipped inside the package (retailer YAML, access policy): package data, found through the
# import system, so they resolve in an installed wheel as well as in a checkout. Dagster loads the
# defs folder from the file system, so the package is installed unzipped either way.
PACKAGE_DIR = Path(str(resources.files("pos_lakehouse")))
RETAILERS_DIR = PACKAGE_DIR / "defs" / "retailers"
DEFS_DIR_ENV = "POS_LAKEHOUSE_DEFS_DIR"


def defs_dir_override() -> Path | None:
    """Another folder laid out like the package's `defs/` to load instead of it (`POS_LAKEHOUSE_DEFS_DIR`),
    or None. Benchmarks load copies with more retailers; tests load copies holding only the demo
    retailers, so a retailer onboarded into the package's folder changes nothing they see."""
    raw = os.environ.get(DEFS_DIR_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def defs_dir() -> Path:
    """The defs folder the code location loads: `POS_LAKEHOUSE_DEFS_DIR`, else the package's `defs/`."""
    return defs_dir_override() or PACKAGE_DIR / "defs"


def retailers_dir() -> Path:
    """The folder of retailer YAMLs (`retailers/<name>/defs.yaml`) in the loaded defs folder."""
    return defs_dir() / "retailers"


Environment = Literal["local", "databricks"]


def checkout_root() -> Path | None:
    """The source checkout this package runs from (`src/pos_lakehouse` under a pyproject.toml), if any."""
    checkout = PACKAGE_DIR.parents[1]
    if PACKAGE_DIR.parent.name == "src" and (checkout / "pyproject.toml").is_file():
        return checkout
    return None


def project_root() -> Path:
    """Where local state goes by default (`data/`, `.dagster_home/`, `.serving/`): the checkout, else
    the current directory. An installed wheel has no project folder (site-packages is no place for data)."""
    return checkout_root() or Path.cwd()


@dataclass(frozen=True)
class Settings:
    environment: Environment
    data_root: str
    landing_override: str | None = None
    landing_settle_seconds: float = 0.0
    landing_done_suffix: str | None = None

    @property
    def landing_root(self) -> str:
        return self.landing_override or join_uri(self.data_root, "landing")

    @property
    def remote(self) -> bool:
        """Whether the data root is in an object store (then the landing zone defaults to it too)."""
        from pos_lakehouse.storage.object_store import is_remote

        return is_remote(self.data_root)


def _normalise_root(root: str) -> str:
    if "://" not in root:
        return str(Path(root).expanduser().resolve())
    return root.rstrip("/")


def current_settings() -> Settings:
    env = os.environ.get("POS_LAKEHOUSE_ENV", "local").strip().lower()
    if env not in ("local", "databricks"):
        raise ValueError(f"POS_LAKEHOUSE_ENV must be 'local' or 'databricks', not {env!r}")
    data_root = _normalise_root(os.environ.get("POS_LAKEHOUSE_DATA") or str(project_root() / "data"))
    landing = os.environ.get("POS_LAKEHOUSE_LANDING")
    settle = os.environ.get("POS_LAKEHOUSE_LANDING_SETTLE_SECONDS", "0").strip() or "0"
    try:
        settle_seconds = float(settle)
    except ValueError:
        raise ValueError(f"POS_LAKEHOUSE_LANDING_SETTLE_SECONDS must be a number of seconds, not {settle!r}") from None
    return Settings(
        environment=env,  # type: ignore[arg-type]
        data_root=data_root,
        landing_override=_normalise_root(landing) if landing else None,
        landing_settle_seconds=settle_seconds,
        landing_done_suffix=os.environ.get("POS_LAKEHOUSE_LANDING_DONE_SUFFIX") or None,
    )


def local_serving_dir(data_root: str) -> Path:
    """A local folder for what must be a local file (the DuckDB views and the data files they read)
    when the data root is an object store: `POS_LAKEHOUSE_SERVING_DIR`, else
    `<project root>/.serving/<hash of the data root>` so two data roots never share one."""
    configured = os.environ.get("POS_LAKEHOUSE_SERVING_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return project_root() / ".serving" / hashlib.sha256(data_root.encode()).hexdigest()[:12]


# At 5M rows on 2 cores: silver peaks at 1.7-1.9 GB with batches of 1M or of 1.25M rows, and the
# larger batches (fewer per-batch passes and files) load 0.3-0.7 s faster.
DEFAULT_SILVER_BATCH_ROWS = 1_250_000


def silver_batch_rows() -> int:
    """How many new bronze rows silver loads at once (`POS_LAKEHOUSE_SILVER_BATCH_ROWS`).

    Larger deliveries are loaded in batches of whole deliveries (one delivery bigger than this
    is split by date), so silver's memory peak follows this setting, not a delivery's size.
    """
    raw = os.environ.get("POS_LAKEHOUSE_SILVER_BATCH_ROWS", "").strip()
    if not raw:
        return DEFAULT_SILVER_BATCH_ROWS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"POS_LAKEHOUSE_SILVER_BATCH_ROWS must be a whole number of rows, not {raw!r}") from None
    if value < 1:
        raise ValueError(f"POS_LAKEHOUSE_SILVER_BATCH_ROWS must be at least 1, not {value}")
    return value


def sensor_interval(seconds: int) -> int:
    """A sensor's minimum interval: `seconds`, or less where `POS_LAKEHOUSE_SENSOR_MAX_INTERVAL_SECONDS` caps it.

    `pos-lakehouse run` starts Dagster's daemon on the project's instance and stops it once every
    sensor has ticked after the last run ended; it caps the intervals in that daemon's code server so
    this takes seconds rather than the 5 minutes of the catch-up sensor. `dg dev` keeps the intervals
    as written.
    """
    raw = os.environ.get("POS_LAKEHOUSE_SENSOR_MAX_INTERVAL_SECONDS", "").strip()
    if not raw:
        return seconds
    try:
        cap = int(raw)
    except ValueError:
        raise ValueError(f"POS_LAKEHOUSE_SENSOR_MAX_INTERVAL_SECONDS must be a whole number of seconds, not {raw!r}") from None
    return max(1, min(seconds, cap))


def only_retailers() -> frozenset[str] | None:
    """The retailers whose deliveries this process tree's sensors turn into runs (`POS_LAKEHOUSE_ONLY_RETAILERS`,
    comma-separated names), or None for all.

    `pos-lakehouse run --retailer NAME` sets it for the daemon it starts: the code location stays the
    same (every asset, job and sensor), only the sensors leave other retailers' news for later -- a
    landing file they skip is still new to the next daemon. Corporate reference data is no retailer's
    and always runs.
    """
    raw = os.environ.get("POS_LAKEHOUSE_ONLY_RETAILERS", "").strip()
    if not raw:
        return None
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


SPARK_REMOTE_ENV = "POS_LAKEHOUSE_SPARK_REMOTE"


def spark_master(configured: str | None = None) -> str:
    """Where the Spark engine runs: `local` (a Spark of the project's own on this machine), a
    standalone master `spark://host:port` (this machine drives it), or a Spark Connect server
    `sc://host:port`. `POS_LAKEHOUSE_SPARK_REMOTE` (an operator's override) wins over `configured`
    (a retailer's YAML, else the `spark` resource's configuration), which wins over `local`."""
    value = (os.environ.get(SPARK_REMOTE_ENV) or configured or "local").strip()
    return check_spark_master(value, SPARK_REMOTE_ENV if os.environ.get(SPARK_REMOTE_ENV) else "spark master")


def check_spark_master(value: str, where: str = "spark master") -> str:
    """`value` if it names a place Spark can run, else a ValueError naming `where` it came from."""
    if value == "local" or (value.startswith(("spark://", "sc://")) and len(value.split("://", 1)[1]) > 0):
        return value
    raise ValueError(f"{where} must be 'local', 'spark://host:port' or 'sc://host:port', not {value!r}")
