"""Dagster's beta and preview warnings for the APIs this project uses on purpose, silenced where it loads.

The code location relies on Dagster APIs Dagster still marks beta or preview (components and
their code references, the automation sensor, freshness policies, sensor owners): a warning for
each, at every load of the code location and every `dg` command, tells an operator nothing they
can act on. `POS_LAKEHOUSE_VERBOSE=1` brings them back (e.g. before upgrading Dagster). Only
these two categories are silenced; every other warning (deprecations, the project's own
`PolicyWarning`, as one line) still shows.
"""

import os
import warnings

VERBOSE_ENV = "POS_LAKEHOUSE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    # The project's own findings (a retailer no reader group names) are for operators: one line,
    # without the Python file and source line Python prints for a warning.
    if getattr(category, "__module__", "").startswith("pos_lakehouse."):
        return f"warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


_python_format = warnings.formatwarning


def quiet_deliberate_warnings() -> None:
    warnings.formatwarning = _format_warning
    if verbose():
        return
    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
