"""A file's format from its name and first bytes: container, text encoding, CSV separator, JSON shape.

Pure functions of (file name, head bytes): `profile` reads the bytes and decompresses the head of
a `.gz`/`.zip` first.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

SEPARATORS = (",", ";", "|", "\t")


@dataclass
class Sniffed:
    """What the head of a file says about its format; `notes` are the doubts worth a `# REVIEW:`."""

    type: str
    encoding: str = "utf-8"
    separator: str = ","
    record_path: str | None = None
    compression: str = "none"
    ascii_only: bool = False  # the sample is plain ASCII: any ASCII-compatible encoding reads it alike
    notes: list[str] = field(default_factory=list)


def compression_of(name: str, head: bytes) -> str:
    """gzip or zip by magic bytes (an .xlsx is a zip too, but a workbook, not a compressed file)."""
    lower = name.lower()
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"PK\x03\x04" and not lower.endswith((".xlsx", ".xlsm", ".xls")):
        return "zip"
    return "none"


def encoding_of(head: bytes) -> tuple[str, list[str]]:
    """utf-8 when the bytes decode as UTF-8 (a cut multi-byte character at the end is forgiven), else latin-1
    (cp1252 when it uses the bytes 0x80-0x9f, which latin-1 leaves to control characters)."""
    try:
        head.decode("utf-8")
        return "utf-8", []
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return "utf-8", []
    if any(0x80 <= b <= 0x9F for b in head):
        return "cp1252", ["bytes 0x80-0x9f found: taken as cp1252 (Windows); check accented names in silver"]
    return "latin-1", []


def separator_of(text: str) -> tuple[str, list[str]]:
    """The separator that splits the first lines into the same number (> 1) of fields, the most fields winning."""
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the head may end in the middle of a line
    best, best_fields = ",", 0
    for sep in SEPARATORS:
        counts = {len(row) for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=sep)}
        if len(counts) == 1 and (n := counts.pop()) > 1 and n > best_fields:
            best, best_fields = sep, n
    if best_fields == 0:
        return ",", ["no separator splits every line alike: check the separator and `skip_rows`"]
    return best, []


def record_path_of(doc: object, path: str = "") -> str | None:
    """The dotted path to the first array of objects inside a JSON document ('' for the document itself)."""
    if isinstance(doc, list):
        return path if doc and all(isinstance(r, dict) for r in doc[:50]) else None
    if isinstance(doc, dict):
        for key, value in doc.items():
            found = record_path_of(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    return None


def json_shape(text: str, complete: bool) -> Sniffed:
    """`json` (an array, or an object holding one at `record_path`) or `jsonl` (one object per line)."""
    body = text.lstrip("\ufeff \t\r\n")
    if body.startswith("["):
        return Sniffed("json")
    lines = [line for line in body.splitlines() if line.strip()]
    try:
        first = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict) and len(lines) > 1:
        return Sniffed("jsonl")
    if not complete:
        return Sniffed("json", notes=["the document is larger than the sample read: give `record_path` by hand if this is wrong"])
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        return Sniffed("jsonl", notes=["neither one JSON document nor JSON lines: check the file"])
    path = record_path_of(doc)
    if path is None:
        return Sniffed("json", notes=["no array of records found in the document"])
    return Sniffed("json", record_path=path or None)


def sniff(name: str, head: bytes, complete: bool = False) -> Sniffed:
    """The format of a file named `name` whose (decompressed) first bytes are `head`.

    `complete`: `head` is the whole (decompressed) file, so a JSON document can be parsed whole.
    """
    lower = name.lower()
    for suffix in (".gz", ".gzip", ".zip"):
        lower = lower.removesuffix(suffix)
    if head[:4] == b"PAR1" or lower.endswith(".parquet"):
        return Sniffed("parquet")
    if head[:4] == b"PK\x03\x04" or lower.endswith((".xlsx", ".xlsm", ".xls")):
        return Sniffed("excel")
    encoding, notes = encoding_of(head)
    text = head.decode(encoding, errors="replace")
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("[", "{") or lower.endswith((".json", ".jsonl", ".ndjson")):
        shaped = json_shape(text, complete)
        shaped.encoding, shaped.notes, shaped.ascii_only = encoding, notes + shaped.notes, head.isascii()
        return shaped
    separator, sep_notes = separator_of(text)
    return Sniffed("csv", encoding=encoding, separator=separator, notes=notes + sep_notes, ascii_only=head.isascii())
