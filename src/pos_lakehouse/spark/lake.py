"""Delta storage for the Spark engine: the same layout, MERGE options and bookmarks as `storage/lake.py`.

Mirrors `Lake` method for method so the two engines can take turns on the same tables:
- bookmarks live in Delta commit metadata under `pos_lakehouse.bookmark.*`. delta-rs writes
  them as top-level commitInfo fields; Spark can only write `userMetadata`, so Spark writes a
  JSON object of the same keys there, and both readers (this one and `Lake.bookmarks`) accept
  either form;
- append-only bronze is read incrementally from the data files added after a version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import narwhals as nw
import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pos_lakehouse.engines.spark_types import spark_schema
from pos_lakehouse.storage.interface import BOOKMARK_PREFIX, MergeSpec
from pos_lakehouse.storage.layout import MedallionLayout, join_uri

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# Which bronze data file a row came from and where in it: the order Polars reads rows in.
FILE_PATH = "_file_path"
FILE_ROW = "_file_row"
_BOOKMARK_COMMITS = 50


class SparkLake(MedallionLayout):
    """`Lake` for Spark: `<root>/{bronze,silver,gold,quarantine}/...` Delta tables."""

    engine = "spark"

    def __init__(self, spark: SparkSession, root: str):
        self.spark = spark
        self.root = root
        self._known: set[str] = set()

    # ---- the engine-neutral interface the layers use (narwhals frames in and out) ---------------
    def read(self, uri: str, schema: pl.Schema | None = None) -> nw.LazyFrame:
        return nw.from_native(self.scan(uri, spark_schema(schema) if schema is not None else None))

    def read_ordered(self, uri: str, schema: pl.Schema) -> nw.LazyFrame:
        sp = spark_schema(schema)
        files = self.spark.read.format("delta").load(uri).inputFiles() if self.exists(uri) else []
        if not files:
            empty = self.spark.createDataFrame([], sp).withColumn(FILE_PATH, F.lit("")).withColumn(FILE_ROW, F.lit(0).cast("long"))
            return nw.from_native(empty)
        rows = self.read_files(uri, sorted(files))
        return nw.from_native(rows.select(*[F.col(f.name).cast(f.dataType) for f in sp.fields], FILE_PATH, FILE_ROW))

    def read_added(self, uri: str, consumed: int | None) -> tuple[nw.LazyFrame | None, int | None]:
        files, version = self.files_added_since(uri, consumed)
        if not files:
            return None, version
        return nw.from_native(self.read_files(uri, files)), version

    # ---- reading --------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        from delta.tables import DeltaTable

        # Each check replays the log; a table that exists stays, so remember the positives.
        if uri in self._known:
            return True
        if DeltaTable.isDeltaTable(self.spark, uri):
            self._known.add(uri)
            return True
        return False

    def scan(self, uri: str, schema: T.StructType | pl.Schema | None = None) -> DataFrame:
        """A table's rows; an absent table reads as empty with `schema`."""
        if isinstance(schema, pl.Schema):
            schema = spark_schema(schema)
        if not self.exists(uri):
            if schema is None:
                raise FileNotFoundError(f"no Delta table at {uri}")
            return self.spark.createDataFrame([], schema)
        df = self.spark.read.format("delta").load(uri)
        if schema is not None:  # canonical column order and types, as `lake.scan(uri, table.schema)`
            have = set(df.columns)
            df = df.select([(F.col(f.name) if f.name in have else F.lit(None)).cast(f.dataType).alias(f.name) for f in schema.fields])
        return df

    def row_count(self, uri: str) -> int:
        return self.scan(uri).count() if self.exists(uri) else 0

    def version(self, uri: str) -> int | None:
        from delta.tables import DeltaTable

        if not self.exists(uri):
            return None
        return int(DeltaTable.forPath(self.spark, uri).history(1).collect()[0]["version"])

    def files_added_since(self, uri: str, version: int | None) -> tuple[list[str], int | None]:
        """Data files of an append-only table added after `version`, and the table's current version."""
        current_version = self.version(uri)
        if current_version is None:
            return [], None
        reader = self.spark.read.format("delta")
        current = set(reader.option("versionAsOf", current_version).load(uri).inputFiles())
        if version is not None and version >= 0:
            if version == current_version:
                return [], version
            current -= set(self.spark.read.format("delta").option("versionAsOf", version).load(uri).inputFiles())
        return sorted(current), current_version

    def read_files(self, uri: str, files: Sequence[str]) -> DataFrame:
        """Rows of some data files of a table, with the table's schema (missing columns null) and their position."""
        schema = self.spark.read.format("delta").load(uri).schema
        return (
            self.spark.read.schema(schema)
            .parquet(*files)
            .select("*", F.col("_metadata.file_path").alias(FILE_PATH), F.col("_metadata.row_index").alias(FILE_ROW))
        )

    def bookmarks(self, uri: str, max_commits: int = 1000) -> dict[str, str]:
        """Bookmarks in the table's commits (either engine's form); the newest commit mentioning a key wins."""
        if not self.exists(uri):
            return {}
        log = self.spark.read.text(join_uri(uri, "_delta_log", "*.json")).select(
            "value", F.regexp_extract(F.col("_metadata.file_name"), r"^(\d+)\.json$", 1).cast("long").alias("v")
        )
        rows = log.filter(F.col("value").contains('"commitInfo"')).orderBy(F.col("v").desc()).limit(max_commits).collect()
        marks: dict[str, str] = {}
        for row in rows:  # newest first
            for k, v in bookmarks_of_commit(json.loads(row["value"]).get("commitInfo", {})).items():
                marks.setdefault(k, v)
        return marks

    # ---- writing --------------------------------------------------------------------------
    @contextmanager
    def _commit(self, bookmarks: Mapping[str, str] | None, operation: str):
        """Bookmarks travel in the commit's `userMetadata` (the one free-form field Spark writes)."""
        meta = {"pos_lakehouse.operation": operation}
        meta.update({BOOKMARK_PREFIX + k: str(v) for k, v in (bookmarks or {}).items()})
        self.spark.conf.set(USER_METADATA_CONF, json.dumps(meta, sort_keys=True))
        try:
            yield
        finally:
            self.spark.conf.unset(USER_METADATA_CONF)

    def create(
        self,
        uri: str,
        schema: T.StructType,
        *,
        partition_by: Sequence[str] | None = None,
        description: str | None = None,
        column_descriptions: Mapping[str, str] | None = None,
    ) -> None:
        """An empty table with table and column comments (as `Lake` writes them, read by Unity Catalog)."""
        from delta.tables import DeltaTable

        comments = column_descriptions or {}
        fields = [
            T.StructField(f.name, f.dataType, True, {"comment": comments[f.name]} if f.name in comments else {}) for f in schema.fields
        ]
        builder = DeltaTable.createIfNotExists(self.spark).location(uri).addColumns(T.StructType(fields))
        if partition_by:
            builder = builder.partitionedBy(*partition_by)
        if description:
            builder = builder.comment(description)
        with self._commit(None, "create"):
            builder.execute()

    def append(
        self,
        uri: str,
        data: DataFrame,
        *,
        partition_by: Sequence[str] | None = None,
        bookmarks: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> None:
        data = nw.to_native(data, pass_through=True)
        if description and not self.exists(uri):
            self.create(uri, data.schema, partition_by=partition_by, description=description)
        writer = data.write.format("delta").mode("append").option("mergeSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        with self._commit(bookmarks, "append"):
            writer.save(uri)

    def merge(self, uri: str, data: DataFrame | nw.LazyFrame, **options) -> dict:
        """Upsert rows as `MergeSpec(**options)` says (the same MERGE as `Lake.merge`)."""
        from delta.tables import DeltaTable

        spec = MergeSpec(**options)
        data = nw.to_native(data, pass_through=True)
        if not self.exists(uri):
            schema = data.drop(spec.action_column).schema if spec.action_column else data.schema
            self.create(
                uri, schema, partition_by=spec.partition_by, description=spec.description, column_descriptions=spec.column_descriptions
            )
        target = DeltaTable.forPath(self.spark, uri)
        merger = target.alias("t").merge(data.alias("s"), spec.predicate)
        for kind, condition, values in spec.clauses(data.columns):
            if kind == "update_all":
                merger = merger.whenMatchedUpdateAll()
            elif kind == "insert_all":
                merger = merger.whenNotMatchedInsertAll()
            elif kind == "delete":
                merger = merger.whenMatchedDelete(condition)
            elif kind == "update":
                merger = merger.whenMatchedUpdate(condition, values)
            elif kind == "insert":
                merger = merger.whenNotMatchedInsert(condition, values)
            else:
                merger = merger.whenNotMatchedBySourceDelete(condition)
        with self._commit(spec.bookmarks, "merge"):
            merger.execute()
        metrics = target.history(1).collect()[0]["operationMetrics"] or {}
        return {
            "num_target_rows_inserted": int(metrics.get("numTargetRowsInserted", 0)),
            "num_target_rows_updated": int(metrics.get("numTargetRowsUpdated", 0)),
            "num_target_rows_deleted": int(metrics.get("numTargetRowsDeleted", 0)),
        }

    def commit_bookmarks(self, uri: str, bookmarks: Mapping[str, str]) -> None:
        """Record bookmarks with an empty append when there was nothing to merge."""
        if not self.exists(uri):
            return
        # Delta skips the commit of an empty append; a table-property change always commits.
        import time as _time

        with self._commit(bookmarks, "bookmark"):
            self.spark.sql(f"ALTER TABLE delta.`{uri}` SET TBLPROPERTIES ('pos_lakehouse.bookmarked_at' = '{_time.time():.6f}')")


def bookmarks_of_commit(commit: Mapping) -> dict[str, str]:
    """Bookmarks of one commitInfo: top-level fields (delta-rs) and/or a JSON `userMetadata` (Spark)."""
    marks = {k[len(BOOKMARK_PREFIX) :]: str(v) for k, v in commit.items() if k.startswith(BOOKMARK_PREFIX)}
    user = commit.get("userMetadata")
    if isinstance(user, str) and user.startswith("{"):
        try:
            meta = json.loads(user)
        except ValueError:
            meta = {}
        marks.update({k[len(BOOKMARK_PREFIX) :]: str(v) for k, v in meta.items() if k.startswith(BOOKMARK_PREFIX)})
    return marks
