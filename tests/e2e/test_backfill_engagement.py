"""The README's backfill runbook command, run as written against a real scheduler on the
embedded default (SQLite metadata DB, LocalExecutor), as on-call would paste it.

`MAILSYNC_BACKFILL_TRIES=10 .venv/bin/python -m pytest tests/e2e/test_backfill_engagement.py`
repeats it, each try with a fresh Airflow home and a freshly generated sandbox (issue 18: 10 of 10
must succeed). Without the SQLite connection factory in devtools/airflow_env.py the command exited 1
with `database is locked` on a `dag_run` insert in most tries.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from devtools.local_airflow import LocalAirflow
from tests.integration.dags import dagrun
from tests.integration.dags.expected_engagement import crm_state, expected_crm

DAG = "esp_to_crm_engagement"
README = Path(__file__).resolve().parents[2] / "README.md"
TRIES = int(os.environ.get("MAILSYNC_BACKFILL_TRIES", "1"))


def readme_backfill_command() -> list[str]:
    """The arguments of the `airflow backfill create ...` in the README's backfill runbook."""
    section = README.read_text().split("**Backfill failed or missing days**", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    args = shlex.split(block.replace("\\\n", " "), comments=True)
    assert args[:3] == ["airflow", "backfill", "create"], block
    return args[1:]


@pytest.fixture
def airflow(vendors, connections, tmp_path):
    dagrun.isolate(tmp_path)
    local = LocalAirflow(tmp_path / "airflow", env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    try:
        local.start()
        yield local
    finally:  # also when start() fails half-way: no components left running
        local.stop()


def test_the_runbook_is_the_week_the_sandbox_has():
    args = readme_backfill_command()
    options = dict(zip(args[2::2], args[3::2], strict=True))
    assert options == {
        "--dag-id": DAG,
        "--from-date": "2026-11-14",
        "--to-date": "2026-11-20",
        "--reprocess-behavior": "failed",
    }  # no --max-active-runs: the backfill runs up to 10 days at once


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(1, TRIES + 1))
def test_readme_backfill_command_runs_the_week(airflow, vendors, attempt):
    before = crm_state(vendors)
    airflow.wait_for_dag(DAG)
    airflow.unpause(DAG)
    created = airflow.airflow(*readme_backfill_command(), check=False)
    assert created.returncode == 0, f"try {attempt}:\n{created.stdout[-2000:]}\n{created.stderr[-6000:]}"
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        runs = airflow.api("GET", f"dags/{DAG}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        if len(runs) == 7 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(3)
    assert sorted(r["state"] for r in runs) == ["success"] * 7, runs
    starts = sorted(datetime.fromisoformat(r["data_interval_start"]) for r in runs)
    ends = sorted(datetime.fromisoformat(r["data_interval_end"]) for r in runs)
    assert [s.day for s in starts] == list(range(14, 21))  # logical date = interval start
    report = airflow.xcom(DAG, runs[0]["dag_run_id"], "report")
    assert report["activity_rows"] > 0 and report["quarantined"] == 0
    # no --max-active-runs: the days ran side by side, and the DAG's run lock kept their writes in order
    assert crm_state(vendors) == expected_crm(vendors, starts[0], ends[-1], before)


def test_a_write_after_begin_nested_waits_for_another_writer(tmp_path):
    """The cause, without timing luck: what models/backfill.py does per day (begin_nested, SELECT,
    INSERT) while another component holds the write lock, with the connect args Airflow reads.
    Before the factory in devtools/airflow_env.py the INSERT failed at once with `database is locked`.
    """
    from airflow.configuration import conf
    from airflow.utils.orm_event_handlers import setup_event_handlers
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    path = tmp_path / "airflow.db"
    connect_args = conf.getimport("database", "sql_alchemy_connect_args")  # devtools.airflow_env's
    engine = create_engine(f"sqlite:///{path}", connect_args=connect_args)
    setup_event_handlers(engine)  # Airflow's own connection set-up: WAL journal, foreign keys
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE dag_run (id INTEGER PRIMARY KEY, run_id TEXT)"))
    scheduler = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    scheduler.execute("BEGIN IMMEDIATE")
    scheduler.execute("INSERT INTO dag_run (run_id) VALUES ('scheduled')")
    threading.Timer(1.0, scheduler.execute, ["COMMIT"]).start()  # the scheduler commits a second later

    started = time.monotonic()
    with Session(engine) as session:
        with session.begin_nested():
            session.execute(text("SELECT count(*) FROM dag_run")).scalar()
            session.execute(text("INSERT INTO dag_run (run_id) VALUES ('backfill')"))
        session.commit()
    assert time.monotonic() - started >= 0.9  # it waited for the scheduler's commit
    rows = scheduler.execute("SELECT run_id FROM dag_run ORDER BY id").fetchall()
    assert rows == [("scheduled",), ("backfill",)]
    engine.dispose()
