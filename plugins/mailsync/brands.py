"""Brands: one set of DAGs per brand of a multi-brand company, configured in include/brands/.

A hotel chain whose hotels each see only their own guests, a retail group with several shops:
each brand is one YAML file, `include/brands/<brand>.yaml`, naming its own connections (its own
ESP connection, hence its own audience: the list id lives in that connection's extra), its
schedule, owner, team, and any mapping override. A DAG file builds one DAG per brand,
`<dag_id>__<brand>`, using only that brand's connection ids; its sync state is keyed by the
brand (in the shared `mailsync_state` database) and its staging by the DAG id. Adding a brand is
adding a file: no code change.

The `default` brand is today's single-brand behaviour: DAG id without a suffix, today's
connection ids and state names. It exists when the folder holds no brand file, or when it holds
`default.yaml` (beside other brands; its keys override the defaults).

Read when a DAG file is parsed (files only, no network); a bad file raises `BrandError` naming
the file and the key, which is the DAG file's import error in the UI.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT = "default"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # goes into DAG ids, role names and state keys

# The connection ids of the single-brand deployment (the default brand's, and the README's).
DEFAULT_CONNECTIONS = {
    "esp": "esp_default",
    "crm": "crm_default",
    "shop": "shop_default",
    "loyalty_sftp": "loyalty_sftp",
    "legacy_members_db": "legacy_members_db",
}


class BrandError(ValueError):
    """A brand file that cannot be used: the message names the file and the key."""


class Connections(BaseModel):
    """Airflow connection ids of one brand. A brand other than `default` names each connection
    an integration of it uses; none falls back to another brand's (that would mix audiences)."""

    model_config = ConfigDict(extra="forbid")
    esp: str | None = None  # its ESP connection: host, API key, extra list_id (the brand's audience)
    crm: str | None = None
    shop: str | None = None
    loyalty_sftp: str | None = None
    legacy_members_db: str | None = None


class Integration(BaseModel):
    """Per-integration settings of a brand; every key optional (the DAG file's default)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    schedule: str | None = None  # a cron expression
    timezone: str = "UTC"
    mapping: str | None = None  # another file of include/mappings/ (without .yaml)
    sql: str | None = None  # another query under include/ (StageSql integrations)


class Brand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    name: str = Field(default=DEFAULT, exclude=True)  # the file name, never a key of the file
    title: str = ""
    owner: str = "data-engineering"
    team: str = ""
    tags: list[str] = []
    # the FAB role whose users see and trigger this brand's DAGs (default brand_<name>);
    # the default brand has none unless it names one: only admins see its DAGs then, as today
    role: str | None = None
    # the sync state's key for this brand (default: the brand's name): keep it when renaming a file
    state_key: str | None = None
    connections: Connections = Connections()
    integrations: dict[str, Integration] = {}
    path: str = Field(default="", exclude=True)

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT

    def dag_id(self, base: str) -> str:
        """`base` for the default brand, `base__<brand>` for the others."""
        return base if self.is_default else f"{base}__{self.name}"

    def state(self, integration: str) -> str:
        """The SyncState name of an integration for this brand (the audience state too)."""
        return integration if self.is_default else f"{integration}__{self.state_key or self.name}"

    def conn_id(self, key: str, integration: str) -> str:
        conn = getattr(self.connections, key)
        if conn:
            return conn
        if self.is_default:
            return DEFAULT_CONNECTIONS[key]
        raise BrandError(f"{self.path}: connections.{key} is required by {integration} (an Airflow conn id)")

    def integration(self, integration: str) -> Integration:
        return self.integrations.get(integration) or Integration()

    @property
    def access_role(self) -> str | None:
        return self.role or (None if self.is_default else f"brand_{self.name}")

    def access_control(self) -> dict[str, dict[str, set[str]]] | None:
        """FAB auth manager: the brand's role reads and edits (pause, clear) its DAGs and starts
        runs. Ignored by the simple auth manager."""
        role = self.access_role
        if not role:
            return None
        return {role: {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}}

    def dag_tags(self, base: list[str]) -> list[str]:
        extra = [] if self.is_default else [f"brand:{self.name}"]
        extra += [f"team:{self.team}"] if self.team and not self.is_default else []
        return list(dict.fromkeys([*base, *extra, *self.tags]))


def brands_dir(include_dir: Path | None = None) -> Path:
    if include_dir is None:
        from mailsync.settings import INCLUDE_DIR

        include_dir = INCLUDE_DIR
    return include_dir / "brands"


def _where(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(file)"


def load_brand(path: Path) -> Brand:
    """One brand file, checked: unknown or mistyped keys are errors naming file and key."""
    import yaml

    name = path.stem
    if not NAME.match(name):
        raise BrandError(f"{path}: the file name {name!r} must be a brand name: [a-z][a-z0-9_]*, ≤ 40 chars")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BrandError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise BrandError(f"{path}: a brand file is a mapping of keys, got {type(raw).__name__}")
    for key in ("name", "path"):
        if key in raw:
            raise BrandError(f"{path}: {key}: not a key of a brand file (the file name is the brand)")
    try:
        brand = Brand.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors())
        raise BrandError(f"{path}: {problems}") from exc
    if brand.state_key is not None and not NAME.match(brand.state_key):
        raise BrandError(f"{path}: state_key: must match [a-z][a-z0-9_]*")
    return brand.model_copy(update={"name": name, "path": str(path)})


def load_brands(include_dir: Path | None = None) -> list[Brand]:
    """Every brand, by name; the default brand alone when the folder holds no brand file."""
    folder = brands_dir(include_dir)
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        return [Brand(path=str(folder / f"{DEFAULT}.yaml"))]
    brands = [load_brand(p) for p in files]
    roles: dict[str, str] = {}
    keys: dict[str, str] = {}
    for b in brands:
        if b.access_role and roles.setdefault(b.access_role, b.name) != b.name:
            raise BrandError(f"{b.path}: role: {b.access_role!r} is also brand {roles[b.access_role]!r}'s")
        key = b.state("")
        if keys.setdefault(key, b.name) != b.name:
            raise BrandError(f"{b.path}: state_key: {b.state_key!r} is also brand {keys[key]!r}'s state")
    return brands


def brands_for(integration: str, include_dir: Path | None = None) -> list[Brand]:
    """The brands that run `integration` (all, unless a brand sets `enabled: false` for it)."""
    return [b for b in load_brands(include_dir) if b.integration(integration).enabled]
