"""Pool claims sensor: hands free pool slots to steps left waiting for them (a Dagster race it works around)."""

from __future__ import annotations

import dagster as dg

from pos_lakehouse.sensors.instance import instance_of
from pos_lakehouse.sensors.running import running_sensor


def assign_stranded_pool_claims(instance: dg.DagsterInstance) -> list[str]:
    """Hand free pool slots to steps left waiting for them; returns the pools it unblocked.

    A step that asks for a pool's slot just as the holder frees it can be queued after the holder
    has already looked for someone to hand the slot to: it then waits for a hand-over that never
    comes (Dagster's SQL storage checks for a free slot and queues the step in two statements).
    Such a run would wait forever; handing free slots to queued steps, as the storage does when a
    slot is freed, lets it go on. It never assigns more steps than a pool has slots.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    unblocked = []
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        free = info.slot_count - info.assigned_step_count
        if info.pending_step_count and free > 0:
            for _ in range(min(free, info.pending_step_count)):
                # The SQL storages (the ones with global concurrency limits) have it; the base class does not declare it.
                storage.assign_pending_steps([key])  # pyright: ignore[reportAttributeAccessIssue]
            unblocked.append(key)
    return unblocked


def build_pool_claims_sensor() -> dg.SensorDefinition:
    @running_sensor(
        "pool_claims_sensor",
        30,
        "Hands free pool slots (silver, gold, ingest) to steps left waiting for them; "
        "without it, a step that asked just as the slot was freed would wait forever.",
    )
    def pool_claims_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        unblocked = assign_stranded_pool_claims(instance_of(context))
        return dg.SkipReason(f"unblocked waiting steps of {', '.join(unblocked)}" if unblocked else "no step waits for a free slot")

    return pool_claims_sensor
