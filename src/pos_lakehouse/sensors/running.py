"""How every sensor of the code location is declared: running from the start, its interval from `settings`."""

from __future__ import annotations

from typing import Any

import dagster as dg

from pos_lakehouse.settings import sensor_interval


def running_sensor(name: str, every_seconds: int, description: str, **target: Any):
    """`dg.sensor` with the project's policy applied once: RUNNING by default (a deployment starts
    with its sensors on) and `every_seconds` as the minimum interval, capped where `pos-lakehouse run`
    caps it (`settings.sensor_interval`). `target`: `job=` or `asset_selection=`."""
    return dg.sensor(
        name=name,
        minimum_interval_seconds=sensor_interval(every_seconds),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
        **target,
    )
