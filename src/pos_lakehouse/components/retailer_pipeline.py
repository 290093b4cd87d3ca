"""RetailerPipeline: one YAML file becomes a retailer's bronze and silver assets and their checks."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field, ValidationError

from pos_lakehouse.components.asset_keys import bronze_key, dagster_metadata, fail_on_rejected_files, silver_key
from pos_lakehouse.components.gold_publication import GoldLayer, log_gold_publications
from pos_lakehouse.components.retailer_scaffold import RetailerScaffolder
from pos_lakehouse.components.spark_jobs import SparkJobs
from pos_lakehouse.components.yaml_errors import YamlError, validation_lines
from pos_lakehouse.components.yaml_schema import TakenAsWritten, yaml_schema_model
from pos_lakehouse.ingest.landing import LandingZone
from pos_lakehouse.ingest.polling import is_pulled, pulled_bronze_results
from pos_lakehouse.ingest.sftp import landing_for
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.engine_choice import engine_for, pending_bronze_rows
from pos_lakehouse.layers.replay import rewind_silver
from pos_lakehouse.layers.silver import CALENDAR, refresh_silver, silver_metadata, silver_result_from_dict
from pos_lakehouse.layers.silver.calendar import calendar_source, read_calendar
from pos_lakehouse.layers.silver.quarantine import fix_hint, quarantine_overflows
from pos_lakehouse.quality.checks import run_silver_checks, silver_check_specs
from pos_lakehouse.quality.completeness import calendar_metadata
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.reference import REFERENCE_KEYS
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

FRESHNESS = {
    "daily": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)),
    "weekly": dg.FreshnessPolicy.time_window(fail_window=timedelta(days=9), warn_window=timedelta(days=8)),
}
# The same windows as a tag, so `dg list defs` and asset search show them.
FRESHNESS_TAG = {"daily": "warn-30h_fail-48h", "weekly": "warn-8d_fail-9d"}


class BronzeRunConfig(dg.Config):
    """Which landing files this run ingests (the sensor fills it in)."""

    files: list[str] = Field(
        default_factory=list,
        description="Landing files (relative to the retailer folder) to ingest. Empty: every file not yet in bronze.",
    )
    replay: bool = Field(default=False, description="A replay (`pos-lakehouse replay`): only `files` are read from landing.")
    replay_from: dict[str, int] = Field(
        default_factory=dict,
        description="Replay: per bronze table, the version after which silver reads its rows again with the current YAML (-1: all).",
    )
    read_again: bool = Field(default=False, description="Replay of a named file: read it even if these bytes were rejected before.")


@dg.scaffold_with(RetailerScaffolder)
class RetailerPipeline(RetailerSpec, TakenAsWritten, dg.Component, dg.Resolvable):
    """A retailer's POS pipeline: bronze and silver Delta assets and their checks."""

    @classmethod
    def get_model_cls(cls):
        return yaml_schema_model(super().get_model_cls(), cls)

    @classmethod
    def load(cls, attributes, context):
        # The retailer's own checks (mapping against the canonical model, SCD2) as one line per
        # mistake with its file and line, in `dg check defs` and every command alike.
        try:
            return super().load(attributes, context)
        except ValidationError as exc:
            raise YamlError("\n".join(validation_lines(exc, Path(context.path) / "defs.yaml"))) from None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        spec = RetailerSpec.model_validate(self.model_dump())
        partitions = dg.StaticPartitionsDefinition([spec.data_provider_code])
        group = spec.name
        who = f"{spec.name} ({spec.retailer_id}, {spec.country})"

        bronze_specs = [
            dg.AssetSpec(
                key=bronze_key(spec, f.name),
                description=f"Raw `{f.name}` files of {who}, appended once per delivery ({f.format.type}, `{f.match}`).",
                group_name=group,
                kinds={"polars", "delta"},
                tags={"layer": "bronze", "retailer": spec.name},
                metadata={"landing_pattern": f.match, "holds": ", ".join(f.holds)},
            )
            for f in spec.delivery.files
        ]

        @dg.multi_asset(
            name=f"{spec.name}_bronze",
            specs=bronze_specs,
            partitions_def=partitions,
            can_subset=True,
            description=f"Append new deliveries of {who} to bronze, exactly once per file.",
            # One bronze writer per retailer at a time (the pool's limit is 1, see dagster.yaml).
            pool=f"ingest_{spec.name}",
        )
        def bronze(context: dg.AssetExecutionContext, config: BronzeRunConfig, lake: Lake, landing: LandingZone):
            if config.replay:  # silver reads the replayed deliveries again (its bookmarks set back)
                for line in rewind_silver(lake, spec, config.replay_from):
                    context.log.info(line)
            # api/database retailers are pulled (config.files then names bronze tables); sftp has its own zone.
            if is_pulled(spec) and config.replay:  # nothing pulled: bronze stays as it is
                for key in context.selected_asset_keys:
                    if key.path[0] == "bronze":
                        yield dg.MaterializeResult(asset_key=key, metadata={"replay": True, "rows_appended": 0})
                return
            if is_pulled(spec):
                yield from pulled_bronze_results(context, lake, spec, config.files, lambda t: bronze_key(spec, t))
                return
            landing = landing_for(spec, landing)
            names = config.files
            if not names and not config.replay:
                names = [f.name for f in landing.list_files(spec.name) if spec.file_spec_for(f.name)]
                context.log.info(f"no files given: considering all {len(names)} files in {landing.describe(spec.name)}")
            outcomes = ingest_files(lake, landing, spec, names, read_again=config.read_again)
            for o in outcomes:
                (context.log.error if o.status == "rejected" else context.log.info)(o.describe())
            for fs in spec.delivery.files:
                key = bronze_key(spec, fs.name)
                if key not in context.selected_asset_keys:
                    continue
                mine = [o for o in outcomes if o.table == fs.name]
                ingested = [o for o in mine if o.status == "ingested"]
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        "files_ingested": len(ingested),
                        "rows_appended": sum(o.rows for o in ingested),
                        "files_skipped_duplicate": len([o for o in mine if o.status == "duplicate"]),
                        "files_empty": len([o for o in mine if o.status == "empty"]),  # incremental: nothing new
                        "files_rejected": len([o for o in mine if o.status == "rejected"]),
                        # Same bytes as a file already in quarantine: recognised by hash, not read again.
                        "files_rejected_before": len([o for o in mine if o.status == "known_rejected"]),
                        "files": dg.MetadataValue.md("\n".join(f"- {o.describe()}" for o in mine) or "none"),
                        "extra_columns_kept": ", ".join(sorted({c for o in ingested for c in o.extra_columns})) or "none",
                        "dagster/uri": lake.bronze(spec.name, fs.name),
                    },
                )
            fail_on_rejected_files(spec.name, outcomes)

        silver_specs = []
        for table_name in spec.silver_tables:
            table = canonical.TABLES[table_name]
            deps = [bronze_key(spec, f.name) for f in spec.files_holding(table_name)]
            if table_name == CALENDAR:  # rebuilt from the stored facts and the stores the site dimension knows
                deps = [silver_key(spec, calendar_source(spec)[0])]
                deps += [silver_key(spec, "site_dim")] if "site_dim" in spec.canonical_tables else []
            elif table_name in spec.derived_tables:
                deps = [silver_key(spec, "store_day_fact")]
            elif table_name in canonical.FACTS:
                deps += [silver_key(spec, d) for d in canonical.DIMENSIONS if d in spec.canonical_tables]
            # Corporate reference data silver enriches with: new FX rates or a corrected master
            # re-enrich the rows they change (see layers/silver.py).
            deps += [REFERENCE_KEYS[table_name]] if table_name in REFERENCE_KEYS and table_name not in spec.derived_tables else []
            silver_specs.append(
                dg.AssetSpec(
                    key=silver_key(spec, table_name),
                    description=f"{spec.name}: {table.description}",
                    deps=deps,
                    group_name=group,
                    kinds={"polars", "delta"}
                    if table_name == CALENDAR
                    else {"polars", "spark", "delta"}
                    if spec.engine == "auto"
                    else {spec.engine, "delta"},
                    tags={"layer": "silver", "retailer": spec.name, "freshness": FRESHNESS_TAG[spec.cadence]},
                    freshness_policy=FRESHNESS[spec.cadence],
                    # Its columns come with each materialization (`silver_metadata`).
                    metadata={"layer": "silver"},
                )
            )

        @dg.multi_asset(
            name=f"{spec.name}_silver",
            specs=silver_specs,
            check_specs=silver_check_specs(spec, [s.key for s in silver_specs]),
            partitions_def=partitions,
            can_subset=True,
            description=f"Map new bronze rows of {who} to the canonical model, MERGE them into silver, publish its gold partitions.",
            # One silver writer per retailer: two delivery runs at once (several batches, a re-run)
            # take turns here, each reading bronze past the other's bookmark.
            pool=f"silver_{spec.name}",
        )
        def silver(context: dg.AssetExecutionContext, lake: Lake, spark: SparkJobs, gold: dg.ResourceParam[GoldLayer]):
            tables = [k.path[-1] for k in context.selected_asset_keys]
            run_spec = spec
            if spec.engine == "auto":  # this delivery's size picks the engine, for silver and its gold
                rows = pending_bronze_rows(lake, spec, tables)
                run_spec = spec.model_copy(update={"engine": engine_for(spec, rows)})
                context.log.info(f"{spec.name}: {rows:,} new bronze rows: {run_spec.engine} (Spark from {spec.spark_from_rows:,})")
            if run_spec.engine == "spark":
                # The same refresh as a Spark job through Dagster Pipes; it reports materializations
                # and its per-table results, and the checks run here on the tables it wrote.
                invocation = spark.run(context, run_spec, "silver", [t for t in tables if t != CALENDAR], lake.root)
                # Pipes reports every selected asset; the calendar's result is this process's (below).
                yield from (r for r in invocation.get_results() if getattr(r, "asset_key", None) != silver_key(spec, CALENDAR))
                results = {
                    m["table"]: silver_result_from_dict(m["silver"])
                    for m in invocation.get_custom_messages()
                    if isinstance(m, dict) and "silver" in m
                }
                # The calendar is days x stores: always rebuilt here, from the facts the job wrote.
                results |= refresh_silver(lake, spec, [CALENDAR] if CALENDAR in tables else [], datetime.now(UTC))
            else:
                results = refresh_silver(lake, spec, tables, datetime.now(UTC))
            for name, r in results.items():
                if run_spec.engine == "spark" and name != CALENDAR:
                    continue  # reported by the Spark job
                if r.quarantined:
                    context.log.warning(
                        f"{spec.name}.{name}: {r.quarantined} row(s) quarantined: {r.quarantine_reasons}{fix_hint(r.quarantine_reasons)}"
                    )
                uri = lake.silver(spec.name, name)
                metadata = dagster_metadata(silver_metadata(r, lake.row_count(uri), uri, "polars"))
                if name == CALENDAR:
                    metadata |= calendar_metadata(read_calendar(lake, spec))
                yield dg.MaterializeResult(asset_key=silver_key(spec, name), metadata=metadata)
            failed = []
            for check in run_silver_checks(context, lake, spec, tables, results):
                if not check.passed and check.severity == dg.AssetCheckSeverity.ERROR:
                    assert check.asset_key is not None  # silver checks name their table
                    failed.append(f"{check.asset_key.path[-1]}.{check.check_name}")
                yield check
            # The delivery's own run carries it on to gold: this retailer's partition of every gold
            # table it feeds, once silver's blocking checks pass (else gold keeps its last good state).
            if failed:
                context.log.error(f"{spec.name}: gold not published, blocking silver checks failed: {', '.join(failed)}")
                return
            published = gold.publish(context, lake, spark, run_spec, [t for t in gold.tables_for(spec) if t in tables])
            log_gold_publications(context, spec, published)
            bad = [f"gold.{p.table}.{c}" for p in published for c in p.failed_blocking_checks]
            if bad:
                raise dg.Failure(description=f"{spec.name}: gold partition published but failed blocking checks: {', '.join(bad)}")
            overflows = quarantine_overflows(spec, results)
            if overflows:  # the good rows are in; the run fails so the wrong setting is seen
                raise dg.Failure(description="; ".join(overflows))

        # No job of its own: its runs (a delivery, a catch-up, a reference refresh) are runs of the
        # code location's asset job selecting these assets (`sensors/targets.py` says why), requested
        # by the sensors built at the root (`definitions.py`) over every retailer.
        return dg.Definitions(assets=[bronze, silver])
