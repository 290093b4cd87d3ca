"""Landing-zone sensors: new or changed files become runs, each file once."""

import hashlib
import json

import dagster as dg

from pos_lakehouse.ingest.landing import LandedFile, LandingZone
from pos_lakehouse.ingest.sftp import SftpError, landing_for
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import only_retailers, sensor_interval


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


def build_landing_sensor(spec: RetailerSpec, job_name: str, bronze_op_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{spec.name}_landing_sensor",
        job_name=job_name,
        minimum_interval_seconds=sensor_interval(15),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Turns new or changed files in {spec.name}'s landing folder into bronze runs (cursor: file -> size:mtime).",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
        chosen = only_retailers()
        if chosen is not None and spec.name not in chosen:  # `pos-lakehouse run --retailer ...` chose others
            return dg.SensorResult(skip_reason=f"{spec.name} is not among the retailers chosen for this run", cursor=context.cursor)
        cursor = json.loads(context.cursor) if context.cursor else {}
        try:
            landing = landing_for(spec, landing)  # a retailer's SFTP folder when delivery.channel is sftp
            listed = landing.list_files(spec.name)
        except SftpError as exc:  # unreachable server, wrong password, missing settings: shown on the tick
            return dg.SensorResult(skip_reason=str(exc), cursor=context.cursor)
        batches, next_cursor, unmatched = plan_runs(spec, listed, cursor)
        for name in unmatched:
            context.log.warning(f"{spec.name}: {name!r} matches no delivery.files pattern; ignored")
        requests = [
            dg.RunRequest(
                run_key=run_key(spec, batch),
                partition_key=spec.data_provider_code,
                run_config={"ops": {bronze_op_name: {"config": {"files": [f.name for f in batch]}}}},
                tags={"retailer": spec.name, "pos_lakehouse/files": str(len(batch))},
            )
            for batch in batches
        ]
        if not requests:
            return dg.SensorResult(skip_reason=f"no new files in {landing.describe(spec.name)}", cursor=json.dumps(next_cursor))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(next_cursor))

    return landing_sensor
