"""The instance and resources a sensor tick uses, made once per code server process, not once per tick.

The code server evaluates each tick in a fresh context that holds only a reference to the instance:
`context.instance`, and `context.resources` for a sensor that declares resources, build a new
`DagsterInstance` from it, and building one checks each storage's schema revision (alembic): far
more than the tick's own work (listing folders) for a sensor that ticks every few seconds. The same instance and resources serve every later tick of the process.

A context built around an instance (tests, `build_sensor_context(instance=...)`) is used as it is.
"""

from __future__ import annotations

import atexit
import threading
from contextlib import ExitStack
from typing import Any

import dagster as dg
from dagster._serdes import serialize_value

_lock = threading.Lock()
_instances: dict[str, dg.DagsterInstance] = {}
_resources: dict[tuple[str, int, str], Any] = {}
_kept = ExitStack()  # what was opened stays open for the process's life
atexit.register(_kept.close)  # and is closed before the interpreter tears its modules down


def instance_of(context: dg.SensorEvaluationContext) -> dg.DagsterInstance:
    """The tick's instance: the process's one for the context's instance reference."""
    ref = context.instance_ref
    if ref is None:
        return context.instance
    key = serialize_value(ref)
    with _lock:
        if key not in _instances:
            _instances[key] = _kept.enter_context(dg.DagsterInstance.from_ref(ref))
        return _instances[key]


def resource_of(context: dg.SensorEvaluationContext, key: str) -> Any:
    """The code location's resource `key`, as a resource parameter of the sensor would receive it."""
    repository = context.repository_def
    if context.instance_ref is None or repository is None:
        return getattr(context.resources, key)
    instance = instance_of(context)
    cache_key = (serialize_value(context.instance_ref), id(repository), key)
    with _lock:
        if cache_key not in _resources:
            definition = repository.get_top_level_resources()[key]
            built = _kept.enter_context(dg.build_resources({key: definition}, instance=instance))
            _resources[cache_key] = getattr(built, key)
        return _resources[cache_key]
