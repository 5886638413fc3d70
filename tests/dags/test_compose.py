"""docker-compose.yaml is checked statically (no Docker engine here): it parses, and it runs
the same Airflow, executor and connections as the rest of the project."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]


def test_compose_file_describes_the_celery_topology():
    compose = yaml.safe_load((PROJECT / "docker-compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    for name in (
        "postgres",
        "redis",
        "sandbox",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    ):
        assert name in services, name
    worker = services["airflow-worker"]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["environment"]["MAILSYNC_STAGING_URL"].startswith("file:///")
    assert "staging:/opt/mailsync-staging" in worker["volumes"]
    text = (PROJECT / "docker-compose.yaml").read_text(encoding="utf-8")
    assert not re.search(r"(?i)password:\s*[^$\s{]", text), "a password is written in clear"


def test_image_and_connections_match_the_project():
    pinned = re.search(r"^apache-airflow==(\S+)$", (PROJECT / "requirements.txt").read_text(), re.M).group(1)
    assert f"apache/airflow:{pinned}-python3.11" in (PROJECT / "Dockerfile").read_text()
    example = (PROJECT / ".env.example").read_text()
    for conn_id in ("ESP_DEFAULT", "CRM_DEFAULT", "SHOP_DEFAULT", "LOYALTY_SFTP", "MAILSYNC_STATE"):
        assert f"AIRFLOW_CONN_{conn_id}=" in example
