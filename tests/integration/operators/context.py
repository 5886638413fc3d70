"""What an operator reads of its Airflow context, for calling `execute(context)` directly (the
providers' style of operator test): the DAG id, run id, data interval, params, and a task
instance that records the XComs the operator pushes (its report links)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace


class TaskInstance:
    """The part of a task instance an operator uses outside a run: the XComs it pushes."""

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def operator_context(dag_id: str, run_id: str, start: datetime, end: datetime, **params) -> dict:
    """A context as mailsync.operators.run.Run.from_context reads it, with a fresh task instance."""
    return {
        "ti": TaskInstance(),
        "dag": SimpleNamespace(dag_id=dag_id),
        "run_id": run_id,
        "data_interval_start": start,
        "data_interval_end": end,
        "params": params,
    }


def published(operator, context: dict) -> set[str]:
    """The names of the operator's links whose URL it has published in this context."""
    return {link.name for link in operator.operator_extra_links if link.xcom_key in context["ti"].pushed}
