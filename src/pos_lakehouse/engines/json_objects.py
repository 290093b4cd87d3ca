"""What a new observation keeps of a dimension's `extra_attributes` (source columns beyond the model, a JSON object).

The rule of both engines' `merge_json` (the Polars edge runs this function; the Spark edge the same
rule in Spark's own functions).

A delivery speaks only for the extra columns it carries and fills: a column it lacks, or leaves
empty for an entity, says nothing about it, so the stored value stands. Without this, a file
with one new (or one empty) extra column would rewrite every entity of the dimension.

A key the retailer's YAML now maps to a model column (`retired`) is no longer extra: its value
lives in that column, so it leaves every stored object the next time the entity is observed (after
a fixed mapping and a replay, no stale copy of a measure stays behind in a dimension).
"""

from __future__ import annotations

import json


def merge_objects(new: str | None, stored: str | None, retired: frozenset[str] = frozenset()) -> str | None:
    """`stored` (a JSON object, or None) less its `retired` keys, updated with the keys of `new` that have a value.

    Either text is returned verbatim when it already is the result, so an unchanged entity keeps
    its stored text to the byte (and no new version is written for it). Values are compared, and
    a merged object written, as text (a number as its JSON text): the Spark engine reads these
    objects as string maps, and both engines must write the same bytes."""
    given = _object(new)
    valued = {k: _text(v) for k, v in given.items() if v is not None}
    everything = _object(stored)
    old = {k: _text(v) for k, v in everything.items() if k not in retired}
    if len(old) < len(everything):  # retired keys leave: the stored text cannot stand
        if not valued:
            return json.dumps(old, ensure_ascii=False, separators=(",", ":")) if old else None
    elif not valued:
        return stored
    elif stored is not None and all(k in old and old[k] == v for k, v in valued.items()):
        return stored
    kept = {k: v for k, v in old.items() if k not in valued}
    if not kept and len(valued) == len(given):
        return new
    return json.dumps({**kept, **valued}, ensure_ascii=False, separators=(",", ":"))


def _object(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
