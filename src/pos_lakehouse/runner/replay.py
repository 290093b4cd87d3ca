"""`pos-lakehouse replay`: a retailer's silver and gold derived again from bronze, as one Dagster run.

The run selects the retailer's assets as its delivery runs do, launched on the instance through the
same workspace the daemon loads (so it shows in the UI like every delivery run), with a run
config that says what to read again (`layers.replay.ReplayPlan`). Its run id is derived from the
plan and the YAML: the same replay is launched once; a new YAML or new deliveries make a new one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg

from pos_lakehouse.layers.bronze import read_as
from pos_lakehouse.layers.replay import ReplayPlan, plan_replay, rejected_files, rejected_under_another_yaml
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.runner.launch import launch_asset_run
from pos_lakehouse.sensors.targets import bronze_config, ingest_keys, ingest_tags
from pos_lakehouse.storage.lake import Lake

REPLAY_TAG = "pos_lakehouse/replay"
_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-4c5d-9e0f-1a2b3c4d5e6f")


def replay_run_id(spec: RetailerSpec, plan: ReplayPlan, attempt: int = 0) -> str:
    """The same plan under the same YAML -> the same run id, so it is launched once."""
    yaml_print = {f.name: read_as(spec, f) for f in spec.delivery.files}
    text = json.dumps([spec.name, plan.replay_from, plan.files, plan.read_again, yaml_print, spec.scd2, attempt], sort_keys=True)
    return str(uuid.uuid5(_NAMESPACE, text))


def run_config(spec: RetailerSpec, plan: ReplayPlan) -> dict:
    return bronze_config(spec, {"replay": True, "replay_from": plan.replay_from, "files": plan.files, "read_again": plan.read_again})


def launch(spec: RetailerSpec, plan: ReplayPlan, run_id: str, describe: str) -> None:
    """Queue the replay run on the instance (the daemon starts it), from the code location the daemon loads."""
    tags = {"dagster/partition": spec.data_provider_code, REPLAY_TAG: describe, **ingest_tags(spec)}
    with dg.DagsterInstance.get() as instance:
        try:
            launch_asset_run(instance, ingest_keys(spec), run_config(spec, plan), tags, run_id)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            raise RuntimeError(f"could not launch the replay run: {lines[-1] if lines else type(exc).__name__}") from exc


def replay(
    console,
    root: Path,
    spec: RetailerSpec,
    file: str | None,
    since: date | None,
    process: Callable[[Callable[[], None]], tuple[int, list]],
) -> tuple[int, list]:
    """Plan the replay, print what it does, launch it once and let `process` (the daemon) run it."""
    plan = plan_replay(Lake(root=str(root)), spec, file, since)
    describe = f"file {file}" if file else (f"since {since}" if since else "all")
    for note in plan.notes:
        console.print(f"[bold]replay[/] {spec.name}: {note}")
    with dg.DagsterInstance.get() as instance:
        attempt = 0
        run_id = replay_run_id(spec, plan)
        while (existing := instance.get_run_by_id(run_id)) is not None:
            if existing.status != dg.DagsterRunStatus.FAILURE and existing.status != dg.DagsterRunStatus.CANCELED:
                console.print(
                    f"[bold]replay[/] {spec.name}: the same replay under the same YAML is run {run_id[:8]} ({existing.status.value})"
                )
                return 0, []
            attempt += 1
            run_id = replay_run_id(spec, plan, attempt)
    return process(lambda: launch(spec, plan, run_id, describe))


def skipped_known_files(instance: dg.DagsterInstance, spec: RetailerSpec, since: float) -> list[str]:
    """Files the retailer's bronze steps skipped since `since` as already in bronze (their `files` metadata)."""
    skipped = []
    for file_spec in spec.delivery.files:
        key = dg.AssetKey(["bronze", spec.name, file_spec.name])
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_timestamp=since), limit=100).records
        for record in records:
            materialization = record.asset_materialization
            files = materialization.metadata.get("files") if materialization else None
            for line in str(getattr(files, "value", files) or "").splitlines():
                if ": already in bronze" in line:
                    skipped.append(line.removeprefix("- ").split(": already in bronze")[0])
    return sorted(set(skipped))


def replay_hints(
    lake: Lake, specs: list[RetailerSpec], instance: dg.DagsterInstance | None = None, since: float | None = None
) -> list[str]:
    """For `run`'s summary: how to replay the files a retailer's YAML now reads differently from when they were
    rejected, and those this session skipped as already in bronze (a corrected YAML does not read them again)."""
    hints = []
    for spec in specs:
        known = skipped_known_files(instance, spec, since) if instance is not None and since is not None else []
        if known:
            hints.append(
                f"{spec.name}: {len(known)} file(s) skipped as already in bronze; if its YAML changed since they were read, "
                f"`pos-lakehouse replay --retailer {spec.name} --file {known[0]}` derives silver and gold from them again"
            )
        if rejected_files(lake, spec).is_empty():
            continue
        files = rejected_under_another_yaml(lake, spec)
        if files:
            hints.append(
                f"{spec.name}: {len(files)} file(s) rejected under an earlier YAML are not read again by `run`; "
                f"`pos-lakehouse replay --retailer {spec.name}` reads them (one: --file {files[0]})"
            )
    return hints
