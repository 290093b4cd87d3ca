"""Where Spark runs is configuration: the operator's variable, then the retailer's YAML, then the
resource's; a bad value fails naming where it came from (no Spark is started here)."""

from __future__ import annotations

import pytest
from conftest import spec_named

from pos_lakehouse.settings import spark_master


def test_the_variable_wins_over_the_yaml_which_wins_over_the_resource(monkeypatch):
    monkeypatch.delenv("POS_LAKEHOUSE_SPARK_REMOTE", raising=False)
    assert spark_master(None) == "local"
    assert spark_master("spark://10.0.0.5:7077") == "spark://10.0.0.5:7077"
    spec = spec_named("bigbox_us").model_copy(update={"spark_master": "sc://spark.internal:15002"})
    from pos_lakehouse.components.spark_jobs import SparkJobs

    resource = SparkJobs(master="spark://10.0.0.5:7077")
    assert spark_master(spec.spark_master or resource.master) == "sc://spark.internal:15002"
    monkeypatch.setenv("POS_LAKEHOUSE_SPARK_REMOTE", "sc://localhost:15102")
    assert spark_master(spec.spark_master or resource.master) == "sc://localhost:15102"


def test_a_bad_place_is_refused_naming_its_source(monkeypatch):
    monkeypatch.setenv("POS_LAKEHOUSE_SPARK_REMOTE", "localhost:15002")
    with pytest.raises(ValueError, match="POS_LAKEHOUSE_SPARK_REMOTE must be"):
        spark_master("local")
    spec = spec_named("bigbox_us")
    with pytest.raises(ValueError, match="bigbox_us: spark_master must be"):
        type(spec).model_validate({**spec.model_dump(), "spark_master": "yarn"})


def test_a_remote_connect_server_starts_no_local_spark(monkeypatch):
    """With `sc://` the job is handed the URL; the step's own server is never started."""
    import dagster as dg

    from pos_lakehouse.components import spark_jobs

    seen = {}

    class Recorder:
        def __init__(self, env):
            seen["env"] = env

        def run(self, context, command, extras):
            seen["extras"] = extras
            return "invocation"

    monkeypatch.delenv("POS_LAKEHOUSE_SPARK_REMOTE", raising=False)
    monkeypatch.setattr(dg, "PipesSubprocessClient", Recorder)
    monkeypatch.setattr(spark_jobs, "LocalSparkServer", lambda *a, **k: pytest.fail("a local server was started"))
    spec = spec_named("bigbox_us").model_copy(update={"spark_master": "sc://localhost:15102"})
    resource = spark_jobs.SparkJobs(cores=2)
    assert resource.run(None, spec, "silver", ["prod_dim"], "/data") == "invocation"
    assert seen["env"]["POS_LAKEHOUSE_SPARK_REMOTE"] == "sc://localhost:15102"
    assert seen["extras"]["shuffle_partitions"] == 2 and "master" not in seen["extras"]
