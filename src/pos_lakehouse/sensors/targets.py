"""What a retailer's runs select and carry: its bronze and silver assets, its partition, and the tags
that say whose run it is.

Every retailer's delivery, catch-up and reference refresh runs are runs of Dagster's one asset job
over the code location, each selecting that retailer's assets -- not a job per retailer. Each job
is a snapshot the code server serializes and the daemon reads back at every workspace refresh (once
a minute), so a job per retailer made the daemon's idle cost grow with the retailers. One named job over every retailer's assets is not
possible either: Dagster asks a named asset job's assets to share one partitions definition, and
each retailer's assets have their own (its `data_provider_code`). The asset job Dagster builds
for the whole code location allows that, and a run's selection then holds one retailer's assets.

Who reads the retailer from a run reads the `retailer` tag (with `pos_lakehouse/ingest`, the tag
`dagster.yaml` limits to one run per retailer at a time), never the job's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from pos_lakehouse.retailer import RetailerSpec

RETAILER_TAG = "retailer"
# One run at a time per value (`concurrency.runs.tag_concurrency_limits` in dagster.yaml).
INGEST_TAG = "pos_lakehouse/ingest"


def ingest_keys(spec: RetailerSpec) -> list[dg.AssetKey]:
    """The retailer's bronze and silver assets: what its delivery run materializes (gold from its silver step)."""
    return [
        *(dg.AssetKey(["bronze", spec.name, f.name]) for f in spec.delivery.files),
        *(dg.AssetKey(["silver", spec.name, t]) for t in spec.silver_tables),
    ]


def ingest_selection(specs: Sequence[RetailerSpec]) -> dg.AssetSelection:
    """Every asset the retailers' runs may select (a sensor's target)."""
    return dg.AssetSelection.assets(*(k for spec in specs for k in ingest_keys(spec)))


def ingest_tags(spec: RetailerSpec) -> dict[str, str]:
    return {RETAILER_TAG: spec.name, INGEST_TAG: spec.name}


def ingest_request(
    spec: RetailerSpec,
    *,
    run_key: str | None = None,
    keys: Sequence[dg.AssetKey] | None = None,
    run_config: Mapping | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.RunRequest:
    """A run of the retailer's assets (all of them, or `keys`) for its partition, tagged as its run."""
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=list(keys if keys is not None else ingest_keys(spec)),
        partition_key=spec.data_provider_code,
        run_config=dict(run_config or {}),
        tags={**(tags or {}), **ingest_tags(spec)},
    )


def bronze_config(spec: RetailerSpec, config: Mapping) -> dict:
    """Run config for the retailer's bronze step (`BronzeRunConfig`)."""
    return {"ops": {f"{spec.name}_bronze": {"config": dict(config)}}}


def retailer_of(run: dg.DagsterRun) -> str | None:
    """The retailer whose run this is, when it selects that retailer's bronze or silver assets only."""
    name = run.tags.get(INGEST_TAG) or run.tags.get(RETAILER_TAG)
    keys = run.asset_selection
    if not name or not keys:
        return None
    if all(len(k.path) == 3 and k.path[0] in ("bronze", "silver") and k.path[1] == name for k in keys):
        return name
    return None


def run_label(run: dg.DagsterRun) -> str:
    """How `run` and `demo` name a run: `<retailer>_ingest` for a retailer's run, else its job or assets."""
    retailer = retailer_of(run)
    if retailer:
        return f"{retailer}_ingest"
    if not run.job_name.startswith("__ASSET_JOB"):
        return run.job_name
    keys = sorted(k.to_user_string() for k in run.asset_selection or [])
    what = "automation" if run.tags.get("dagster/auto_materialize") == "true" else "assets"
    return f"{what}: {', '.join(keys)}"
