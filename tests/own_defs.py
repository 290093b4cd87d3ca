"""A defs folder of a test's own: the project's infrastructure components (resources, gold, serving
with a one-group access policy) and the retailer YAMLs the test writes -- never the shipped retailers."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import dagster as dg
import yaml
from demo_defs import SHIPPED_DEFS as DEFS  # only its infrastructure parts are copied, no retailer

POLICY = "groups:\n  pos_admins: {description: everyone, all_retailers: true}\nusers:\n  ada: [pos_admins]\n"


def retailer_yaml(
    name: str,
    retailer_id: int,
    *,
    files: list[dict],
    columns: dict[str, dict[str, str]],
    country: str = "ES",
    currency: str = "EUR",
    **more,
) -> str:
    """A retailer's `defs.yaml` as a user writes it: landing files, their columns, and `more` attributes
    (cadence, limits ...); its security key follows from the id."""
    attributes = {
        "retailer_id": retailer_id,
        "name": name,
        "country": country,
        "currency": currency,
        "secure_group_key": 118000 + retailer_id,
        **more,
        "delivery": {"channel": "landing", "files": files},
        "columns": columns,
    }
    document = {"type": "pos_lakehouse.components.RetailerPipeline", "attributes": attributes}
    return yaml.safe_dump(document, sort_keys=False, width=1000)


def csv_file(name: str, match: str, holds: list[str], **more) -> dict:
    """One `delivery.files` entry: `;`-separated CSV files matching `match`."""
    return {"name": name, "match": match, "holds": holds, "format": {"type": "csv", "separator": ";"}, **more}


def defs_folder(root: Path, retailers: dict[str, str]) -> Path:
    """`root` laid out like `defs/`, with one `retailers/<name>/defs.yaml` per entry (rewritten when called again)."""
    if not (root / "resources.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEFS / "resources.py", root / "resources.py")
        for part in ("gold", "serving"):
            shutil.copytree(DEFS / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        (root / "serving" / "access_policy.yaml").write_text(POLICY)
    for name, text in retailers.items():
        (root / "retailers" / name).mkdir(parents=True, exist_ok=True)
        (root / "retailers" / name / "defs.yaml").write_text(text)
    return root


def execute_ingest(defs: dg.Definitions, retailer: str, keys: list[dg.AssetKey] | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    """One run of the retailer's assets (bronze, silver, from its silver step its gold partitions; or `keys`),
    in process, as its sensors request it: the code location's asset job with the retailer's assets and tags."""
    from pos_lakehouse.sensors.targets import INGEST_TAG, RETAILER_TAG

    if keys is None:
        graph = defs.resolve_asset_graph()
        keys = [k for k in graph.get_all_asset_keys() if len(k.path) == 3 and k.path[0] in ("bronze", "silver") and k.path[1] == retailer]
    tags = {RETAILER_TAG: retailer, INGEST_TAG: retailer, **kwargs.pop("tags", {})}
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(asset_selection=keys, tags=tags, **kwargs)


def run_ingest(defs_dir: Path, instance: dg.DagsterInstance, retailer: str, code: str, config: dict) -> dg.ExecuteInProcessResult:
    """One run of the retailer's assets (bronze, silver, its gold partitions), in process."""
    from pos_lakehouse.definitions import build_definitions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test policy names no group for the retailer: a PolicyWarning
        defs = build_definitions(defs_dir)
    return execute_ingest(defs, retailer, run_config=config, instance=instance, partition_key=code, raise_on_error=False)
