"""Onboarding a retailer exactly as the README says leaves the test suite green.

The README's commands (scaffold, then its example YAML, then the retailer's key in a regional group)
are run in a copy of the project, and the tests that count, name or key "every retailer" run there:
they load their own copy of the demo's defs folder, so the newcomer changes nothing they see.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT
from demo_defs import copy_project

# Patterns that load or copy the package's own defs folder (only demo_defs.py may, to copy the demo's part).
LIVE_DEFS = [
    r'(PROJECT_ROOT|parents\[\d\])\s*/\s*"src"\s*/\s*"pos_lakehouse"\s*/\s*"defs"',
    r"\bPACKAGE_DIR\b",
    r"ComponentTree\.for_project\(",
    r"from pos_lakehouse\.\w+ import [^\n]*\bRETAILERS_DIR\b",
    r"\bDEFAULT_(POLICY_PATH|RETAILERS_DIR)\b",
    r"import_module\(\s*[\"']pos_lakehouse\.defs",
]

# The tests that assert about all retailers: how many there are, their ids and keys, the policy's warnings.
SENSITIVE = [
    "tests/test_onboarding_one_file.py",
    "tests/test_retailer_loader.py",
    "tests/test_serving.py::test_policy_takes_every_retailer_from_its_yaml",
    "tests/test_gold_partitions.py::test_secure_group_key_check_flags_a_retailer_missing_from_the_policy",
    "tests/test_definitions.py::test_definitions_load",
    "tests/test_new_user.py::test_unknown_retailer_is_named_with_the_known_ones",
]


def _readme_section() -> str:
    return (PROJECT_ROOT / "README.md").read_text().split("## Onboarding a retailer", 1)[1].split("\n## ", 1)[0]


def test_no_test_module_reads_the_package_defs_folder():
    offenders = []
    for path in sorted((PROJECT_ROOT / "tests").glob("*.py")):
        if path.name in ("demo_defs.py", Path(__file__).name):
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {m.group(0)}" for pattern in LIVE_DEFS for m in re.finditer(pattern, text)]
    assert offenders == []


@pytest.mark.slow
def test_a_retailer_onboarded_as_the_readme_says_leaves_the_tests_green(tmp_path):
    project, env = copy_project(tmp_path / "project", tests=True)
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    section = _readme_section()
    scaffold = next(line for line in section.splitlines() if line.startswith("uv run dg scaffold defs "))
    argv = shlex.split(scaffold.split("#", 1)[0])[2:]  # without `uv run`: the environment is this one
    dg_exe = str(Path(sys.executable).parent / "dg")
    done = subprocess.run([dg_exe, *argv[1:]], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    # The scaffolded file, then the README's example edit of it, then its key in a regional group.
    folder = project / "src" / "pos_lakehouse" / "defs" / argv[-1]
    scaffolded = yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]
    example = section.split("```yaml", 1)[1].split("```", 1)[0]
    readme = yaml.safe_load(example)["attributes"]
    assert (scaffolded["name"], scaffolded["retailer_id"]) == (readme["name"], readme["retailer_id"])  # the README's id is the scaffold's
    (folder / "defs.yaml").write_text(example)
    policy = project / "src" / "pos_lakehouse" / "defs" / "serving" / "access_policy.yaml"
    key = readme["secure_group_key"]
    text, granted = re.subn(r"(category_managers_eu:[^\[]*secure_group_keys: \[[^\]]*)\]", rf"\1, {key}]", policy.read_text())
    assert granted == 1
    policy.write_text(text)
    assert key in yaml.safe_load(text)["groups"]["category_managers_eu"]["secure_group_keys"]

    # The copy's code location has the newcomer ...
    probe = (
        "from pos_lakehouse.components.loaded_retailers import retailers_in_tree\n"
        "from pos_lakehouse.definitions import component_tree\n"
        "print(','.join(s.name for s in retailers_in_tree(component_tree())))\n"
    )
    seen = subprocess.run([sys.executable, "-c", probe], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert seen.returncode == 0, seen.stderr[-3000:]
    assert readme["name"] in seen.stdout.strip().splitlines()[-1].split(",")
    # ... and its tests about every retailer pass.
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q", "-m", "not spark", *SENSITIVE],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
