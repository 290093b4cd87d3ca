"""Read a folder of sample files and propose a retailer: the I/O around the pure profiling modules.

Files are grouped into kinds by name (`grain.kind_glob`), each kind's format is sniffed from its
first file and checked by reading every sample file with the pipeline's own reader (so what is
proposed is what ingestion will do), then columns are profiled and mapped, and the dates decide
grain and cadence.
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pos_lakehouse.ingest.readers import DeliveryError, read_raw
from pos_lakehouse.onboarding.grain import Grain, grain_of, incremental_kind, kind_glob, kind_name, name_date, snapshot_overlap
from pos_lakehouse.onboarding.mapping import KindMapping, map_columns
from pos_lakehouse.onboarding.sniff import Sniffed, sniff
from pos_lakehouse.onboarding.values import ValueProfile, parse_dates, profile_values
from pos_lakehouse.onboarding.vocabulary import COUNTRY_CURRENCY, currency_in, language_country
from pos_lakehouse.retailer import FileFormat

HEAD_BYTES = 256 << 10
SAMPLE_ROWS = 20_000  # values profiled per column (dates: every row of every file)
MAX_FILES_PER_KIND = 60
_SKIP_SUFFIXES = (".done", ".part", ".filepart", ".tmp", ".md", ".txt.done")
SCD2_DEFAULTS = {"prod_dim": ("prod_name", "brand", "category"), "site_dim": ("site_name", "channel")}


class OnboardingError(Exception):
    """The folder cannot be profiled (no files, no file readable); the message says which and why."""


@dataclass
class KindProfile:
    """One kind of file: its glob, format, mapping and what its files say about time."""

    glob: str
    name: str
    files: list[Path]
    fmt: FileFormat
    sniffed: Sniffed
    mapping: KindMapping
    holds: list[str] = field(default_factory=list)
    observed_on: tuple[str, str] | None = None
    incremental: bool = False
    grain: Grain | None = None
    notes: list[str] = field(default_factory=list)
    decimals: str | None = None  # "comma" or "point": how the sample's decimal numbers are written
    replaces: str = "site_days"


@dataclass
class Proposal:
    """A retailer as the files describe it, with a note for every guess worth reviewing."""

    name: str
    retailer_id: int
    secure_group_key: int
    country: str
    currency: str
    cadence: str
    week_ends_on: str
    kinds: list[KindProfile]
    scd2: dict[str, list[str]]
    notes: dict[str, str] = field(default_factory=dict)  # attribute -> review note


def _head(path: Path, compression: str) -> tuple[bytes, bool]:
    """The first bytes of the (decompressed) file and whether they are all of it."""
    if compression == "gzip":
        with gzip.open(path) as f:
            data = f.read(HEAD_BYTES + 1)
    elif compression == "zip":
        with zipfile.ZipFile(path) as z, z.open(z.namelist()[0]) as f:
            data = f.read(HEAD_BYTES + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(HEAD_BYTES + 1)
    return data[:HEAD_BYTES], len(data) <= HEAD_BYTES


def _sniff_file(path: Path) -> Sniffed:
    from pos_lakehouse.onboarding.sniff import compression_of

    with open(path, "rb") as f:
        raw = f.read(8)
    compression = compression_of(path.name, raw)
    head, complete = _head(path, compression)
    sniffed = sniff(path.name, head, complete)
    if sniffed.type == "json" and not complete:
        sniffed = sniff(path.name, _whole(path, compression), True)
    sniffed.compression = compression
    return sniffed


def _whole(path: Path, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def _file_format(path: Path, sniffed: Sniffed) -> FileFormat:
    kwargs: dict = {"type": sniffed.type}
    if sniffed.type == "csv":
        kwargs.update(separator=sniffed.separator, encoding=sniffed.encoding)
    if sniffed.type in ("json", "jsonl"):
        kwargs.update(encoding=sniffed.encoding, record_path=sniffed.record_path)
    if sniffed.type == "excel":
        kwargs["sheet_name"] = _biggest_sheet(path, sniffed)
    if sniffed.compression != "none":
        kwargs["compression"] = sniffed.compression
    return FileFormat(**kwargs)


def _biggest_sheet(path: Path, sniffed: Sniffed) -> str | None:
    import fastexcel

    reader = fastexcel.read_excel(path.read_bytes())
    sizes = {name: reader.load_sheet_by_name(name, n_rows=2000).height for name in reader.sheet_names}
    if len(sizes) > 1:
        sniffed.notes.append(f"sheets {', '.join(sizes)}: the one with the most rows taken")
    return max(sizes, key=lambda sheet: sizes[sheet]) if sizes else None


def _read(path: Path, fmt: FileFormat) -> pl.DataFrame:
    try:
        return read_raw(path, fmt).collect()
    except DeliveryError as exc:
        if exc.reason in ("empty_file", "header_only", "no_records"):
            return pl.DataFrame()
        raise OnboardingError(f"{path.name}: cannot read it as {fmt.type}: {exc}") from exc


def profile_kind(glob: str, name: str, files: list[Path]) -> KindProfile:
    """Sniff, read, profile and map the sample files of one kind."""
    sniffed = _sniff_file(files[0])
    fmt = _file_format(files[0], sniffed)
    frames = [_read(f, fmt) for f in files[:MAX_FILES_PER_KIND]]
    rows = [f.height for f in frames]
    whole = pl.concat([f for f in frames if f.width], how="diagonal") if any(f.width for f in frames) else pl.DataFrame()
    if whole.is_empty():
        raise OnboardingError(f"{glob}: every sample file is empty; give a file with rows")
    sample = whole.sample(SAMPLE_ROWS, seed=0) if whole.height > SAMPLE_ROWS else whole
    profiles = {c: profile_values(sample[c].to_list()) for c in sample.columns}
    mapping = map_columns(sample, profiles)
    kind = KindProfile(glob, name, files, fmt, sniffed, mapping, notes=list(sniffed.notes))
    kind.fmt = _with_numbers_and_dates(fmt, profiles, mapping, kind.notes)
    decimals = [p for p in profiles.values() if p.kind == "decimal" and p.max_decimals > 0]
    kind.decimals = "comma" if any(p.decimal_comma for p in decimals) else "point" if decimals else None
    kind.incremental = incremental_kind(rows)
    if kind.incremental:
        kind.notes.append(f"{rows.count(0)} of {len(rows)} sample files hold no rows: taken as changes-only files")
    if mapping.date_column:
        fmt_ = profiles[mapping.date_column].date_format or "%Y-%m-%d"
        per_file = [
            parse_dates([v for v in f[mapping.date_column].drop_nulls().str.strip_chars().unique().to_list() if v], fmt_)
            for f in frames
            if f.width
        ]
        kind.grain = grain_of(per_file, mapping.date_column)
    _time_of_dimension_files(kind, frames)
    _per_store_files(kind, frames)
    return kind


def _with_numbers_and_dates(fmt: FileFormat, profiles: dict[str, ValueProfile], mapping: KindMapping, notes: list[str]) -> FileFormat:
    # Every column counts, mapped or not: a sender writes all its numbers alike.
    comma = [p for p in profiles.values() if p.kind == "decimal" and p.decimal_comma]
    update: dict = {}
    if comma and fmt.type in ("csv", "excel"):
        update["decimal_comma"] = True
    if mapping.date_column:
        p = profiles[mapping.date_column]
        if p.date_format and p.date_format != "%Y-%m-%d":
            update["date_formats"] = [p.date_format]
        if p.ambiguous_formats:
            notes.append(
                f"dates of `{mapping.date_column}` read as {p.date_format}, but {', '.join(p.ambiguous_formats)} fits the sample too"
            )
    return fmt.model_copy(update=update)


def _time_of_dimension_files(kind: KindProfile, frames: list[pl.DataFrame]) -> None:
    """Dimension files without dates: snapshots dated by their names, or changes only."""
    if kind.mapping.date_column:
        return
    dated = [name_date(f.name) for f in kind.files]
    if dated and all(d is not None and d == dated[0] for d in dated):
        kind.observed_on = dated[0]
        kind.notes.append("no date column: each file's date is read from its name (observed_on)")
    keys = [c for c, t in kind.mapping.columns.items() if t in ("prod_id", "site_id")]
    if keys and len(frames) > 1 and not kind.incremental:
        overlap = snapshot_overlap([set(f[keys[0]].drop_nulls().to_list()) if keys[0] in f.columns else set() for f in frames])
        if overlap < 0.5:
            kind.incremental = True
            kind.notes.append(f"consecutive files share {overlap:.0%} of their ids: taken as changes only (incremental)")


def _per_store_files(kind: KindProfile, frames: list[pl.DataFrame]) -> None:
    sites = next((c for c, t in kind.mapping.columns.items() if t == "site_id"), None)
    if sites is None or kind.mapping.date_column is None or len(frames) < 2:
        return
    per_file = [set(f[sites].drop_nulls().to_list()) for f in frames if f.width]
    if all(len(s) == 1 for s in per_file) and len(set().union(*per_file)) == len(per_file):
        kind.notes.append("one file per store (each holds a single store id): every store-day comes whole from its file")
    # A store-day split over several files (per department, per till) must not have one file replace
    # the others' rows of that day: only the delivered rows are upserted then.
    day = kind.mapping.date_column
    seen: set[tuple] = set()
    for f in frames:
        if not f.width:
            continue
        pairs = set(f.select(sites, day).drop_nulls().unique().iter_rows())
        if pairs & seen:
            kind.replaces = "rows"
            kind.notes.append(
                "a store-day appears in more than one file: `replaces: rows`, so no file drops another's rows of that day "
                "(if the later file corrects the whole day instead, remove it: the default replaces the store-day)"
            )
            return
        seen |= pairs


def _one_locale(kinds: list[KindProfile]) -> None:
    """A sender writes all its files in one encoding: a kind whose sample is plain ASCII takes the others' (latin-1)."""
    text = [k for k in kinds if k.fmt.type in ("csv", "json", "jsonl")]
    others = {k.fmt.encoding for k in text if not k.sniffed.ascii_only}
    if len(others) == 1 and (encoding := others.pop()) != "utf-8":
        for k in text:
            if k.sniffed.ascii_only:
                k.fmt = k.fmt.model_copy(update={"encoding": encoding})
    # Likewise its decimal mark: a kind without decimals in its sample takes the others' decimal comma.
    if any(k.decimals == "comma" for k in text) and not any(k.decimals == "point" for k in text):
        for k in text:
            if k.fmt.type == "csv" and k.decimals is None:
                k.fmt = k.fmt.model_copy(update={"decimal_comma": True})


