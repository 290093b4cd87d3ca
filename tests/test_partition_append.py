"""`Lake.append_partitions`: rows of known partitions written as Parquet files in the partition
directories and committed to the real table at once. What a reader sees must be what a
partitioned write gives: the rows, their partition values, file statistics, one commit with its
bookmarks; and the attacks: files left by a crash, a schema or a value it cannot take.
Then the two layers that use it give the same rows as the ordinary write."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from bigbox_data import bigbox_stores
from deltalake import DeltaTable

from pos_lakehouse.layers.gold import refresh_gold
from pos_lakehouse.layers.silver import refresh_silver
from pos_lakehouse.storage.lake import Lake

DAY = date.today() - timedelta(days=3)


def _rows(code: str, days: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "day": [DAY - timedelta(days=d) for d in range(days)],
            "units": pl.Series([float(start + d) for d in range(days)], dtype=pl.Decimal(18, 4)),
            "code": [code] * days,
            "note": [None if d % 2 else f"n{d}" for d in range(days)],
        }
    )


def test_rows_land_in_their_partitions_in_one_commit_with_statistics(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = lake.gold("t")
    a, b = _rows("ret_a", 5), _rows("ret_b", 3, start=100)
    done = lake.append_partitions(
        uri,
        "code",
        [("ret_a", a.head(2).lazy()), ("ret_a", a.tail(3).lazy()), ("ret_b", b.lazy())],
        bookmarks={"mark": "1"},
        description="a test table",
        column_descriptions={"units": "how many"},
    )
    assert done
    dt = DeltaTable(uri)
    assert dt.metadata().partition_columns == ["code"]
    assert dt.metadata().description == "a test table"
    assert dt.schema().to_arrow().field("units").metadata == {b"comment": b"how many"}
    got = pl.read_delta(uri)
    assert got.select(a.columns).sort("code", "day").equals(pl.concat([a, b]).sort("code", "day"))
    files = pl.DataFrame(dt.get_add_actions(flatten=True))
    assert files.height == 3  # each part its own file
    assert sorted(files["partition.code"]) == ["ret_a", "ret_a", "ret_b"]
    assert all(p.startswith(f"code={c}/") for p, c in zip(files["path"], files["partition.code"], strict=True))
    assert files["num_records"].sum() == 8 and files["min.day"].min() == DAY - timedelta(days=4)
    # Readers prune on the statistics like on any partitioned write's files.
    assert pl.scan_delta(uri).filter(pl.col("code") == "ret_b").select(pl.col("units").sum()).collect().item() == 303
    commits = [c.get("pos_lakehouse.operation") for c in dt.history()]
    assert commits == ["append", "create"]  # newest first: all the parts in one commit
    assert lake.bookmarks(uri) == {"mark": "1"}
    # No scratch log is left behind.
    assert not list(tmp_path.rglob("code=*/_delta_log"))


def test_files_left_by_a_crash_stay_out(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = lake.gold("t")
    lake.append_partitions(uri, "code", [("ret_a", _rows("ret_a", 2).lazy())])
    # A crash between writing a part's file and the commit: a data file no commit refers to.
    _rows("ret_b", 4, start=50).drop("code").write_parquet(f"{uri}/code=ret_b/part-crashed.parquet", mkdir=True)
    assert lake.append_partitions(uri, "code", [("ret_b", _rows("ret_b", 1, start=7).lazy())])
    got = pl.read_delta(uri).filter(pl.col("code") == "ret_b")
    assert got["units"].cast(pl.Float64).to_list() == [7.0]  # only the committed rows
    assert not list(tmp_path.rglob("code=*/_delta_log"))


def test_what_it_cannot_take_is_left_to_the_caller(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = lake.gold("t")
    lake.append_partitions(uri, "code", [("ret_a", _rows("ret_a", 2).lazy())])
    before = DeltaTable(uri).version()
    # A schema the table does not have (the caller's append merges schemas), a value that would need
    # escaping in a path, a column the table is not partitioned by: nothing written, False.
    wider = _rows("ret_a", 1).with_columns(pl.lit(1).alias("extra"))
    assert not lake.append_partitions(uri, "code", [("ret_a", wider.lazy())])
    assert not lake.append_partitions(uri, "code", [("ret a/b", _rows("ret a/b", 1).lazy())])
    assert not lake.append_partitions(uri, "note", [("x", _rows("ret_a", 1).lazy())])
    assert DeltaTable(uri).version() == before
    assert pl.read_delta(uri).height == 2


@pytest.fixture
def silver_loaded(tmp_path):
    stores = bigbox_stores(tmp_path, products=12, days=40, stores=2, seed=11, reference=(12, 2))
    from pos_lakehouse.layers.bronze import ingest_files

    names = [f.name for f in stores.landing.list_files(stores.spec.name)]
    assert all(o.status == "ingested" for o in ingest_files(stores.lake, stores.landing, stores.spec, names))
    return stores


def test_first_period_and_gold_loads_equal_the_ordinary_writes(silver_loaded, monkeypatch):
    """The same delivery through the fast first loads and through the ordinary MERGE/append paths
    (the Lake refusing `append_partitions` and `append_by_partition`) gives the same silver period
    facts and gold rows."""
    spec, lake = silver_loaded.spec, silver_loaded.lake
    now = datetime.now(UTC)
    tables = ["store_day_fact", "store_week_fact", "store_month_fact"]
    refresh_silver(lake, spec, ["prod_dim", "site_dim", "store_day_fact"], now)
    slow = Lake(root=str(silver_loaded.lake.root) + "_slow")
    import shutil

    shutil.copytree(lake.root, slow.root)
    monkeypatch.setattr(Lake, "append_partitions", lambda self, *a, **k: False, raising=True)
    monkeypatch.setattr(Lake, "append_by_partition", lambda self, *a, **k: False, raising=True)
    slow_periods = refresh_silver(slow, spec, tables[1:], now)
    for table in tables:
        refresh_gold(slow, spec, table)
    monkeypatch.undo()
    fast_periods = refresh_silver(lake, spec, tables[1:], now)
    for table in tables:
        refresh_gold(lake, spec, table)
    for table in tables[1:]:
        assert fast_periods[table].inserted == slow_periods[table].inserted > 0
        assert fast_periods[table].input_rows == slow_periods[table].input_rows
        fast, ref = pl.read_delta(lake.silver(spec.name, table)), pl.read_delta(slow.silver(spec.name, table))
        keys = list(fast.columns[:3])
        assert fast.sort(keys).equals(ref.select(fast.columns).sort(keys))
        dt = DeltaTable(lake.silver(spec.name, table))
        assert dt.metadata().partition_columns == [keys[0]]
        assert [c.get("pos_lakehouse.operation") for c in dt.history()] == ["append", "create"]  # the fast path ran
        assert fast["is_complete"].equals(fast["days_covered"] == fast["days_expected"], check_names=False)
    for table in tables:
        fast, ref = pl.read_delta(lake.gold(table)), pl.read_delta(slow.gold(table))
        keys = ["data_provider_code", *fast.columns[:3]]
        assert fast.height == ref.height > 0
        assert fast.sort(keys).equals(ref.select(fast.columns).sort(keys))
        assert lake.bookmarks(lake.gold(table)) == slow.bookmarks(slow.gold(table))
        assert [c.get("pos_lakehouse.operation") for c in DeltaTable(lake.gold(table)).history()] == ["append", "create"]
        # Nothing changed since: the watermark makes the next refresh a no-op.
        assert refresh_gold(lake, spec, table).merged_rows == 0


def test_many_partitions_of_a_frame_are_one_file_each_with_bounds_and_one_commit(tmp_path):
    """`Lake.append_by_partition` (silver's daily facts): each day's rows in one file of its
    partition directory, without the partition column; the log's bounds and null counts are the
    rows'; a table laid out otherwise, or a row without a day, is refused (the caller appends)."""
    lake = Lake(root=str(tmp_path))
    uri = lake.silver("r", "facts")
    rows = pl.concat([_rows("ret_a", 4), _rows("ret_b", 4, start=100)]).with_columns(
        pl.lit(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)).alias("at")
    )
    assert lake.append_by_partition(uri, "day", rows, bookmarks={"bronze.x": "7"}, description="d", column_descriptions={"units": "u"})
    assert lake.append_by_partition(uri, "day", rows.head(2))  # a second commit, same layout
    table = DeltaTable(uri)
    assert table.metadata().partition_columns == ["day"]
    assert table.version() == 2 and lake.bookmarks(uri)["bronze.x"] == "7"
    read = pl.read_delta(uri)
    assert read.height == rows.height + 2
    assert read.sort("code", "day").drop("at").equals(pl.concat([rows, rows.head(2)]).sort("code", "day").drop("at"))
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    assert actions.height == 4 + 2  # a file per day and commit
    day = actions.filter(pl.col("path").str.starts_with(f"day={DAY}/"))
    assert sorted(day["num_records"]) == [1, 2]  # both retailers' rows of that day, then one
    stats = day.filter(pl.col("num_records") == 2).row(0, named=True)
    assert stats["min.code"] == "ret_a" and stats["max.code"] == "ret_b"
    assert stats["null_count.note"] == 0  # day 0 of both retailers has a note
    assert stats["max.at"] >= datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC) >= stats["min.at"]
    assert stats.get("min.units") is None  # decimals get no bounds (they would pass through floats)
    for path in actions["path"]:
        assert "day" not in pl.read_parquet(f"{uri}/{path}").columns

    other = lake.silver("r", "unpartitioned")
    lake.append(other, rows)
    assert not lake.append_by_partition(other, "day", rows)
    assert not lake.append_by_partition(uri, "day", rows.with_columns(pl.lit(None, pl.Date).alias("day")))
    assert pl.read_delta(other).height == rows.height and pl.read_delta(uri).height == rows.height + 2


