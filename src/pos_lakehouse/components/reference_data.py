"""ReferenceData: corporate product master, site master and FX rates, declared in one YAML file.

Each source says which files in the corporate landing folder hold it, how they are encoded and
how their columns map to the canonical reference columns -- the same `format` block and column
mapping as a retailer's files. The component builds one asset per table
(`reference/product_master`, `reference/site_master`, `reference/fx_rates`: the keys every
retailer's silver lists as upstream), a refresh job and a landing sensor.
"""

import dagster as dg
from pydantic import Field, model_validator

from pos_lakehouse.components.asset_keys import fail_on_rejected_files
from pos_lakehouse.components.yaml_schema import TakenAsWritten, yaml_schema_model
from pos_lakehouse.ingest.landing import LandingZone
from pos_lakehouse.layers.reference import (
    REFERENCE_TABLES,
    ReferenceSource,
    default_source,
    load_reference_files,
    reference_uri,
    source_for,
)
from pos_lakehouse.sensors.reference import JOB_NAME, OP_NAME, build_reference_landing_sensor
from pos_lakehouse.storage.lake import Lake

_JOINED_ON = {"product_master": "GTIN", "site_master": "GLN", "fx_rates": "date and currency"}


class ReferenceRunConfig(dg.Config):
    files: list[str] = Field(
        default_factory=list, description="Reference files (in the corporate landing folder) to load; empty: every matching file present."
    )


class ReferenceData(TakenAsWritten, dg.Component, dg.Model, dg.Resolvable):
    """Corporate reference data silver enriches with: product master (by GTIN), site master (by GLN), FX rates (USD per unit)."""

    landing_folder: str = Field(
        default="_corporate",
        description="Folder of the landing zone (next to the retailers' folders) that receives the reference files.",
    )
    product_master: ReferenceSource = Field(
        default_factory=lambda: default_source("product_master"),
        description="The corporate product master: canonical columns gtin (key), corp_product_code, corp_product_name, "
        "corp_brand, corp_category; optionally updated_at.",
    )
    site_master: ReferenceSource = Field(
        default_factory=lambda: default_source("site_master"),
        description="The corporate site master: canonical columns global_location_number (key), corp_site_code, "
        "corp_customer, corp_sales_region; optionally updated_at.",
    )
    fx_rates: ReferenceSource = Field(
        default_factory=lambda: default_source("fx_rates"),
        description="Daily FX rates: canonical columns date, currency (ISO code), usd_per_unit (USD for one unit of the currency).",
    )

    @classmethod
    def get_model_cls(cls):
        # Nested blocks validated as models, so `dg check defs` names a wrong field and its allowed values.
        return yaml_schema_model(super().get_model_cls(), cls)

    @model_validator(mode="after")
    def _targets(self) -> "ReferenceData":
        for table in REFERENCE_TABLES:
            getattr(self, table).check_targets(table)
        return self

    @property
    def sources(self) -> dict[str, ReferenceSource]:
        return {table: getattr(self, table) for table in REFERENCE_TABLES}

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        sources, folder = self.sources, self.landing_folder

        specs = [
            dg.AssetSpec(
                key=dg.AssetKey(["reference", table]),
                description=f"Corporate {table.replace('_', ' ')} (joined on {_JOINED_ON[table]}), from files matching "
                f"`{source.match}` ({source.format.type}) in landing `{folder}/`; each file "
                f"{'replaces the table' if source.mode == 'replace' else 'adds or corrects rows by key'}.",
                group_name="reference",
                kinds={"polars", "delta"},
                skippable=True,
                metadata={
                    "landing_pattern": source.match,
                    "dagster/column_schema": dg.TableSchema(
                        columns=[dg.TableColumn(c, str(t)) for c, t in REFERENCE_TABLES[table]["schema"].items()]
                    ),
                },
            )
            for table, source in sources.items()
        ]

        @dg.multi_asset(name=OP_NAME, specs=specs, can_subset=True, description="Load delivered corporate reference files.")
        def corporate_reference(context: dg.AssetExecutionContext, config: ReferenceRunConfig, lake: Lake, landing: LandingZone):
            names = config.files or [f.name for f in landing.list_files(folder) if source_for(sources, f.name)]
            chosen = {k.path[-1] for k in context.selected_asset_keys}
            outcomes = load_reference_files(lake, landing, folder, {t: s for t, s in sources.items() if t in chosen}, names)
            for o in outcomes:
                (context.log.error if o.status == "rejected" else context.log.info)(o.describe())
            for table in sorted(chosen):
                mine = [o for o in outcomes if o.table == table]
                loaded = [o for o in mine if o.status == "loaded"]
                if not loaded:
                    continue  # nothing new for it: the table stays as it was
                yield dg.MaterializeResult(
                    asset_key=dg.AssetKey(["reference", table]),
                    metadata={
                        "dagster/row_count": loaded[-1].rows,
                        "dagster/uri": reference_uri(lake, table),
                        "file": loaded[-1].file,
                        "files": dg.MetadataValue.md("\n".join(f"- {o.describe()}" for o in mine)),
                    },
                )
            # Like a retailer's rejected delivery: the run fails and says why; the good files are loaded.
            fail_on_rejected_files("corporate reference", outcomes)

        refresh_job = dg.define_asset_job(
            JOB_NAME,
            selection=dg.AssetSelection.assets(*[s.key for s in specs]),
            description="Load corporate master data and FX rates.",
        )

        corporate_reference_sensor = build_reference_landing_sensor(folder, sources, refresh_job)
        return dg.Definitions(assets=[corporate_reference], jobs=[refresh_job], sensors=[corporate_reference_sensor])