def propose(
    folder: Path,
    name: str,
    *,
    retailer_id: int | None = None,
    secure_group_key: int | None = None,
    country: str | None = None,
    currency: str | None = None,
    taken_ids: tuple[int, int] | None = None,
) -> Proposal:
    """A retailer proposed from the sample files in `folder` (`taken_ids`: the next free id and key;
    default: after those of the loaded defs folder's retailers)."""
    if taken_ids is None:
        from pos_lakehouse.components.retailer_scaffold import _free_ids
        from pos_lakehouse.settings import retailers_dir

        taken_ids = _free_ids(retailers_dir())
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_SKIP_SUFFIXES))
    if not files:
        raise OnboardingError(f"{folder}: no sample files")
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(kind_glob(f.name), []).append(f)
    kinds: list[KindProfile] = []
    for glob, members in groups.items():
        kinds.append(profile_kind(glob, kind_name(glob, name, [k.name for k in kinds]), members))
    _one_locale(kinds)
    timed = [k for k in kinds if k.grain is not None and {"prod_id", "site_id"} <= k.mapping.targets]
    grain = (
        timed[0].grain if timed and timed[0].grain else Grain(False, "daily", notes=["no file with dates, stores and products"], sure=False)
    )
    notes: dict[str, str] = {}
    for k in kinds:
        weekly = bool(k.grain and k.grain.weekly_rows)
        if k.mapping.date_column:
            k.mapping.columns[k.mapping.date_column] = "week_end_date" if weekly else "date"
        k.holds = k.mapping.holds(weekly)
        if k.grain:
            k.notes.extend(n for n in k.grain.notes if n not in k.notes)
        if not k.holds:
            k.notes.append("feeds no canonical table: no product or store id with attributes, nor dated measures")
    # Kinds that describe products and stores first: where two kinds feed the same fact rows, the
    # later one's file is the one a row names as its source.
    kinds.sort(key=lambda k: (not ({"prod_dim", "site_dim"} & set(k.holds)), not k.holds))
    if not grain.sure:
        notes["cadence"] = "; ".join(grain.notes)
    names = [c for k in kinds for c in k.mapping.columns]
    lang = language_country([c for k in kinds for c in (*k.mapping.columns, *k.mapping.unmapped)])
    found_currency = currency_in(names)
    guessed_country = country or lang or {v: c for c, v in COUNTRY_CURRENCY.items()}.get(found_currency or "", None)
    if not country:
        notes["country"] = (
            f"guessed from the {'language of the column names' if lang else 'currency'}"
            if guessed_country
            else "unknown: set the retailer's ISO country"
        )
    guessed_currency = currency or found_currency or COUNTRY_CURRENCY.get(guessed_country or "", "EUR")
    if not currency:
        notes["currency"] = (
            "named by a column"
            if found_currency
            else "guessed from the country: the files do not say"
            if guessed_country
            else "unknown: the files do not say; set the retailer's ISO currency"
        )
    mapped = {t: {tt for k in kinds if t in k.holds for tt in k.mapping.targets} for t in SCD2_DEFAULTS}
    scd2 = {t: [a for a in attrs if a in mapped[t]] for t, attrs in SCD2_DEFAULTS.items() if any(t in k.holds for k in kinds)}
    return Proposal(
        name=name,
        retailer_id=retailer_id or taken_ids[0],
        secure_group_key=secure_group_key or taken_ids[1],
        country=(guessed_country or "XX"),
        currency=guessed_currency,
        cadence=grain.cadence,
        week_ends_on=grain.week_ends_on if grain.weekly_rows else "sunday",
        kinds=kinds,
        scd2=scd2,
        notes=notes,
    )
