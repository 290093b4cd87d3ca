"""Resources by role; the environment switch in `settings` decides their implementation."""

import dagster as dg

from pos_lakehouse.components.spark_jobs import spark_jobs_from_environment
from pos_lakehouse.ingest.object_store import landing_zone_for
from pos_lakehouse.settings import current_settings
from pos_lakehouse.storage.lake import Lake


@dg.definitions
def resources() -> dg.Definitions:
    settings = current_settings()
    return dg.Definitions(
        resources={
            "lake": Lake(root=settings.data_root),
            # A local folder, or an object store when the landing root is a URI (s3://, abfss://, gs://).
            "landing": landing_zone_for(settings.landing_root, settings.landing_settle_seconds, settings.landing_done_suffix),
            # Big retailers' Spark job through Pipes: local subprocess, or Databricks.
            "spark": spark_jobs_from_environment(settings.environment),
        }
    )
