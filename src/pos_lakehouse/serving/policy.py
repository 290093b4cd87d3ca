"""The gold access policy: who may read which retailers' rows, and which recent measures are masked.

Two sources, each holding only its own facts:

* every retailer's facts -- its `secure_group_key` and antitrust settings (`antitrust`: what is
  masked, `mask_younger_than_days`: from what age) -- live in the retailer's own YAML
  (`defs/retailers/<name>/defs.yaml`, `retailer.py`);
* reader groups and (for local use) users live in `defs/serving/access_policy.yaml`:

```yaml
groups:                    # reader groups (Databricks account groups in production)
  pos_admins: {all_retailers: true}
  category_managers_eu: {secure_group_keys: [110011, 110012]}
users:                     # local only: DuckDB has no principals, so the CLI maps a user to groups
  ada: [pos_admins]
```

`load_policy` joins them into one `AccessPolicy`, the object every enforcement point renders: the
local DuckDB secure views (`duckdb_views.py`), the Unity Catalog SQL (`unity_catalog.py`) and the
gold asset check that every `secure_group_key` in gold is its retailer's. A retailer no group
names is still visible to `all_retailers` groups and reported by a `PolicyWarning`, so onboarding
by one YAML never leaves a retailer silently invisible.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pos_lakehouse.settings import defs_dir, retailers_dir
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.masking import PRICED_QUANTITIES

if TYPE_CHECKING:
    from pos_lakehouse.retailer import RetailerSpec


def default_policy_path() -> Path:
    """The access policy of the loaded defs folder (the package's, or `POS_LAKEHOUSE_DEFS_DIR`'s)."""
    return defs_dir() / "serving" / "access_policy.yaml"


# Measure columns by kind, including the USD conversions; each has an `at_masked_<measure>` twin in the facts.
VALUE_COLUMNS: tuple[str, ...] = (
    *canonical.VALUE_MEASURES,
    *(m.replace("_lc", "_usd") for m in canonical.VALUE_MEASURES),
)
VOLUME_COLUMNS: tuple[str, ...] = canonical.VOLUME_MEASURES
# What `antitrust: value` masks: money, and the quantities money is a price times -- with units on
# show, a masked value is units x the last real unit price (transform/masking.py).
PRICED_COLUMNS: tuple[str, ...] = tuple(PRICED_QUANTITIES.values())


class PolicyError(ValueError):
    """The access policy file is inconsistent, or a reader is unknown."""


class PolicyWarning(UserWarning):
    """Something a governance reader should see, e.g. a retailer that no reader group names."""


# Gold and the serving views each load the policy: the same finding is said once per process.
_said: set[str] = set()


class RetailerAccess(BaseModel):
    """How one retailer's gold rows are protected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Retailer name (as in its YAML), for people reading the policy.")
    secure_group_key: int = Field(description="The key every gold row of this retailer carries.")
    competition_sensitive: bool = Field(default=False, description="Recent measures are replaced by their antitrust-masked twins.")
    mask_younger_than_days: int = Field(
        default=0, ge=0, description="A record is masked while its two-month masking block holds a day younger than this."
    )
    masked_measures: Literal["value", "volume", "all"] = Field(
        default="all",
        description="Which measures are masked: value (money, and the units and stock on hand it is a price times), "
        "volume (units, stock) or all.",
    )

    @model_validator(mode="after")
    def _check(self) -> RetailerAccess:
        if self.competition_sensitive and self.mask_younger_than_days <= 0:
            raise ValueError(f"{self.name}: competition_sensitive needs mask_younger_than_days > 0")
        return self

    @classmethod
    def from_spec(cls, spec: RetailerSpec) -> RetailerAccess:
        """The retailer's protection as its YAML states it (`antitrust`, `mask_younger_than_days`)."""
        sensitive = spec.antitrust != "none"
        return cls(
            name=spec.name,
            secure_group_key=spec.secure_group_key,
            competition_sensitive=sensitive,
            mask_younger_than_days=spec.mask_younger_than_days if sensitive else 0,
            # `value` masks money and the units and stock on hand that would give it back; `volume` masks
            # every measure (see transform.measures.masked_measures).
            masked_measures="value" if spec.antitrust == "value" else "all",
        )

    @property
    def masks(self) -> bool:
        return self.competition_sensitive and self.mask_younger_than_days > 0

    def masked_columns(self) -> tuple[str, ...]:
        if not self.masks:
            return ()
        return {
            "value": (*PRICED_COLUMNS, *VALUE_COLUMNS),
            "volume": VOLUME_COLUMNS,
            "all": (*VOLUME_COLUMNS, *VALUE_COLUMNS),
        }[self.masked_measures]


