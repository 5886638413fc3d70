"""Fixtures of the fault-and-abuse suite: an isolated world per case, the results file, runs.

Every case appends its result row to `<session>/reliability.jsonl`; at the end of the session the
rows become `<session>/RELIABILITY.md`, and, with MAILSYNC_RELIABILITY_MD=path set (the soak and
`python -m tests.reliability.report` do it), that file too.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.integration.dags import dagrun
from tests.reliability.checker import Recorder

RESULTS = "reliability.jsonl"


@pytest.fixture(scope="session")
def recorder(session_home: Path) -> Recorder:
    _RESULTS.append(session_home / RESULTS)
    return Recorder(session_home / RESULTS)


# where this session's rows went (importing tests.conftest here would make a second session home:
# pytest imports the root conftest as the module `conftest`)
_RESULTS: list[Path] = []


def pytest_sessionfinish(session) -> None:
    from tests.reliability import report

    if not _RESULTS or not _RESULTS[-1].exists():
        return
    results = _RESULTS[-1]
    report.write(results, results.with_name("RELIABILITY.md"))
    if target := os.environ.get("MAILSYNC_RELIABILITY_MD"):
        report.write(results, Path(target))


@pytest.fixture
def world(vendors, airflow_db, tmp_path):
    """A freshly generated sandbox; staging and sync state in the test's own folder."""
    dagrun.isolate(tmp_path)
    return vendors


class Night:
    """One DAG run through dag.test(), with its report (if any) and the errors it logged."""

    def __init__(self, dag_id: str, logical_date: str, conf: dict) -> None:
        self.dag_id, self.logical_date, self.conf = dag_id, logical_date, conf
        self.dag_run = None
        self.errors: list[str] = []
        self.failed_tasks: list[str] = []
        self.report: dict | None = None

    @property
    def state(self) -> str:
        return str(self.dag_run.state) if self.dag_run is not None else "not run"


def _task_failures(output: str) -> list[str]:
    """The exception lines of failed task tries in dag.test()'s output (what the log says)."""
    lines = output.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "Task failed with exception" in line:
            tail = next(
                (
                    t
                    for t in lines[i + 1 : i + 80]
                    if t
                    and not t.startswith((" ", "Traceback", "\t"))
                    and (
                        "Error" in t.split(":")[0] or "Exception" in t.split(":")[0] or "." in t.split(":")[0]
                    )
                ),
                "",
            )
            found.append(tail)
    return found


def run_dag(dag_id: str, logical_date: str, capfd=None, **conf) -> Night:
    """Run a DAG once; with `capfd`, collect the failure messages its task logs show."""
    night = Night(dag_id, logical_date, conf)
    if capfd is not None:
        sys.stdout.write(capfd.readouterr().out)
    night.dag_run = dagrun.run(dag_id, logical_date, **conf)
    if capfd is not None:
        output = capfd.readouterr().out
        sys.stdout.write(output)  # still shown by pytest when a test fails
        night.errors = _task_failures(output)
    night.failed_tasks = sorted(
        ti.task_id for ti in night.dag_run.get_task_instances() if ti.state in ("failed", "upstream_failed")
    )
    try:
        night.report = dagrun.report(night.dag_run)
    except Exception:  # no report.json: the run stopped before its report task
        night.report = None
    return night


@pytest.fixture
def nights(capfd):
    """`nights(dag_id, logical_date, **conf)` -> Night, with the task failures it logged."""
    return lambda dag_id, logical_date, **conf: run_dag(dag_id, logical_date, capfd, **conf)


@pytest.fixture
def clock():
    return time.monotonic()
