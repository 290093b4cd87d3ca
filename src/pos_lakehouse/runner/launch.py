"""One run of a retailer's assets queued on the instance from the code location the daemon serves, as
the daemon's sensors queue theirs: same code location name and module, same asset job, same tags.

`dagster job launch` does this for a named job but takes no asset selection, and a retailer's runs
select its assets in the code location's asset job (`sensors.targets`). What follows is that
command's own steps (`dagster._cli.job.execute_launch_command`) with the selection added, as the
sensor daemon creates a run for a sensor's request. The code location is loaded in this process
(Dagster's in-process code location, under the name and from the module the daemon's code server
uses), where a workspace file would start one more code server process beside the daemon's.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

from pos_lakehouse.runner.daemon import LOCATION_NAME, MODULE, working_directory


def code_location_origin() -> InProcessCodeLocationOrigin:
    """The code location as the daemon's workspace names and loads it (`daemon.write_workspace`), in this process."""
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=MODULE, working_directory=working_directory())
    return InProcessCodeLocationOrigin(target, location_name=LOCATION_NAME)


def launch_asset_run(
    instance: dg.DagsterInstance,
    keys: Sequence[dg.AssetKey],
    run_config: Mapping,
    tags: Mapping[str, str],
    run_id: str,
) -> dg.DagsterRun:
    """Queue a run of `keys` (with their checks) in the code location's asset job; the daemon starts it."""
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(code_location_origin()), read_only=False) as process:
        context = process.create_request_context()
        location = context.get_code_location(LOCATION_NAME)
        [repository] = location.get_repositories().values()
        selector = JobSubsetSelector(
            location_name=LOCATION_NAME,
            repository_name=repository.name,
            job_name=IMPLICIT_ASSET_JOB_NAME,
            op_selection=None,
            asset_selection=keys,
        )
        job = location.get_job(selector)
        plan = location.get_execution_plan(job, dict(run_config), step_keys_to_execute=None, known_state=None, instance=instance)
        run = instance.create_run(
            job_name=job.name,
            run_id=run_id,
            run_config=dict(run_config),
            resolved_op_selection=job.resolved_op_selection,
            step_keys_to_execute=None,
            status=None,
            op_selection=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**(job.run_tags or {}), **tags},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=frozenset(keys),
            asset_check_selection=None,  # every check of the selected assets, as for a sensor's request
            asset_graph=repository.asset_graph,
        )
        return instance.submit_run(run.run_id, context)
