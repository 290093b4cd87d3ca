"""Production submission of the Spark job through dagster-databricks' Pipes client.

No Databricks workspace is reachable from CI (and none should be: it would cost money and need
credentials), so the `WorkspaceClient` is a fake that keeps DBFS in memory, records the submitted
run and plays the remote job's part of the Pipes protocol. Everything on the Dagster side is
real: the `spark` resource, `PipesDatabricksClient`, its DBFS context injector and message reader.
"""

import base64
import json
from types import SimpleNamespace

import dagster as dg
import pytest
from conftest import spec_named
from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, PIPES_PROTOCOL_VERSION, PIPES_PROTOCOL_VERSION_FIELD, decode_param

from pos_lakehouse.components import spark_jobs as spark_pipes
from pos_lakehouse.components.spark_jobs import SparkJobs, spark_jobs_from_environment


class FakeDbfs:
    """The DBFS REST calls `DbfsAPI` makes, on a dict."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()

    def do(self, method, path, query=None, body=None, headers=None, **_):
        op = path.rsplit("/", 1)[-1]
        if op == "mkdirs":
            self.dirs.add(body["path"])
            return {}
        if op == "put":
            self.files[body["path"]] = base64.b64decode(body["contents"]) if body.get("contents") else b""
            return {}
        if op == "delete":
            self.dirs.discard(body["path"])
            self.files = {k: v for k, v in self.files.items() if not k.startswith(body["path"])}
            return {}
        if op == "get-status":
            p = query["path"]
            if p in self.dirs or p in self.files:
                return {"path": p, "is_dir": p in self.dirs}
            raise FileNotFoundError(p)
        if op == "read":
            if query["path"] not in self.files:
                raise FileNotFoundError(query["path"])  # what the reader expects for "no further chunk yet"
            data = self.files[query["path"]]
            return {"bytes_read": len(data), "data": base64.b64encode(data).decode()}
        raise NotImplementedError(f"{method} {path}")


class FakeWorkspaceClient:
    """Records `jobs.submit` and answers as a successful run whose job reported one materialization."""

    def __init__(self, **_):
        self.api_client = FakeDbfs()
        self.submitted: list[dict] = []
        self.jobs = SimpleNamespace(submit=self._submit, get_run=self._get_run, cancel_run=lambda run_id: None)

    def _submit(self, tasks, **submit_args):
        self.submitted.append({"tasks": [t.as_dict() for t in tasks], **submit_args})
        env = tasks[0].new_cluster.spark_env_vars
        messages_dir = decode_param(env[DAGSTER_PIPES_MESSAGES_ENV_VAR])["path"]
        # What `PipesDbfsMessageWriter` in the remote job would leave behind.
        lines = [
            {"method": "opened", "params": {}},
            {
                "method": "report_asset_materialization",
                "params": {
                    "asset_key": "silver/bigbox_us/store_day_fact",
                    "metadata": {"rows": {"raw_value": 3, "type": "int"}},
                    "data_version": None,
                },
            },
            {"method": "closed", "params": {}},
        ]
        text = "\n".join(json.dumps({PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, **m}) for m in lines) + "\n"
        self.api_client.files[f"{messages_dir}/1.json"] = text.encode()
        return SimpleNamespace(bind=lambda: {"run_id": 4242})

    def _get_run(self, run_id):
        from databricks.sdk.service import jobs

        state = jobs.RunState(life_cycle_state=jobs.RunLifeCycleState.TERMINATED, result_state=jobs.RunResultState.SUCCESS)
        return SimpleNamespace(state=state, run_page_url=f"https://example.invalid/run/{run_id}")


@pytest.fixture
def fake_workspace(monkeypatch):
    made: list[FakeWorkspaceClient] = []

    def factory(**kwargs):
        made.append(FakeWorkspaceClient(**kwargs))
        return made[-1]

    monkeypatch.setattr(spark_pipes, "WorkspaceClient", factory)
    return made


def test_environment_switch_selects_databricks(monkeypatch):
    monkeypatch.setenv("POS_LAKEHOUSE_DATABRICKS_JOB_FILE", "/Volumes/main/pos/jobs/job.py")
    local, remote = spark_jobs_from_environment("local"), spark_jobs_from_environment("databricks")
    assert local.environment == "local" and remote.environment == "databricks"
    assert remote.job_file == "/Volumes/main/pos/jobs/job.py"


def test_databricks_submission_carries_job_file_wheel_and_pipes_bootstrap(fake_workspace):
    spec = spec_named("bigbox_us")
    resource = SparkJobs(environment="databricks", job_file="dbfs:/pos_lakehouse/spark_job.py", wheel="dbfs:/wheels/pos_lakehouse.whl")

    @dg.asset(key=["silver", "bigbox_us", "store_day_fact"])
    def remote_silver(context: dg.AssetExecutionContext, spark: SparkJobs):
        invocation = spark.run(context, spec, "silver", ["store_day_fact"], "abfss://lake@acct.dfs.core.windows.net/pos")
        return invocation.get_materialize_result()

    result = dg.materialize([remote_silver], resources={"spark": resource})
    assert result.success
    (client,) = fake_workspace
    (run,) = client.submitted
    (task,) = run["tasks"]
    assert task["spark_python_task"]["python_file"] == "dbfs:/pos_lakehouse/spark_job.py"
    assert task["spark_python_task"]["parameters"] == ["--transport", "dbfs"]
    assert task["libraries"] == [{"whl": "dbfs:/wheels/pos_lakehouse.whl"}]
    env = task["new_cluster"]["spark_env_vars"]
    assert env["POS_LAKEHOUSE_ENV"] == "databricks" and DAGSTER_PIPES_MESSAGES_ENV_VAR in env
    # The job's extras (what to do) travel in the Pipes context file the injector put on DBFS.
    context_path = decode_param(env["DAGSTER_PIPES_CONTEXT"])["path"]
    assert context_path  # deleted again after the run, as the real injector does
    (event,) = result.get_asset_materialization_events()
    mat = event.materialization
    assert mat.metadata["rows"].value == 3  # reported by the "remote" job through DBFS
    assert mat.metadata["Databricks Job Run ID"].value == "4242"


def test_existing_cluster_gets_pipes_bootstrap_as_cli_arguments(fake_workspace):
    resource = SparkJobs(environment="databricks", existing_cluster_id="0101-abc")
    task = resource.submit_task(spec_named("bigbox_us"), "gold").as_dict()
    assert task["existing_cluster_id"] == "0101-abc" and "new_cluster" not in task
    assert task["task_key"] == "pos_lakehouse_bigbox_us_gold"


def test_serverless_uses_an_environment_and_volumes():
    resource = SparkJobs(
        environment="databricks", compute="serverless", volume_path="/Volumes/main/pos/pipes", wheel="/Volumes/main/pos/wheels/p.whl"
    )
    spec = spec_named("bigbox_us")
    task = resource.submit_task(spec, "silver").as_dict()
    assert task["environment_key"] == "pos_lakehouse" and task["spark_python_task"]["parameters"] == ["--transport", "volumes"]
    env = resource.submit_args(spec, "silver")["environments"][0].as_dict()
    assert env["spec"]["dependencies"] == ["/Volumes/main/pos/wheels/p.whl"]
