"""The sensors that span the code location: serving automation, delivery (landing, polling) and catch-up."""

from __future__ import annotations

import dagster as dg

from pos_lakehouse.ingest.polling import is_pulled
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.catch_up import build_catch_up_sensor
from pos_lakehouse.sensors.landing import build_landing_sensor
from pos_lakehouse.sensors.polling import build_poll_sensors
from pos_lakehouse.sensors.targets import ingest_keys
from pos_lakehouse.settings import sensor_interval


def code_location_sensors(specs: list[RetailerSpec], loaded: dg.Definitions) -> dg.Definitions:
    """Every sensor across the loaded components (`specs`: the retailers they hold)."""
    # A delivery's own run carries it from bronze to its gold partitions, and two sensors cover what
    # reaches silver from elsewhere (reference data, runs that stopped early): declarative
    # automation is left with the one asset that depends on every gold table, the serving views.
    automation = dg.AutomationConditionSensorDefinition(
        "serving_automation",
        target=dg.AssetSelection.tag("layer", "serving"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=sensor_interval(15),
        description="Rebuilds the secure serving views when any gold table or the access policy changed.",
    )
    built = loaded_retailers(specs, loaded)
    catch_up = build_catch_up_sensor(built)
    return dg.Definitions.merge(dg.Definitions(sensors=[automation, *delivery_sensors(built)]), catch_up)


def loaded_retailers(specs: list[RetailerSpec], loaded: dg.Definitions) -> list[RetailerSpec]:
    """The retailers whose components built their assets (the sensors' runs select those)."""
    keys = {k for a in loaded.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    return [s for s in specs if set(ingest_keys(s)) <= keys]


def delivery_sensors(specs: list[RetailerSpec]) -> list[dg.SensorDefinition]:
    """One landing sensor over every file-delivering retailer and one poll sensor per polling interval
    over the pulled ones, requesting runs of the retailers' assets: what a tick costs is one sensor
    evaluation whatever the number of retailers, not one per retailer in the daemon's queue."""
    pulled = [s for s in specs if is_pulled(s)]
    files = [s for s in specs if not is_pulled(s)]
    return [*([build_landing_sensor(files)] if files else []), *build_poll_sensors(pulled)]
