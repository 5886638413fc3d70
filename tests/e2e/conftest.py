"""One nightly run on a real scheduler, shared by the e2e modules that only read it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from devtools.local_airflow import LocalAirflow

PROJECT = Path(__file__).resolve().parents[2]
NIGHT = "2026-11-20T02:00:00+00:00"  # the demo's night: the sandbox's data ends on 2026-11-20


def _iso(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()


@pytest.fixture(scope="session")
def nightly(sandbox, connections, airflow_db, tmp_path_factory):
    """`crm_to_esp_contacts` triggered as the demo does, with a 3 s deadline, run to success.

    Yields the LocalAirflow (still up: the UI journey browses it), the run id, its interval as
    the messages show it, and the sandbox (its mail sink holds what the run sent).
    """
    home = tmp_path_factory.mktemp("nightly")
    sandbox.reset(seed=42, contacts=1000, days=7)
    project = yaml.safe_load((PROJECT / "include" / "notifications.yaml").read_text())
    (home / "notifications.yaml").write_text(
        yaml.safe_dump({**project, "deadlines": {"crm_to_esp_contacts": "00:00:03"}})
    )
    env = {f"AIRFLOW_CONN_{k.upper()}": json.dumps(v) for k, v in connections.items()}
    env |= {
        "MAILSYNC_STAGING_URL": (home / "staging").as_uri(),
        "AIRFLOW_CONN_MAILSYNC_STATE": json.dumps({"conn_type": "sqlite", "host": str(home / "state.db")}),
        "MAILSYNC_NOTIFICATIONS_FILE": str(home / "notifications.yaml"),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    airflow = LocalAirflow(home / "airflow", env=env)
    try:
        airflow.start()
        airflow.wait_for_dag("crm_to_esp_contacts")
        airflow.unpause("crm_to_esp_contacts")
        sandbox.clear_mail()
        run_id = airflow.trigger(
            "crm_to_esp_contacts", logical_date=NIGHT, conf={"full_refresh": True, "loyalty_wait_minutes": 0}
        )
        state = airflow.wait_for_run("crm_to_esp_contacts", run_id, timeout=600)
        assert state == "success", airflow.task_states("crm_to_esp_contacts", run_id)
        run = airflow.api("GET", f"dags/crm_to_esp_contacts/dagRuns/{run_id}")
        interval = f"{_iso(run['data_interval_start'])} → {_iso(run['data_interval_end'])}"
        yield {"airflow": airflow, "run_id": run_id, "interval": interval, "sandbox": sandbox}
    finally:
        airflow.stop()