def test_a_failed_commit_of_partition_files_leaves_no_file_and_no_row(tmp_path, monkeypatch):
    """Attack: the commit of the per-day files fails (another writer, a crash of the store): the
    files written for it are removed, the table is as before, and a retry appends once."""
    lake = Lake(root=str(tmp_path))
    uri = lake.silver("r", "facts")
    rows = _rows("ret_a", 5)
    assert lake.append_by_partition(uri, "day", rows.head(1))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))

    def refuse(self, *args, **kwargs):
        raise RuntimeError("commit refused")

    monkeypatch.setattr(Lake, "_add_files", refuse)
    with pytest.raises(RuntimeError, match="commit refused"):
        lake.append_by_partition(uri, "day", rows)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == before
    assert pl.read_delta(uri).height == 1
    monkeypatch.undo()
    assert lake.append_by_partition(uri, "day", rows)
    assert pl.read_delta(uri).height == 1 + rows.height


def test_a_day_whose_file_cannot_be_written_leaves_no_file_of_the_batch(tmp_path, monkeypatch):
    """Attack: one day's file fails mid-batch while other days are being written beside it (the
    files are written two at a time): every file of the batch is removed and nothing is committed."""
    lake = Lake(root=str(tmp_path))
    uri = lake.silver("r", "facts")
    rows = _rows("ret_a", 6)
    assert lake.append_by_partition(uri, "day", rows.head(1))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    version = DeltaTable(uri).version()
    write = pl.DataFrame.write_parquet
    calls = []

    def fail_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", fail_the_third)
    with pytest.raises(OSError, match="disk full"):
        lake.append_by_partition(uri, "day", rows)
    assert len(calls) > 3  # the other days were written (and then removed)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == before
    assert pl.read_delta(uri).height == 1 and DeltaTable(uri).version() == version


