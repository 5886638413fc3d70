"""What an operator reads of its Airflow context, for calling `execute(context)` directly (the
providers' style of operator test): the DAG id, run id, data interval, params, and a task
instance whose context the operator's report links read (as Airflow's task runner asks them
for their URL when the task ends)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace


class TaskInstance:
    """The part of a task instance an operator and its links use outside a run."""

    def __init__(self, context: dict) -> None:
        self.context = context

    def get_template_context(self) -> dict:
        return self.context


def operator_context(dag_id: str, run_id: str, start: datetime, end: datetime, **params) -> dict:
    """A context as mailsync.operators.run.Run.from_context reads it, with its task instance."""
    from airflow.sdk import DAG

    context = {
        "dag": DAG(dag_id, schedule=None),
        "run_id": run_id,
        "data_interval_start": start,
        "data_interval_end": end,
        "params": params,
        "dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, clear_number=0),
    }
    context["ti"] = TaskInstance(context)
    return context


def run_task(operator, context: dict):
    """`operator.execute(context)` as Airflow's task runner calls it: with the context current,
    for the steps that read it (the report's notification of warnings)."""
    from airflow.sdk.execution_time.context import set_current_context

    with set_current_context(context):
        return operator.execute(context)


def links_shown(operator, context: dict) -> dict[str, str]:
    """The operator's links as the task page would show them after this run: name -> URL, for
    the links whose file the run wrote (the others are empty: no button)."""
    ti = context["ti"]
    urls = {link.name: link.get_link(operator, ti_key=ti) for link in operator.operator_extra_links}
    return {name: url for name, url in urls.items() if url}


def published(operator, context: dict) -> set[str]:
    """The names of the operator's links the task page shows after this run."""
    return set(links_shown(operator, context))
