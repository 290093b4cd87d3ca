"""Poll sensors: one per polling interval, asking each pulled retailer's source (API, database) for news.

The sensor asks the source a cheap question ("anything changed after our durable position?")
and turns news into a run whose key is derived from the position and the answer: the same
source state never starts two runs, and a run that failed for a position is retried a few
times under derived keys (`-retry1`, ...) before the sensor gives up and says so.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from pos_lakehouse.ingest.polling import probe
from pos_lakehouse.ingest.reachability import SourcesUnreachable, sort_failures
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.instance import instance_of, resource_of
from pos_lakehouse.sensors.running import running_sensor
from pos_lakehouse.sensors.targets import ingest_request, ingest_selection
from pos_lakehouse.settings import only_retailers
from pos_lakehouse.storage.lake import Lake

MAX_ATTEMPTS_PER_POSITION = 3


def _key_for_attempt(context: dg.SensorEvaluationContext, base: str) -> str | None:
    """The base key, or `-retryN` after failed runs with the earlier keys; None after too many failures."""
    for attempt in range(MAX_ATTEMPTS_PER_POSITION):
        key = base if attempt == 0 else f"{base}-retry{attempt}"
        runs = instance_of(context).get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
        if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
            return key
    return None


PROBE_THREADS = 8


def _ask(lake: Lake, spec: RetailerSpec) -> dict | str:
    """The source's news, or why it could not be asked (shown on the tick, never raised)."""
    try:
        return probe(lake, spec)
    except Exception as exc:  # unreachable source or missing settings: say so, try again at its next poll
        return f"{spec.name}: cannot ask the {spec.delivery.channel} source: {exc}"


def _request(context: dg.SensorEvaluationContext, spec: RetailerSpec, news: dict) -> dg.RunRequest | str | None:
    fresh = {k: v for k, v in news.items() if v}
    if not fresh:
        return None
    digest = hashlib.sha256(json.dumps(fresh, sort_keys=True).encode()).hexdigest()[:24]
    key = _key_for_attempt(context, f"{spec.name}-pull-{digest}")
    if key is None:
        return (
            f"{spec.name}: {MAX_ATTEMPTS_PER_POSITION} pull runs failed for the same position; see their logs "
            "(the next change at the source starts a new attempt)"
        )
    return ingest_request(spec, run_key=key, tags={"pos_lakehouse/pull": ",".join(sorted(fresh))})


def poll_sensor_name(poll_seconds: int) -> str:
    return f"every_{poll_seconds}s_poll_sensor"


def build_poll_sensors(specs: list[RetailerSpec]) -> list[dg.SensorDefinition]:
    """One sensor per polling interval over the pulled retailers (API, database) asked that often.

    Not one per retailer: the daemon evaluates sensors one after another, so a sensor per
    retailer made every retailer wait for all the others' ticks. A tick asks each source of its
    group (a few at once), so each is still asked every `poll_seconds` of its own.
    """
    by_interval: dict[int, list[RetailerSpec]] = {}
    for spec in specs:
        by_interval.setdefault(spec.delivery.poll_seconds, []).append(spec)
    return [_poll_sensor(seconds, group) for seconds, group in sorted(by_interval.items())]


def _poll_sensor(seconds: int, specs: list[RetailerSpec]) -> dg.SensorDefinition:
    @running_sensor(
        poll_sensor_name(seconds),
        seconds,
        f"Asks the API/database source of each retailer polled every {seconds} s ({len(specs)}) whether "
        "anything changed after the position stored with bronze; news becomes a pull run (run key derived from position and news).",
        asset_selection=ingest_selection(specs),
    )
    def poll_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        lake: Lake = resource_of(context, "lake")  # built once per process (`sensors.instance`)
        # `pos-lakehouse run --retailer ...` chose some retailers: the others' sources are asked later.
        chosen = only_retailers()
        asked = [s for s in specs if chosen is None or s.name in chosen]
        with ThreadPoolExecutor(PROBE_THREADS) as pool:
            answers = list(pool.map(lambda s: _ask(lake, s), asked))
        requests, notes, quiet, unreachable = [], [], [], []
        for spec, news in zip(asked, answers, strict=True):
            outcome = news if isinstance(news, str) else _request(context, spec, news)
            if isinstance(news, str):
                sort_failures(spec, news, unreachable, notes)
            elif isinstance(outcome, dg.RunRequest):
                requests.append(outcome)
            elif isinstance(outcome, str):
                notes.append(outcome)
            else:
                quiet.append(spec.name)
        if unreachable and not requests:
            raise SourcesUnreachable(unreachable)  # the tick fails (see `ingest.reachability`)
        notes += [message for _, message in unreachable]
        if not requests:
            summary = [f"{', '.join(quiet)}: nothing changed since the stored position"] if quiet else []
            return dg.SensorResult(skip_reason="; ".join(summary + notes))
        # A tick that requests runs shows no skip reason: the sources it could not ask are logged.
        for note in notes:
            context.log.warning(note)
        return dg.SensorResult(run_requests=requests)

    return poll_sensor
