"""The allocator settings reach Polars' jemalloc when the package is imported first, and a user's own win."""

from __future__ import annotations

import os
import subprocess
import sys

from pos_lakehouse.runtime import ALLOCATOR_ENV, allocator_settings


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != ALLOCATOR_ENV}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120)


def test_jemalloc_runs_with_the_package_settings():
    # jemalloc prints the options it runs with at exit (`stats_print`), which shows what it applied.
    out = _python(
        "import os, pos_lakehouse; os.environ['_RJEM_MALLOC_CONF'] += ',stats_print:true'\nimport polars as pl; pl.DataFrame({'a': [1]})"
    )
    options = dict(part.split(":") for part in allocator_settings().split(","))
    for name, value in options.items():
        assert f"opt.{name}: {value}" in out.stderr, f"jemalloc did not take {name}:{value}"


def test_a_users_own_settings_are_left_alone():
    out = _python("import os, pos_lakehouse; print(os.environ['_RJEM_MALLOC_CONF'])", **{ALLOCATOR_ENV: "dirty_decay_ms:1234"})
    assert out.stdout.strip() == "dirty_decay_ms:1234"


def test_nothing_is_set_once_polars_is_loaded():
    out = _python("import os, polars, pos_lakehouse; print(os.environ['_RJEM_MALLOC_CONF'])")
    # Polars' own defaults only: setting ours after it loaded would claim settings that never applied.
    assert "narenas" not in out.stdout