class Group(BaseModel):
    """A reader group and the retailers (by secure group key) its members may read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="Who is in this group and why.")
    all_retailers: bool = Field(default=False, description="Members read every retailer declared in the policy.")
    secure_group_keys: tuple[int, ...] = Field(default=(), description="Secure group keys members may read.")


class AccessPolicy(BaseModel):
    """Retailers (from their YAMLs), groups and (for local use) users; the one object every enforcement point renders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retailers: dict[str, RetailerAccess] = Field(description="By data_provider_code (`cds_<id>`).")
    groups: dict[str, Group] = Field(default_factory=dict)
    users: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Local users -> their groups (Databricks uses account groups instead)."
    )

    @model_validator(mode="after")
    def _check(self) -> AccessPolicy:
        keys = [r.secure_group_key for r in self.retailers.values()]
        if len(keys) != len(set(keys)):
            raise ValueError(f"a secure_group_key is declared for more than one retailer: {sorted(keys)}")
        known = set(keys)
        for name, group in self.groups.items():
            unknown = set(group.secure_group_keys) - known
            if unknown:
                raise ValueError(f"group {name!r} grants keys no retailer in the policy has: {sorted(unknown)}")
        for user, groups in self.users.items():
            missing = set(groups) - set(self.groups)
            if missing:
                raise ValueError(f"user {user!r} is in undefined group(s) {sorted(missing)}")
        return self

    # ---- questions every enforcement point asks ---------------------------------------------
    @cached_property
    def known_keys(self) -> frozenset[int]:
        return frozenset(r.secure_group_key for r in self.retailers.values())

    def group_keys(self, group: str) -> tuple[int, ...]:
        """Keys a group may read, sorted; `all_retailers` expands to every key in the policy."""
        g = self.groups[group]
        return tuple(sorted(self.known_keys if g.all_retailers else set(g.secure_group_keys)))

    def user_keys(self, user: str) -> tuple[int, ...]:
        """Keys a local user may read (empty for a user without groups); an unknown user is an error."""
        if user not in self.users:
            raise PolicyError(f"unknown user {user!r}; users in the access policy: {', '.join(sorted(self.users))}")
        return tuple(sorted({k for g in self.users[user] for k in self.group_keys(g)}))

    def masked_retailers(self) -> dict[str, RetailerAccess]:
        return {code: r for code, r in self.retailers.items() if r.masks}

    def ungranted_retailers(self) -> dict[str, RetailerAccess]:
        """Retailers no group names by key: only `all_retailers` groups see them."""
        named = {k for g in self.groups.values() for k in g.secure_group_keys}
        return {code: r for code, r in sorted(self.retailers.items()) if r.secure_group_key not in named}


def policy_hash(policy: AccessPolicy) -> str:
    """A short digest of the whole policy: the serving views' code version, and what a built views file records.

    It covers the columns each retailer's setting masks, not only the setting: when what a setting
    masks changes, views built under the old meaning are stale.
    """
    masked = {code: r.masked_columns() for code, r in sorted(policy.retailers.items())}
    payload = policy.model_dump_json() + json.dumps(masked, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _collecting_warnings() -> bool:
    """Whether warnings are being recorded (`catch_warnings(record=True)`, pytest's `warns`): each load then says it."""
    return getattr(getattr(warnings, "_showwarnmsg_impl", None), "__name__", "_showwarnmsg_impl") != "_showwarnmsg_impl"


def load_policy(path: str | Path | None = None, retailers: Iterable[RetailerSpec] | str | Path | None = None) -> AccessPolicy:
    """Groups and users from the access policy YAML, retailers from their own YAMLs, validated together.

    `path` defaults to the loaded defs folder's policy file; `retailers` is a list of specs or a folder of
    retailer YAMLs (default: the loaded defs folder's `retailers/`). Retailers that no group names are
    reported by a `PolicyWarning` (all-retailers groups still see them).
    """
    from pos_lakehouse.retailer import load_retailer_specs

    path = Path(path) if path else default_policy_path()
    if retailers is None or isinstance(retailers, (str, Path)):
        retailers = load_retailer_specs(Path(retailers) if retailers else retailers_dir())
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise PolicyError(f"access policy not found: {path}") from exc
    if "retailers" in doc:
        raise PolicyError(
            f"invalid access policy {path}: `retailers` does not belong here -- a retailer's secure_group_key and "
            "antitrust settings live in its own YAML (defs/retailers/<name>/defs.yaml); keep only `groups` and `users`"
        )
    try:
        policy = AccessPolicy.model_validate({**doc, "retailers": {s.data_provider_code: RetailerAccess.from_spec(s) for s in retailers}})
    except ValueError as exc:
        raise PolicyError(f"invalid access policy {path}: {exc}") from exc
    ungranted = policy.ungranted_retailers()
    if ungranted:
        names = ", ".join(f"{r.name} ({code}, key {r.secure_group_key})" for code, r in ungranted.items())
        message = f"no reader group names {names}: only all-retailers groups see it; add its key to a group in {path.name}"
        if message not in _said or _collecting_warnings():
            _said.add(message)
            warnings.warn(message, PolicyWarning, stacklevel=2)
    return policy
