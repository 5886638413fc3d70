"""Airflow connections for tests, given as AIRFLOW_CONN_* environment variables."""

from __future__ import annotations

import json
import os


def set_connection(conn_id: str, definition: dict) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(definition)


def variant(connections: dict, conn_id: str, new_id: str, **changes) -> str:
    """Define connection `new_id` as `conn_id` with changed fields / extra options."""
    definition = json.loads(json.dumps(connections[conn_id]))
    extra = changes.pop("extra", {})
    definition.update(changes)
    definition.setdefault("extra", {}).update(extra)
    set_connection(new_id, definition)
    return new_id
