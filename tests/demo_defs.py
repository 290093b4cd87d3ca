"""The tests' own defs folders: the demo retailers' shipped YAMLs and the shared components, copied.

The package's `defs/` is where a user onboards retailers (`dg scaffold defs ... retailers/<name>`),
so the tests never load it: what they assert about "every retailer" (counts, ids, keys, policy
warnings) holds for the demo retailers, whatever else has been onboarded beside them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from pos_lakehouse.demo.retailers import DEMO_RETAILERS
from pos_lakehouse.settings import DEFS_DIR_ENV, PACKAGE_DIR

# The only place the tests read the package's defs folder: to copy the demo's part of it.
SHIPPED_DEFS = PACKAGE_DIR / "defs"
_SKIP = shutil.ignore_patterns("__pycache__")


def write_demo_defs(dest: Path, retailers: tuple[str, ...] = DEMO_RETAILERS) -> Path:
    """A defs folder at `dest` with the shipped gold, reference, serving and resources and only `retailers`' YAMLs."""
    dest.mkdir(parents=True)
    for entry in SHIPPED_DEFS.iterdir():
        if entry.name in ("retailers", "__pycache__"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=_SKIP)
        else:
            shutil.copy2(entry, dest / entry.name)
    for name in retailers:
        shutil.copytree(SHIPPED_DEFS / "retailers" / name, dest / "retailers" / name, ignore=_SKIP)
    _drop_keys_of_absent_retailers(dest)
    return dest


def _drop_keys_of_absent_retailers(dest: Path) -> None:
    """A regional group may already grant the key of a retailer onboarded beside the demo's (as the
    README says to do): left in the copy, that key would name no retailer there, which the policy rejects."""
    policy_file = dest / "serving" / "access_policy.yaml"
    if not policy_file.is_file():
        return
    keys = set()
    for path in (dest / "retailers").glob("*/defs.yaml"):
        keys.add(((yaml.safe_load(path.read_text()) or {}).get("attributes") or {}).get("secure_group_key"))
    doc = yaml.safe_load(policy_file.read_text()) or {}
    groups = doc.get("groups") or {}
    absent = {k for g in groups.values() for k in (g or {}).get("secure_group_keys", []) if k not in keys}
    if not absent:
        return  # the shipped file as it is

    # Flow lists (`secure_group_keys: [110011, 110012]`, as shipped) lose the keys in place, comments kept.
    def kept(match: re.Match) -> str:
        items = [i.strip() for i in match.group(2).split(",") if i.strip()]
        return f"{match.group(1)}[{', '.join(i for i in items if not i.isdigit() or int(i) in keys)}]"

    text = re.sub(r"(secure_group_keys:\s*)\[([^\]]*)\]", kept, policy_file.read_text())
    doc = yaml.safe_load(text) or {}
    for group in (doc.get("groups") or {}).values():
        if group and any(k not in keys for k in group.get("secure_group_keys", [])):
            # Another layout: rewritten whole (without its comments).
            for each in doc["groups"].values():
                if each and "secure_group_keys" in each:
                    each["secure_group_keys"] = [k for k in each["secure_group_keys"] if k in keys]
            text = yaml.safe_dump(doc, sort_keys=False)
            break
    policy_file.write_text(text)


def copy_project(dest: Path, *, tests: bool = False) -> tuple[Path, dict[str, str]]:
    """A copy of the project at `dest` (package with the demo's defs folder, pyproject.toml, README,
    optionally tests/) and the environment that runs it: its `src/` shadows the checkout's editable
    install, and no `POS_LAKEHOUSE_DEFS_DIR` points elsewhere, so it loads its own package's `defs/`."""
    checkout = PACKAGE_DIR.parents[1]
    package = dest / "src" / "pos_lakehouse"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__", "defs"))
    write_demo_defs(package / "defs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / name, dest / name)
    if tests:
        shutil.copytree(checkout / "tests", dest / "tests", ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if k != DEFS_DIR_ENV}
    env.update(PYTHONPATH=str(dest / "src"), DAGSTER_DISABLE_TELEMETRY="1")
    return dest, env