def test_statistics_from_a_files_footer_are_those_of_its_rows(tmp_path):
    """The add action of a part streamed to its file takes its statistics from the file's footer;
    they must be the rows' own (as `_file_stats` reads them off the columns), over several row
    groups, with nulls, a column of nulls, a NaN, a timestamp -- and no bound where the footer's
    is cut (a string longer than the writer keeps): a bound inside the values would make readers
    skip a file that holds what they look for."""
    import json

    from pos_lakehouse.storage.delta_commit import footer_stats as _footer_stats
    from pos_lakehouse.storage.delta_commit import frame_stats as _file_stats

    n = 2_500
    start = datetime.now(UTC) - timedelta(days=2)
    frame = pl.DataFrame(
        {
            "day": [DAY - timedelta(days=i % 40) for i in range(n)],
            "at": pl.Series([start + timedelta(seconds=i, microseconds=7) for i in range(n)]).dt.cast_time_unit("us"),
            "n": [None if i % 7 == 0 else i - 1_000 for i in range(n)],
            "x": [float("nan") if i == 1_700 else i / 3 for i in range(n)],
            "id": [f"P{i:05d}" for i in range(n)],
            "long": ["z" * 70 + str(i) if i == 2_000 else "a" * 10 + str(i) for i in range(n)],
            "empty": pl.Series([None] * n, dtype=pl.String),
            "units": pl.Series([float(i) for i in range(n)], dtype=pl.Decimal(18, 4)),
        }
    )
    path = tmp_path / "part.parquet"
    frame.lazy().sink_parquet(path, row_group_size=1_000)
    footer, rows = _footer_stats(path, frame.schema)
    exact = json.loads(_file_stats(frame))
    got = json.loads(footer)
    assert rows == n and got["numRecords"] == exact["numRecords"] == n
    assert got["nullCount"] == exact["nullCount"]
    # Same bounds where the footer has them. None for the long string (the footer's is cut); the
    # float column with a NaN may go without (a writer may keep no bounds for its row group).
    assert "long" in exact["minValues"] and "long" not in got["minValues"]
    assert set(exact["minValues"]) - set(got["minValues"]) <= {"long", "x"}
    for column, low in got["minValues"].items():
        assert low == exact["minValues"][column] and got["maxValues"][column] == exact["maxValues"][column], column
    assert {"day", "at", "n", "id"} <= set(got["minValues"])
