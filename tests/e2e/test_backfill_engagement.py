"""A real, scheduler-managed Airflow backfill of esp_to_crm_engagement, as on-call would run it."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from devtools.local_airflow import LocalAirflow
from tests.integration.dags import dagrun
from tests.integration.dags.expected_engagement import crm_state, expected_crm

DAG = "esp_to_crm_engagement"
pytestmark = pytest.mark.slow


@pytest.fixture
def airflow(vendors, connections, tmp_path):
    dagrun.isolate(tmp_path)
    local = LocalAirflow(tmp_path / "airflow", env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    local.start()
    yield local
    local.stop()


def test_cli_backfill_of_three_days_writes_what_the_esp_says(airflow, vendors):
    before = crm_state(vendors)
    airflow.wait_for_dag(DAG)
    airflow.unpause(DAG)
    created = airflow.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG,
        "--from-date",
        "2026-11-14",
        "--to-date",
        "2026-11-16",
        "--reprocess-behavior",
        "completed",
        "--max-active-runs",
        "1",
    )
    assert created.returncode == 0, created.stderr[-2000:]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = airflow.api("GET", f"dags/{DAG}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(3)
    assert sorted(r["state"] for r in runs) == ["success"] * 3, runs
    starts = sorted(datetime.fromisoformat(r["data_interval_start"]) for r in runs)
    ends = sorted(datetime.fromisoformat(r["data_interval_end"]) for r in runs)
    assert [s.day for s in starts] == [14, 15, 16]  # scheduled semantics: logical date = interval start
    assert crm_state(vendors) == expected_crm(vendors, starts[0], ends[-1], before)
    report = airflow.xcom(DAG, runs[0]["dag_run_id"], "report")
    assert report["activity_rows"] > 0 and report["quarantined"] == 0
