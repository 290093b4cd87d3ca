"""The sensors that span the code location: serving automation, delivery (landing, polling) and catch-up."""

from __future__ import annotations

import dagster as dg

from pos_lakehouse.ingest.polling import is_pulled
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.catch_up import build_catch_up_sensor
from pos_lakehouse.sensors.landing import build_landing_sensor
from pos_lakehouse.sensors.polling import build_poll_sensors
from pos_lakehouse.settings import sensor_interval


def code_location_sensors(specs: list[RetailerSpec], loaded: dg.Definitions) -> dg.Definitions:
    """Every sensor across the loaded components (`specs`: the retailers they hold), and the catch-up jobs."""
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
    catch_up = build_catch_up_sensor(specs, ingest_jobs(specs, loaded))
    return dg.Definitions.merge(dg.Definitions(sensors=[automation, *delivery_sensors(specs, loaded)]), catch_up)


def ingest_jobs(specs: list, loaded: dg.Definitions) -> dict:
    """Each retailer's `<name>_ingest` job, as its component built it, by retailer name."""
    jobs = {j.name: j for j in loaded.jobs or []}
    return {s.name: jobs[f"{s.name}_ingest"] for s in specs if f"{s.name}_ingest" in jobs}


def delivery_sensors(specs: list, loaded: dg.Definitions) -> list[dg.SensorDefinition]:
    """One landing sensor over every file-delivering retailer and one poll sensor per polling interval
    over the pulled ones, targeting the ingest jobs the retailers' components built: what a tick costs is one sensor
    evaluation whatever the number of retailers, not one per retailer in the daemon's queue."""
    ingest = ingest_jobs(specs, loaded)
    pulled = [s for s in specs if s.name in ingest and is_pulled(s)]
    files = [s for s in specs if s.name in ingest and not is_pulled(s)]
    return [*([build_landing_sensor(files, ingest)] if files else []), *build_poll_sensors(pulled, ingest)]
