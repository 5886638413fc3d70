"""Test session set-up shared by every test.

Airflow reads its configuration at import time, so the project-local settings are put in the
environment here, before any test module imports airflow. Each session gets its own
AIRFLOW_HOME (SQLite metadata DB, logs, staging) in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devtools.airflow_env import airflow_env, notifications_without_deadlines

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mailsync-test-"))
os.environ.update(airflow_env(_SESSION_HOME / "airflow"))
os.environ["MAILSYNC_STAGING_URL"] = (_SESSION_HOME / "staging").as_uri()
os.environ["MAILSYNC_TASK_RETRY_DELAY_S"] = "1"  # a failing dag.test() run retries in seconds, not minutes
os.environ.update(notifications_without_deadlines(_SESSION_HOME))  # dag.test() and deadlines: see there


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "soak: long reliability or fault case, run by `make soak` only")


def pytest_collection_modifyitems(config, items) -> None:
    if os.environ.get("MAILSYNC_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak case: `make soak` runs it (MAILSYNC_SOAK=1)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def session_home() -> Path:
    """The session's scratch folder: AIRFLOW_HOME, staging and sandbox data live below it."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated SQLite metadata DB, needed by dag.test() (about 4 s, once per session)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )


# --- sandbox: the vendors' stand-ins (see sandbox/README.md) ----------------------------------------


@pytest.fixture(scope="session")
def sandbox(session_home: Path):
    """ESP, CRM, SHOP and SFTP stand-ins on free ports (seed 42, 1000 contacts, 7 days).

    Started once per session; it also stops by itself if the test process dies (--parent-pid).
    """
    from sandbox import Sandbox

    sb = Sandbox.start(session_home / "sandbox", seed=42, contacts=1000, days=7, parent_pid=os.getpid())
    yield sb
    sb.stop()


@pytest.fixture
def fresh_sandbox(sandbox):
    """The session sandbox regenerated in place: seed-42 data, no faults, empty request log.

    Faults and a frozen clock are cleared again afterwards, so later tests see a normal sandbox.
    """
    sandbox.reset(seed=42, contacts=1000, days=7)
    yield sandbox
    sandbox.clear_faults()
    sandbox.set_clock(None)


# --- the sandbox as Airflow connections --------------------------------------------------------------


@pytest.fixture(scope="session")
def connections(sandbox) -> dict[str, dict]:
    """The sandbox's connections (four vendors and the mail sink), exported as Airflow connections."""
    from tests.connections import set_connection

    defs = {conn_id: json.loads(value) for conn_id, value in sandbox.airflow_connections().items()}
    for conn_id, definition in defs.items():
        if definition["conn_type"] == "http":  # a dead sandbox fails a test in seconds, not after 5 minutes
            definition.setdefault("extra", {}).setdefault("retry_budget", 20)
        if conn_id == "esp_default":  # the sandbox finishes a batch at its 2nd status read: poll fast
            definition["extra"].setdefault("batch_poll_s", 0.05)
        set_connection(conn_id, definition)
    return defs


@pytest.fixture
def vendors(fresh_sandbox, connections):
    """A freshly generated sandbox with the default connections set."""
    return fresh_sandbox
