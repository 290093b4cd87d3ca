"""Consecutive key ranges holding at most a budget of rows: how large loads are cut into batches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

K = TypeVar("K")


def ranges_within(sizes: Iterable[tuple[K, int]], budget: int) -> list[tuple[K, K]]:
    """(first, last) key ranges over `sizes` (key, rows) in key order, each holding at most `budget`
    rows -- except a single key bigger than the budget, which is a range of its own (a key is never split)."""
    ranges: list[tuple[K, K]] = []
    first: K | None = None
    last: K | None = None
    size = 0
    for key, n in sizes:
        if first is not None and last is not None and size + n > budget:
            ranges.append((first, last))
            first, size = None, 0
        first = key if first is None else first
        last, size = key, size + n
    if first is not None and last is not None:
        ranges.append((first, last))
    return ranges
