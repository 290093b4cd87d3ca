"""The project's components (`dg` imports this package as its registry module)."""

from pos_lakehouse.quiet import quiet_deliberate_warnings

# Before the components import Dagster's component APIs: `dg` commands import this package first.
quiet_deliberate_warnings()

from pos_lakehouse.components.gold_tables import GoldTables as GoldTables  # noqa: E402
from pos_lakehouse.components.reference_data import ReferenceData as ReferenceData  # noqa: E402
from pos_lakehouse.components.retailer_pipeline import RetailerPipeline as RetailerPipeline  # noqa: E402
from pos_lakehouse.components.serving_views import ServingViews as ServingViews  # noqa: E402
