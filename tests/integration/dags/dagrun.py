"""Running whole DAGs in the test process with dag.test(), each test with its own state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum

PROJECT = Path(__file__).resolve().parents[3]


def dag(dag_id: str):
    """A freshly parsed DAG: dag.test() runs tasks in this process and run conf sticks to the
    task objects' params, so every run gets its own parse (about 0.1 s)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def run(dag_id: str, logical_date: str, **conf):
    """One DAG run for the interval ending at `logical_date`; returns the DagRun."""
    return dag(dag_id).test(logical_date=pendulum.parse(logical_date), run_conf=conf)


def isolate(tmp_path: Path) -> None:
    """Point staging and the sync-state database at the test's own folder."""
    os.environ["MAILSYNC_STAGING_URL"] = (tmp_path / "staging").as_uri()
    os.environ["AIRFLOW_CONN_MAILSYNC_STATE"] = json.dumps(
        {"conn_type": "sqlite", "host": str(tmp_path / "state.db")}
    )


def report(dag_run, task_id: str = "report") -> dict:
    """The return value of a task of a finished run (read from the run's staging report file)."""
    from mailsync.operators.run import Run
    from mailsync.staging import run_area

    run = Run(dag_run.dag_id, dag_run.run_id, dag_run.data_interval_start, dag_run.data_interval_end)
    return json.loads(run_area(run.dag_id, run.start, run.end).read_text("report.json"))
