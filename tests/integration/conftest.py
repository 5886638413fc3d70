"""Integration tests talk to the sandbox through real Airflow connections (AIRFLOW_CONN_*)."""

from __future__ import annotations

import json
import os

import pytest


def set_connection(conn_id: str, definition: dict) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(definition)


@pytest.fixture(scope="session")
def connections(sandbox) -> dict[str, dict]:
    """The four vendor connections of the sandbox, exported as Airflow connections."""
    defs = {conn_id: json.loads(value) for conn_id, value in sandbox.airflow_connections().items()}
    for conn_id, definition in defs.items():
        if conn_id != "loyalty_sftp":  # a dead sandbox fails a test in seconds, not after 5 minutes
            definition.setdefault("extra", {}).setdefault("retry_budget", 20)
        set_connection(conn_id, definition)
    return defs


@pytest.fixture
def vendors(fresh_sandbox, connections):
    """A freshly generated sandbox with the default connections set."""
    return fresh_sandbox


def variant(connections: dict, conn_id: str, new_id: str, **changes) -> str:
    """Define connection `new_id` as `conn_id` with changed fields / extra options."""
    definition = json.loads(json.dumps(connections[conn_id]))
    extra = changes.pop("extra", {})
    definition.update(changes)
    definition.setdefault("extra", {}).update(extra)
    set_connection(new_id, definition)
    return new_id
