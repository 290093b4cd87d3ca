"""Bounds on one `query --as` statement: its text, its run time, the engine's memory and threads, its result.

A reader's query runs on a machine shared with the pipeline, so nothing it asks may take that
machine over: DuckDB's own defaults are 80 % of RAM and every core, no time limit, and a parser
that recurses once per nesting level. Each bound is set in the serving YAML
(`defs/serving/defs.yaml`, `query_limits:`) and, when reached, answers with one line naming it:

* `max_sql_chars` and `max_nesting_depth` are checked on the text before anything parses it
  (sqlglot and DuckDB's parsers recurse per level: 200 nested subqueries overflowed Python's
  stack). Depth counts brackets and CASE ... END, the constructs that nest without bound.
* `timeout_seconds`: a timer interrupts the DuckDB connection (`interrupt()`), stopping the
  engine mid-query, not only the wait for it.
* `memory_limit` and `threads` are DuckDB settings of the reader's in-memory database, fixed before
  the configuration is locked. Spilling to disk is off, so the memory limit is a real bound and a
  query cannot fill the disk instead.
* `max_result_rows`: the result is fetched in batches, outside DuckDB's memory accounting, and
  refused once it passes this many rows.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import duckdb
    import polars as pl

WHERE = "query_limits in defs/serving/defs.yaml"
_OPEN = frozenset({"L_PAREN", "L_BRACKET", "L_BRACE", "CASE"})
_CLOSE = frozenset({"R_PAREN", "R_BRACKET", "R_BRACE", "END"})
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$")
# sqlglot's parser spends ~25 Python frames per level: at Python's default recursion limit it
# overflowed at 38 nested function calls and 42 brackets (90 subqueries). 32 leaves room for the
# caller's own stack; a construct that nests without brackets (NOT NOT ...) is caught as it overflows.
MAX_DEPTH = 32


class QueryLimits(BaseModel):
    """Bounds on one reader query (`pos-lakehouse query`); defaults sized for a machine shared with the pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Bounds are checked in `_check`, not with Field(gt=...): Dagster resolves a component's nested
    # models only when their fields are plain types.
    timeout_seconds: float = Field(default=60, description="A query still running after this many seconds is interrupted.")
    memory_limit: str = Field(
        default="2GB", description="DuckDB memory limit of the reader's database (e.g. 2GB, 512MiB); no spilling to disk."
    )
    threads: int = Field(default=2, description="DuckDB threads for one query.")
    max_sql_chars: int = Field(default=100_000, description="Longest query text accepted, in characters.")
    max_nesting_depth: int = Field(
        default=24, description="Deepest nesting of brackets and CASE accepted, at most 32 (the parsers recurse per level)."
    )
    max_result_rows: int = Field(default=1_000_000, description="Most rows a query may return.")

    @model_validator(mode="after")
    def _check(self) -> QueryLimits:
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, not {self.timeout_seconds}")
        if not _SIZE.match(self.memory_limit):
            raise ValueError(f"memory_limit must be a size such as 2GB or 512MiB, not {self.memory_limit!r}")
        for name in ("threads", "max_sql_chars", "max_result_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 1 <= self.max_nesting_depth <= MAX_DEPTH:
            raise ValueError(f"max_nesting_depth must be between 1 and {MAX_DEPTH}, not {self.max_nesting_depth}")
        return self

    def duckdb_config(self) -> dict[str, str | int]:
        """Settings for the reader's database, given when it is opened (later locked)."""
        return {"memory_limit": re.sub(r"\s+", "", self.memory_limit), "threads": self.threads, "temp_directory": ""}


class QueryLimitExceeded(ValueError):
    """A query refused or stopped at one of the `QueryLimits` (the message is one line naming the limit)."""


def nesting_depth(sql: str) -> int:
    """Deepest nesting of brackets and CASE in the text (strings and comments do not count); 0 if it does not tokenize."""
    import sqlglot
    import sqlglot.errors

    try:
        tokens = sqlglot.tokenize(sql, read="duckdb")
    except sqlglot.errors.TokenError:
        return 0  # the parser reports it
    depth = deepest = 0
    for token in tokens:
        kind = token.token_type.name
        if kind in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif kind in _CLOSE:
            depth = max(0, depth - 1)
    return deepest


def check_text(sql: str, limits: QueryLimits) -> None:
    """Refuse a query text longer or deeper than the limits, before any parser sees it."""
    if len(sql) > limits.max_sql_chars:
        raise QueryLimitExceeded(
            f"the query is {len(sql):,} characters long, more than the {limits.max_sql_chars:,} allowed (max_sql_chars, {WHERE})"
        )
    depth = nesting_depth(sql)
    if depth > limits.max_nesting_depth:
        raise QueryLimitExceeded(
            f"the query nests {depth} levels deep, more than the {limits.max_nesting_depth} allowed (max_nesting_depth, {WHERE})"
        )


def too_deep(limits: QueryLimits) -> QueryLimitExceeded:
    """What a parser's stack overflow means to the reader (a construct that nests without brackets)."""
    return QueryLimitExceeded(f"the query nests too deeply to check; simplify it (max_nesting_depth {limits.max_nesting_depth}, {WHERE})")


@contextmanager
def interrupt_after(con: duckdb.DuckDBPyConnection, limits: QueryLimits) -> Iterator[threading.Event]:
    """Interrupt whatever `con` runs once the timeout passes; the event says whether it fired."""
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(limits.timeout_seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def timed_out(limits: QueryLimits) -> QueryLimitExceeded:
    return QueryLimitExceeded(f"the query ran longer than {limits.timeout_seconds:g} s and was stopped (timeout_seconds, {WHERE})")


def out_of_memory(limits: QueryLimits) -> QueryLimitExceeded:
    return QueryLimitExceeded(f"the query needs more memory than the {limits.memory_limit} allowed (memory_limit, {WHERE})")


def fetch_bounded(con: duckdb.DuckDBPyConnection, sql: str, limits: QueryLimits, fired: threading.Event) -> pl.DataFrame:
    """Run `sql` and collect its result batch by batch, refusing it past `max_result_rows` or the timeout."""
    import polars as pl
    import pyarrow as pa

    # Streamed: the engine computes only the batches fetched, so a huge result stops at the limit.
    reader = con.sql(sql).to_arrow_reader(100_000)
    batches, rows = [], 0
    for batch in reader:
        if fired.is_set():
            raise timed_out(limits)
        rows += batch.num_rows
        if rows > limits.max_result_rows:
            raise QueryLimitExceeded(
                f"the query returns more than {limits.max_result_rows:,} rows; aggregate or add a LIMIT (max_result_rows, {WHERE})"
            )
        batches.append(batch)
    frame = pl.from_arrow(pa.Table.from_batches(batches, schema=reader.schema))
    assert isinstance(frame, pl.DataFrame)  # a table, not an array, becomes a frame
    return frame
