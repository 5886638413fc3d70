"""Every DAG file imports cleanly through Airflow's own DagBag and explains itself in the UI."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from mailsync.mapping.check import check_paths

PROJECT = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
EXPECTED_DAGS = {"crm_to_esp_contacts", "esp_to_crm_engagement", "shop_conversions_to_esp"}
HEAVY = ("pandas", "pyarrow", "great_expectations", "numpy")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    errors = "\n".join(f"{file}:\n{error}" for file, error in dagbag.import_errors.items())
    assert not dagbag.import_errors, f"DAG files failed to import:\n{errors}"


def test_the_three_integrations_are_there(dagbag):
    assert set(dagbag.dag_ids) >= EXPECTED_DAGS


def test_every_dag_explains_itself(dagbag):
    for dag_id, dag in dagbag.dags.items():
        where = f"{dag_id} ({dag.fileloc})"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{where}: doc_md missing or too short"
        assert dag.description, f"{where}: description missing"
        assert dag.tags, f"{where}: tags missing"
        assert dag.max_active_runs and dag.max_active_runs >= 1, f"{where}: max_active_runs not set"
        for task in dag.tasks:
            label = f"{where} task {task.task_id}"
            assert task.owner and task.owner != "airflow", f"{label}: owner missing"
            assert task.retries >= 2, f"{label}: retries < 2"
            assert task.retry_delay > timedelta(0), f"{label}: retry_delay not set"
            assert task.doc_md, f"{label}: doc_md missing"
            assert "**When it fails:**" in task.doc_md, f"{label}: doc_md does not say what to do on failure"


def test_on_call_is_told_of_every_task_failure_and_every_summary_is_one_xcom(dagbag):
    """A task without the notifier would fail silently; a `-> dict` report without
    multiple_outputs=False would split the summary into one XCom per key."""
    from mailsync.notifications import FailureNotifier

    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            callbacks = task.on_failure_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, FailureNotifier) for c in callbacks), f"{dag_id}.{task.task_id}"
            if task.task_id == "report":
                assert task.multiple_outputs is False, f"{dag_id}.report: one summary XCom"


def test_every_task_between_the_run_lock_and_its_release_holds_the_lease(dagbag):
    """A task added to a DAG without the lease would let two runs interleave again."""
    from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock

    for dag_id, dag in dagbag.dags.items():
        (setup,) = [t for t in dag.tasks if isinstance(t, RunLockSensor)]
        (teardown,) = [t for t in dag.tasks if isinstance(t, ReleaseRunLockOperator)]
        assert setup.is_setup and teardown.is_teardown and setup.task_id in teardown.upstream_task_ids
        inside = setup.get_flat_relative_ids(upstream=False) & teardown.get_flat_relative_ids(upstream=True)
        assert inside, dag_id
        for task_id in inside - {teardown.task_id}:
            task = dag.get_task(task_id)
            hook = (
                task.partial_kwargs.get("pre_execute")
                if hasattr(task, "partial_kwargs")
                else task._pre_execute_hook
            )
            assert hook is hold_run_lock, f"{dag_id}.{task_id} runs under the lock without holding it"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_has_no_heavy_import_at_top_level(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        heavy = [n for n in names if n.split(".")[0] in HEAVY]
        assert not heavy, f"{path.name}:{node.lineno} imports {heavy} at top level (import inside the task)"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_a_dag_file_pulls_in_no_heavy_module(path):
    """Stronger than the AST check: catches heavy imports reached through mailsync modules."""
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]);"
        f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, cwd=PROJECT
    )
    loaded = [m for m in out.stdout.strip().splitlines()[-1].split(",") if m] if out.stdout.strip() else []
    assert not loaded, f"parsing {path.name} imports {loaded}"


def test_every_mapping_is_valid():
    problems, checked = check_paths([])
    assert checked >= 1
    assert not problems, "\n".join(problems)
