"""Delta storage for the Spark engine: the same layout, MERGE and bookmarks as `storage/lake.py`.

Only Spark SQL and DataFrame calls, no `DeltaTable` API: they work alike in a classic session, over
Spark Connect (whose Delta plugin is not needed) and on Databricks.

Bookmarks: Spark writes a commit's metadata only as its `userMetadata` (a JSON object of the same
keys delta-rs writes as fields; `storage.interface.bookmarks_of_commit` reads both). An append
passes it as a write option. A SQL MERGE takes no options, only the session setting
`spark.databricks.delta.commitInfo.userMetadata`, which Databricks serverless does not let a
session set: where the session refuses it, the bookmarks follow the MERGE in a commit of their
own that sets them as table properties (`ALTER TABLE ... SET TBLPROPERTIES`, allowed everywhere),
read from that commit's parameters. See docs/spark.md (Bookmarks) for what that changes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Literal, cast

import narwhals as nw
import polars as pl
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pos_lakehouse.engines.spark import spark_schema
from pos_lakehouse.storage.interface import DeltaLakeBase, MergeSpec, commit_metadata, sql_name
from pos_lakehouse.storage.layout import join_uri

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# Which bronze data file a row came from and where in it: the order Polars reads rows in.
FILE_PATH, FILE_ROW = "_file_path", "_file_row"


def _text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SparkLake(DeltaLakeBase):
    """`Lake` for Spark: `<root>/{bronze,silver,gold,quarantine}/...` Delta tables."""

    engine = "spark"

    def __init__(self, spark: SparkSession, root: str, *, bookmarks_in: Literal["auto", "commit", "properties"] = "auto"):
        """`bookmarks_in`: `commit` (the MERGE's own commit, through the session setting), `properties`
        (a commit of their own after it), `auto`: `commit` unless the session refuses the setting."""
        self.spark, self.root, self._known = spark, root, set()
        self.bookmarks_in = bookmarks_in
        # What a table's log said when last read, until this Lake writes to it: each read is a round
        # trip (a Spark job for the commits), and a refresh asks a table for its bookmarks, schema
        # and existence several times. A SparkLake lives for one job, and only that job writes its
        # retailer's silver tables and its keys' bookmarks in gold, so another writer's commit
        # cannot change what it reads from there. A version's files never change.
        self._commits: dict[tuple[str, int], list[dict]] = {}
        self._schemas: dict[str, T.StructType] = {}
        self._files: dict[tuple[str, int], list[str]] = {}
        self._absent: set[str] = set()
        # Tables others write (bronze, reference data) are read as of their version when this Lake
        # first looked: every silver table of a job then consumes the same bronze and enriches from
        # the same master (a delivery ingested meanwhile waits for the next job, as its bookmark
        # says), and the version and its files are read once per job instead of once per table.
        self._pinned: dict[str, int] = {}
        # Bookmarks as of this Lake's last write to a table: a write recording bookmarks makes them
        # the newest value of their keys (what `bookmarks` reads back from the log), so the table's
        # bookmarks after it follow from those before it without reading the log again.
        self._marks: dict[str, dict[str, str]] = {}

    def _owned(self, uri: str) -> bool:
        """Tables only this engine's jobs create (bronze and reference data come from elsewhere)."""
        return any(uri.startswith(join_uri(self.root, layer)) for layer in ("silver", "gold", "quarantine"))

    def _wrote(self, uri: str, bookmarks: Mapping[str, str] | None = None) -> None:
        """After a commit to `uri` that records `bookmarks`."""
        self._known.add(uri)
        self._absent.discard(uri)
        self._pinned.pop(uri, None)
        self._schemas.pop(uri, None)
        for key in [k for k in self._commits if k[0] == uri]:
            del self._commits[key]
        if uri in self._marks:
            self._marks[uri].update({k: str(v) for k, v in (bookmarks or {}).items()})

    def _failed(self, uri: str) -> None:
        """After a write to `uri` that raised: whether it committed is unknown, so the log is read again."""
        self._wrote(uri)
        self._marks.pop(uri, None)

    def bookmarks(self, uri: str, max_commits: int = 1000) -> dict[str, str]:
        if uri in self._marks:
            return dict(self._marks[uri])
        marks = super().bookmarks(uri, max_commits)
        if self._owned(uri) and max_commits >= 1000:  # all of them, of a table only this job writes
            self._marks[uri] = dict(marks)
        return marks

    # ---- reading --------------------------------------------------------------------------
    def read_ordered(self, uri: str, schema: pl.Schema) -> nw.LazyFrame:
        sp = spark_schema(schema)
        if not self.exists(uri) or not (files := self.files_at(uri, None)):
            empty = self.spark.createDataFrame([], sp).withColumn(FILE_PATH, F.lit("")).withColumn(FILE_ROW, F.lit(0).cast("long"))
            return nw.from_native(empty)
        rows = self.read_files(uri, sorted(files))
        return nw.from_native(rows.select(*[F.col(f.name).cast(f.dataType) for f in sp.fields], FILE_PATH, FILE_ROW))

    def read_added(self, uri: str, consumed: int | None) -> tuple[nw.LazyFrame | None, int | None]:
        files, version = self.files_added_since(uri, consumed)
        return (nw.from_native(self.read_files(uri, files)) if files else None), version

    def version(self, uri: str) -> int | None:
        if uri in self._pinned:
            return self._pinned[uri]
        try:
            version = int(self.spark.sql(f"DESCRIBE HISTORY delta.{sql_name(uri)} LIMIT 1").collect()[0]["version"])
        except AnalysisException:  # no Delta table there
            if self._owned(uri):
                self._absent.add(uri)
            return None
        self._known.add(uri)
        if not self._owned(uri):
            self._pinned[uri] = version
        return version

    def exists(self, uri: str) -> bool:
        if uri in self._absent:  # until this Lake creates it
            return False
        return uri in self._known or self.version(uri) is not None  # a table that exists stays

    def files_at(self, uri: str, version: int | None) -> list[str]:
        if version is None and not self._owned(uri):
            version = self.version(uri)  # as of the pinned version
        if version is not None and (uri, version) in self._files:
            return self._files[uri, version]
        reader = self.spark.read.format("delta")
        files = (reader if version is None else reader.option("versionAsOf", version)).load(uri).inputFiles()
        if version is not None:
            self._files[uri, version] = files
        return files

    def commits(self, uri: str, limit: int) -> list[dict]:
        if (uri, limit) in self._commits:
            return self._commits[uri, limit]
        if not self.exists(uri):
            return []
        log = self.spark.read.text(join_uri(uri, "_delta_log", "*.json")).select(
            "value", F.regexp_extract(F.col("_metadata.file_name"), r"^(\d+)\.json$", 1).cast("long").alias("v")
        )
        rows = log.filter(F.col("value").contains('"commitInfo"')).orderBy(F.col("v").desc()).limit(limit).collect()
        self._commits[uri, limit] = [json.loads(row["value"]).get("commitInfo", {}) for row in rows]
        return self._commits[uri, limit]

    def scan(self, uri: str, schema: T.StructType | pl.Schema | None = None) -> DataFrame:
        """A table's rows (canonical columns and types with `schema`); an absent table reads as empty."""
        schema = spark_schema(schema) if isinstance(schema, pl.Schema) else schema
        if not self.exists(uri):
            if schema is None:
                raise FileNotFoundError(f"no Delta table at {uri}")
            return self.spark.createDataFrame([], schema)
        reader = self.spark.read.format("delta")
        df = (reader.option("versionAsOf", self._pinned[uri]) if uri in self._pinned else reader).load(uri)
        if schema is not None:
            have = set(df.columns)
            df = df.select([(F.col(f.name) if f.name in have else F.lit(None)).cast(f.dataType).alias(f.name) for f in schema.fields])
        return df

    def row_count(self, uri: str) -> int:
        return self.scan(uri).count() if self.exists(uri) else 0

    def read_files(self, uri: str, files: Sequence[str]) -> DataFrame:
        """Rows of some data files of a table, with the table's schema (missing columns null) and their position."""
        if uri not in self._schemas:
            self._schemas[uri] = self.spark.read.format("delta").load(uri).schema
        schema = self._schemas[uri]
        return (
            self.spark.read.schema(schema)
            .parquet(*files)
            .select("*", F.col("_metadata.file_path").alias(FILE_PATH), F.col("_metadata.row_index").alias(FILE_ROW))
        )

    # ---- writing --------------------------------------------------------------------------
    @contextmanager
    def _commit(self, uri: str, bookmarks: Mapping[str, str] | None, operation: str):
        """Around a SQL statement that commits to `uri`: its commit records `bookmarks` (see the module doc)."""
        metadata = json.dumps(commit_metadata(bookmarks, operation), sort_keys=True)
        if self.bookmarks_in == "auto":
            try:
                self.spark.conf.set(USER_METADATA_CONF, metadata)
                self.bookmarks_in = "commit"
            except Exception:  # noqa: BLE001 - classic and Connect sessions raise different types for a refused setting
                self.bookmarks_in = "properties"
        if self.bookmarks_in == "properties":
            yield
            if bookmarks:
                self._bookmark_properties(uri, bookmarks)
            return
        self.spark.conf.set(USER_METADATA_CONF, metadata)
        try:
            yield
        finally:
            self.spark.conf.unset(USER_METADATA_CONF)

    def _bookmark_properties(self, uri: str, bookmarks: Mapping[str, str]) -> None:
        marks = commit_metadata(bookmarks, "bookmark")
        props = ", ".join(f"{_text(k)} = {_text(v)}" for k, v in sorted(marks.items()))
        try:
            self.spark.sql(f"ALTER TABLE delta.{sql_name(uri)} SET TBLPROPERTIES ({props})")
        except Exception:
            self._failed(uri)
            raise
        self._wrote(uri, bookmarks)

    def create(self, uri: str, schema: T.StructType, *, partition_by=None, description=None, column_descriptions=None) -> None:
        """An empty table with table and column comments (as `Lake` writes them, read by Unity Catalog)."""
        notes = column_descriptions or {}
        columns = ", ".join(
            f"{sql_name(f.name)} {f.dataType.simpleString()}" + (f" COMMENT {_text(notes[f.name])}" if f.name in notes else "")
            for f in schema.fields
        )
        sql = f"CREATE TABLE IF NOT EXISTS delta.{sql_name(uri)} ({columns}) USING DELTA"
        sql += f" PARTITIONED BY ({', '.join(map(sql_name, partition_by))})" if partition_by else ""
        sql += f" COMMENT {_text(description)}" if description else ""
        # As delta-rs writes them, whatever the session's defaults (Databricks turns deletion vectors on).
        sql += " TBLPROPERTIES ('delta.enableDeletionVectors' = 'false')"
        with self._commit(uri, None, "create"):
            self.spark.sql(sql)
        self._wrote(uri)

    def append(self, uri: str, data, *, partition_by: Sequence[str] | None = None, bookmarks=None, description=None) -> None:
        data = nw.to_native(data, pass_through=True)
        # `partition_by` lays out a table this append creates; an existing table keeps its own.
        fresh = not self.exists(uri)
        if description and fresh:
            self.create(uri, data.schema, partition_by=partition_by, description=description)
        # The bookmarks as a write option: the append's own commit carries them, on any session.
        metadata = json.dumps(commit_metadata(bookmarks, "append"), sort_keys=True)
        writer = data.write.format("delta").mode("append").option("mergeSchema", "true").option("userMetadata", metadata)
        try:
            (writer.partitionBy(*partition_by) if partition_by and fresh else writer).save(uri)
        except Exception:
            self._failed(uri)
            raise
        self._wrote(uri, bookmarks)

    def merge(self, uri: str, data: DataFrame | nw.LazyFrame, **options) -> dict:
        """Upsert rows as `MergeSpec(**options)` says (the same MERGE as `Lake.merge`), as one SQL MERGE."""
        spec = MergeSpec(**options)
        data = cast(DataFrame, nw.to_native(data, pass_through=True))  # a Spark frame, wrapped or not
        if not self.exists(uri):
            schema = (data.drop(spec.action_column) if spec.action_column else data).schema
            self.create(
                uri, schema, partition_by=spec.partition_by, description=spec.description, column_descriptions=spec.column_descriptions
            )
            return self._insert_into_new(uri, data, spec)
        view = f"pos_lakehouse_merge_{uuid.uuid4().hex}"
        data.createOrReplaceTempView(view)
        sql = spec.sql(f"delta.{sql_name(uri)}", view, data.columns)
        try:
            with self._commit(uri, spec.bookmarks, "merge"):
                done = self.spark.sql(sql).collect()[0]
        except Exception:
            self._failed(uri)
            raise
        finally:
            self.spark.catalog.dropTempView(view)
        self._wrote(uri, spec.bookmarks)
        return {f"num_target_rows_{k}": int(done[f"num_{k}_rows"]) for k in ("inserted", "updated", "deleted")}

    def _insert_into_new(self, uri: str, data: DataFrame, spec: MergeSpec) -> dict:
        """A MERGE into the empty table just created inserts what its insert clauses take, nothing
        else matches: an append does that in one write instead of a MERGE's two passes, and carries
        the bookmarks as a write option in the same commit (on any session)."""
        if spec.action_column:
            data = data.filter(F.col(spec.action_column) == "upsert").drop(spec.action_column)
        metadata = json.dumps(commit_metadata(spec.bookmarks, "merge"), sort_keys=True)
        try:
            data.write.format("delta").mode("append").option("userMetadata", metadata).save(uri)
        except Exception:
            self._failed(uri)
            raise
        self._wrote(uri, spec.bookmarks)
        done = self.spark.sql(f"DESCRIBE HISTORY delta.{sql_name(uri)} LIMIT 1").collect()[0]
        inserted = int((done["operationMetrics"] or {}).get("numOutputRows", 0))
        return {"num_target_rows_inserted": inserted, "num_target_rows_updated": 0, "num_target_rows_deleted": 0}

    def commit_bookmarks(self, uri: str, bookmarks: Mapping[str, str]) -> None:
        """Record bookmarks when there was nothing to merge: Delta skips the commit of an empty
        append, a table-property change always commits."""
        if self.exists(uri) and self.bookmarks_in == "properties":
            self._bookmark_properties(uri, bookmarks)
        elif self.exists(uri):
            try:
                with self._commit(uri, bookmarks, "bookmark"):
                    self.spark.sql(
                        f"ALTER TABLE delta.{sql_name(uri)} SET TBLPROPERTIES ('pos_lakehouse.bookmark_commit' = '{uuid.uuid4().hex}')"
                    )
            except Exception:
                self._failed(uri)
                raise
            self._wrote(uri, bookmarks)
