"""A mistake in a defs YAML as one line per error: file, line, field, what is wrong and what is allowed.

Dagster reports a component that fails to load with its whole component tree and a stack trace;
a person onboarding a retailer needs the line of their YAML to change. `RetailerPipeline.load`
raises `YamlError` (which `dg check defs` prints), and the CLI prints `load_error_lines` of any
load failure instead of a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from pos_lakehouse.retailer_checks import FieldError, dotted


class YamlError(ValueError):
    """A defs YAML that cannot load, already said in one line per mistake."""


def yaml_line(path: Path, keys: Sequence[str | int]) -> int | None:
    """The line (1-based) of the deepest of `keys` (mapping keys and list indexes) found in the YAML file."""
    try:
        node = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if str(k.value) == str(key)), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


# Pydantic's names for validator and union steps in an error's location: not YAML fields.
_STEP = re.compile(r"^(function-\w+\[.*\]|[a-z_]+\[.*\]|str|union\[.*\])$")


def _field(loc: Sequence) -> tuple[str | int, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and _STEP.match(p)))


def validation_lines(exc: ValidationError, path: Path, prefix: Sequence[str] = ("attributes",)) -> list[str]:
    """One line per error of a pydantic validation of the YAML at `path` (fields under `prefix`)."""
    errors = exc.errors()
    lines = []
    for error in errors:
        raised = (error.get("ctx") or {}).get("error")
        loc = list(error.get("loc", ()))
        if isinstance(raised, FieldError):
            field, message = tuple(_field(loc)) + raised.field, raised.message
        else:
            # Dagster's own validation renames the location "<path> at <file>:<line>".
            if len(loc) == 1 and isinstance(loc[0], str) and " at " in loc[0]:
                loc = loc[0].split(" at ")[0].split(".")
                loc = [int(p) if p.isdigit() else p for p in loc]
                if loc and loc[0] == prefix[0]:
                    loc = loc[len(prefix) :]
            # A nested block may also be a template string: that alternative's error says nothing useful.
            if error.get("type") == "string_type" and len(errors) > 1:
                continue
            field = _field(loc)
            message = error.get("msg", "").removeprefix("Value error, ")
            if error.get("type") in ("literal_error", "enum") and "input" in error:
                message += f", not {error['input']!r}"
        line = yaml_line(path, [*prefix, *field])
        lines.append(f"{path}{f':{line}' if line else ''}: {dotted(field) or 'attributes'}: {message}")
    return lines


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _source_file(exc: ValidationError) -> Path | None:
    for error in exc.errors():
        position = (error.get("ctx") or {}).get("source_position")
        if position is not None and getattr(position, "filename", None):
            return Path(position.filename)
    return None


def load_error_lines(exc: BaseException) -> list[str] | None:
    """What went wrong loading the definitions, one line per mistake; None when `exc` is not a load failure."""
    chain = list(_chain(exc))
    if not any(type(e).__name__ == "ComponentTreeException" or isinstance(e, YamlError) for e in chain):
        return None
    for e in chain:
        if isinstance(e, YamlError):
            return str(e).splitlines()
        if isinstance(e, ValidationError):
            path = _source_file(e)
            if path is not None:
                return validation_lines(e, path)
    deepest = chain[-1]
    text = str(deepest).strip().splitlines()
    return [f"{type(deepest).__name__}: {text[0] if text else ''}"]
