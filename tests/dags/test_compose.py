"""docker-compose.yaml is checked statically (no Docker engine here): it parses, and it runs
the same Airflow, executor, components and connections as the native Celery topology
(devtools/celery_airflow.py, proven by tests/e2e/test_celery_topology.py)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import yaml
from sqlalchemy.engine import make_url

from devtools.local_airflow import COMPONENTS
from sandbox.config import SERVED_PORTS
from tests.services import require_postgres

PROJECT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT / "docker-compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_compose_file_describes_the_celery_topology(services):
    for name in ("postgres", "redis", "sandbox", *AIRFLOW_SERVICES):
        assert name in services, name
    worker = services["airflow-worker"]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["environment"]["MAILSYNC_STAGING_URL"].startswith("file:///")
    assert "staging:/opt/mailsync-staging" in worker["volumes"]
    text = (PROJECT / "docker-compose.yaml").read_text(encoding="utf-8")
    assert not re.search(r"(?i)password:\s*[^$\s{]", text), "a password is written in clear"


def test_the_components_are_those_the_native_topology_starts(services):
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES if name != "airflow-init"}
    assert sorted(commands.values()) == sorted([*COMPONENTS, "celery worker"])
    assert services["airflow-worker"]["deploy"]["replicas"] >= 2  # as the native topology's two


def test_every_airflow_service_shares_executor_databases_staging_and_state(services):
    for name in AIRFLOW_SERVICES:
        env, volumes = services[name]["environment"], services[name]["volumes"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert env["MAILSYNC_STAGING_URL"] == "file:///opt/mailsync-staging", name
        assert "staging:/opt/mailsync-staging" in volumes and "logs:/opt/airflow/logs" in volumes, name
        state = make_url(env["AIRFLOW_CONN_MAILSYNC_STATE"])
        # PostgreSQL that every worker shares (a SQLite file would be one per container)
        assert (state.drivername, state.host, state.database) == ("postgresql", "postgres", "mailsync_state")
        assert state.password == "${POSTGRES_PASSWORD}", name  # from .env, not written here


def test_init_creates_the_state_database_idempotently_and_fails_on_errors(services):
    init = services["airflow-init"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    assert "|| true" not in script and "||true" not in script.replace(" ", "")
    assert init["entrypoint"] == "/bin/bash" and init["command"][:2] == ["-euo", "pipefail"]
    assert script.index("airflow db migrate") < script.index("CREATE DATABASE")
    assert "FROM pg_database WHERE datname" in script  # only created when missing: a rerun succeeds
    assert "AIRFLOW_CONN_MAILSYNC_STATE" in script  # the database the state connection names
    for name in AIRFLOW_SERVICES[1:]:
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), name
    worker = services["airflow-worker"]
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert "celery@$${HOSTNAME}" in " ".join(worker["healthcheck"]["test"])  # $$: not compose's own $
    assert worker["depends_on"]["sandbox"] == {"condition": "service_healthy"}
    assert worker["depends_on"]["airflow-api-server"] == {"condition": "service_healthy"}


def test_sandbox_is_reachable_from_the_other_containers(services):
    command = services["sandbox"]["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 (inside its container)
    data = command[command.index("--data-dir") + 1]
    assert any(v.endswith(f":{data}") for v in services["sandbox"]["volumes"])
    dockerfile = (PROJECT / "Dockerfile").read_text()
    for mount in (data, "/opt/mailsync-staging"):  # owned by airflow, so the volumes are writable
        assert re.search(rf"mkdir -p [^\n]*{mount}", dockerfile), mount
        assert re.search(rf"chown airflow:root [^\n]*{mount}", dockerfile), mount


def test_image_and_connections_match_the_project():
    pinned = re.search(r"^apache-airflow==(\S+)$", (PROJECT / "requirements.txt").read_text(), re.M).group(1)
    assert f"apache/airflow:{pinned}-python3.11" in (PROJECT / "Dockerfile").read_text()
    example = (PROJECT / ".env.example").read_text()
    vendors = ("ESP_DEFAULT", "CRM_DEFAULT", "SHOP_DEFAULT", "LOYALTY_SFTP")
    for conn_id in (*vendors, "MAILSYNC_SMTP", "AIRFLOW_API"):
        assert f"AIRFLOW_CONN_{conn_id}=" in example
    # the compose file's `environment` wins over .env: a state connection there would be ignored
    assert not re.search(r"^AIRFLOW_CONN_MAILSYNC_STATE=", example, re.M)
    for system, port in SERVED_PORTS.items():
        assert re.search(rf"AIRFLOW_CONN_\w+=.*sandbox[^\n]*{port}", example), system


def test_init_script_runs_twice_and_fails_on_a_real_error(services, tmp_path):
    """The init's own bash + Python, run here against the local PostgreSQL, `airflow` stubbed."""
    require_postgres()
    command = services["airflow-init"]["command"]
    database = f"mailsync_state_init_{secrets.token_hex(4)}"
    stub = tmp_path / "bin" / "airflow"
    stub.parent.mkdir()

    def init(airflow_exit: int = 0, port: int = 5432) -> subprocess.CompletedProcess:
        stub.write_text(f'#!/bin/sh\necho airflow "$@"\nexit {airflow_exit}\n')
        stub.chmod(0o755)
        env = {
            **os.environ,
            "PATH": f"{stub.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "AIRFLOW_CONN_MAILSYNC_STATE": f"postgresql://postgres@127.0.0.1:{port}/{database}",
        }
        return subprocess.run(["/bin/bash", *command], env=env, capture_output=True, text=True, timeout=60)

    try:
        first, second = init(), init()
        assert first.returncode == 0 and f"created the state database {database}" in first.stdout, first
        assert second.returncode == 0 and f"the state database {database} exists" in second.stdout, second
        assert init(airflow_exit=3).returncode == 3  # a failed migration fails the init
        assert init(port=1).returncode != 0  # so does an unreachable database
    finally:
        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.close()
