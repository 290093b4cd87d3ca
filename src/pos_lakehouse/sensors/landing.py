"""Landing-zone sensor: new or changed files become runs, each file once."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from pos_lakehouse.ingest.landing import LandedFile, LandingZone
from pos_lakehouse.ingest.reachability import SourcesUnreachable, sort_failures
from pos_lakehouse.ingest.sftp import SftpError, landing_for
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.instance import resource_of
from pos_lakehouse.sensors.running import running_sensor
from pos_lakehouse.sensors.targets import bronze_config, ingest_request, ingest_selection
from pos_lakehouse.settings import only_retailers


def plan_runs(
    spec: RetailerSpec, files: list[LandedFile], cursor: dict[str, str]
) -> tuple[list[list[LandedFile]], dict[str, str], list[str]]:
    """Batches of new or changed files, the cursor after them, and files no pattern matches."""
    new, unmatched = [], []
    # The cursor holds only what is listed now: a deleted file leaves it (so it does not grow
    # forever), and a file delivered again under that name is new whatever its size and mtime.
    next_cursor = {}
    for f in files:
        next_cursor[f.name] = f.identity
        if cursor.get(f.name) == f.identity:
            continue
        if spec.file_spec_for(f.name) is None:
            unmatched.append(f.name)
        else:
            new.append(f)
    size = max(1, spec.delivery.max_files_per_run)
    return [new[i : i + size] for i in range(0, len(new), size)], next_cursor, unmatched


def batch_digest(batch: list[LandedFile]) -> str:
    """Same files in the same state -> same digest (the run key's part that says which files)."""
    return hashlib.sha256("\n".join(f"{f.name}|{f.identity}" for f in batch).encode()).hexdigest()[:24]


def run_key(spec: RetailerSpec, batch: list[LandedFile]) -> str:
    """Same files in the same state -> same key, so Dagster never launches the run twice."""
    return f"{spec.name}-{batch_digest(batch)}"


LANDING_SENSOR = "retailer_landing_sensor"
# Listing a remote folder (SFTP, object store) waits on the network: a few at once keep a tick
# over hundreds of retailers short; a local folder lists in well under a millisecond either way.
LISTING_THREADS = 8


def _listing(spec: RetailerSpec, landing: LandingZone) -> tuple[LandingZone, list[LandedFile] | str]:
    """The retailer's zone and its files, or why they could not be listed (shown on the tick, never raised)."""
    try:
        zone = landing_for(spec, landing)  # a retailer's SFTP folder when delivery.channel is sftp
        return zone, zone.list_files(spec.name)
    except SftpError as exc:  # unreachable server, wrong password, missing settings
        return landing, str(exc)
    except Exception as exc:  # an object store or folder that fails: this retailer only, the others go on
        return landing, f"{spec.name}: cannot list {landing.describe(spec.name)}: {type(exc).__name__}: {exc}"


def build_landing_sensor(specs: list[RetailerSpec]) -> dg.SensorDefinition:
    """One sensor over every file-delivering retailer (local folder, object store, SFTP).

    One sensor, not one per retailer: the daemon evaluates sensors one after another, so a
    sensor per retailer made every retailer wait for all the others' ticks. Its cursor holds
    each retailer's own `file -> size:mtime` map; run keys stay `<retailer>-<digest>`. Each run
    selects its retailer's bronze and silver assets (`sensors.targets`).
    """
    by_name = {s.name: s for s in specs}

    @running_sensor(
        LANDING_SENSOR,
        8,
        # A tick lists every folder in well under a second even at hundreds of retailers, so it can
        # run often. The daemon looks at its sensors every 5 s and a tick is due once 8 s have
        # passed since the last one started: one tick every 10 s (with 10 here: every 15 s).
        "Turns new or changed files in every retailer's landing folder (local, object store or SFTP) into "
        "its ingest runs (cursor: retailer -> file -> size:mtime).",
        asset_selection=ingest_selection(specs),
    )
    def retailer_landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        landing: LandingZone = resource_of(context, "landing")  # built once per process (`sensors.instance`)
        cursor = json.loads(context.cursor) if context.cursor else {}
        # `pos-lakehouse run --retailer ...` chose some retailers: the others' files stay new for later.
        chosen = only_retailers()
        listed_specs = [s for s in by_name.values() if chosen is None or s.name in chosen]
        with ThreadPoolExecutor(LISTING_THREADS) as pool:
            listings = dict(zip([s.name for s in listed_specs], pool.map(lambda s: _listing(s, landing), listed_specs), strict=True))
        # Retailers no longer in the code location leave the cursor; one whose listing failed or that
        # was not chosen keeps its entry.
        next_cursor: dict[str, dict[str, str]] = {n: c for n, c in cursor.items() if n in by_name and n not in listings}
        requests, problems, quiet, unreachable = [], [], [], []
        for name, (zone, listed) in listings.items():
            spec = by_name[name]
            if isinstance(listed, str):
                sort_failures(spec, listed, unreachable, problems)
                if name in cursor:
                    next_cursor[name] = cursor[name]
                continue
            batches, next_cursor[name], unmatched = plan_runs(spec, listed, cursor.get(name, {}))
            for file_name in unmatched:
                context.log.warning(f"{name}: {file_name!r} matches no delivery.files pattern; ignored")
            if not batches:
                quiet.append(zone.describe(name))
            requests += [
                ingest_request(
                    spec,
                    run_key=run_key(spec, batch),
                    run_config=bronze_config(spec, {"files": [f.name for f in batch]}),
                    tags={"pos_lakehouse/files": str(len(batch))},
                )
                for batch in batches
            ]
        if unreachable and not requests:
            raise SourcesUnreachable(unreachable)  # the tick fails (see `ingest.reachability`); the cursor stands
        problems += [message for _, message in unreachable]
        if not requests:
            shown = ", ".join(quiet[:5]) + (f" and {len(quiet) - 5} other folders" if len(quiet) > 5 else "")
            skip = "; ".join([f"no new files in {shown}"] * bool(quiet) + problems)
            return dg.SensorResult(skip_reason=skip, cursor=json.dumps(next_cursor))
        # A tick that requests runs shows no skip reason: the retailers it could not list are logged.
        for problem in problems:
            context.log.warning(problem)
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(next_cursor))

    return retailer_landing_sensor
