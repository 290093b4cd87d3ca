"""Where this code location runs: the one place that reads the environment.

`POS_LAKEHOUSE_ENV` chooses `local` (default) or `databricks`; `POS_LAKEHOUSE_DATA` is the
data root (a local path by default, any URI deltalake understands otherwise). Every other
module asks this one instead of reading environment variables itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Files shipped inside the package (retailer YAML, access policy): found next to this module, so
# they resolve in an installed wheel as well as in a checkout.
PACKAGE_DIR = Path(__file__).resolve().parent
RETAILERS_DIR = PACKAGE_DIR / "defs" / "retailers"

Environment = Literal["local", "databricks"]


@dataclass(frozen=True)
class Settings:
    environment: Environment
    data_root: str

    @property
    def landing_root(self) -> str:
        return join_uri(self.data_root, "landing")


def join_uri(root: str, *parts: str) -> str:
    root = root.rstrip("/")
    return "/".join([root, *[p.strip("/") for p in parts if p]])


def current_settings() -> Settings:
    env = os.environ.get("POS_LAKEHOUSE_ENV", "local").strip().lower()
    if env not in ("local", "databricks"):
        raise ValueError(f"POS_LAKEHOUSE_ENV must be 'local' or 'databricks', not {env!r}")
    data_root = os.environ.get("POS_LAKEHOUSE_DATA") or str(PROJECT_ROOT / "data")
    if "://" not in data_root:
        data_root = str(Path(data_root).expanduser().resolve())
    return Settings(environment=env, data_root=data_root)  # type: ignore[arg-type]
