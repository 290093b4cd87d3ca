"""What every `pos-lakehouse` command shares: the usage error, Dagster's home, the loaded code location, the console."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

from pos_lakehouse.settings import current_settings, project_root


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or project_root() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def quiet_deliberate_warnings() -> None:
    """The project uses Dagster's preview/beta APIs on purpose (automation sensor, spec mapping, freshness)."""
    from pos_lakehouse.quiet import quiet_deliberate_warnings as quiet

    quiet()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")


@functools.cache
def tree():
    """The code location's components, loaded once per command (retailers and definitions come from it)."""
    from pos_lakehouse.definitions import component_tree

    return component_tree()


def specs():
    """Every retailer, read from the loaded `RetailerPipeline` components (as gold and serving read them)."""
    from pos_lakehouse.components.loaded_retailers import retailers_in_tree

    quiet_deliberate_warnings()
    return retailers_in_tree(tree())


def checked_retailers(names: list[str] | None) -> list[str] | None:
    """The `--retailer` names, each known; None for all."""
    if not names:
        return None
    known = [s.name for s in specs()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown retailer {', '.join(repr(n) for n in unknown)}; known retailers: {', '.join(known)}")
    return names


def existing_data_root() -> Path:
    """The data root, which must exist (nothing is created when it does not)."""
    root = current_settings().data_root
    if "://" in root:
        return Path(root)
    if not Path(root).is_dir():
        raise UsageError(f"data root {root} does not exist; set POS_LAKEHOUSE_DATA or run `pos-lakehouse demo` first")
    return Path(root)


def console():
    from rich.console import Console

    # A pipe or CI log is not 80 columns wide; keep the summary table readable there.
    return Console() if sys.stdout.isatty() else Console(width=160)


def first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))
