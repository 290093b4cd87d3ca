"""The base of the retailer specification's models, apart so its parts share it without an import cycle."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Pydantic settings of `dg.Model` (unknown YAML keys are errors), without importing Dagster:
    the Spark job reads a `RetailerSpec` on clusters that have `dagster-pipes` only."""

    model_config = ConfigDict(extra="forbid")


CanonicalName = Literal["prod_dim", "site_dim", "store_day_fact", "store_week_fact"]
