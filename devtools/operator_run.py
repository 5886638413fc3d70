"""Calling the project's operators with `execute(context)` outside a scheduler (the providers'
style of operator test, and the benchmarks that time single steps): the context an operator
reads, the task runner's current-context bracket, and a contacts night step by step."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any


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


def contacts_night(context: dict, *, state: str | None = None, load: bool = True, **conn_ids: str) -> dict:
    """Every step of a crm_to_esp_contacts night in the DAG's order, the loyalty file not sensed;
    without `load`, no diff or ESP write (the snapshot is still committed). `conn_ids`:
    crm_conn_id, esp_conn_id, sftp_conn_id (the operators' defaults otherwise). Returns each
    step's result by task id."""
    from mailsync.operators.contacts import (
        CommitSnapshotsOperator,
        ContactsQualityGateOperator,
        DiffContactsOperator,
        ExtractCrmContactsOperator,
        ExtractLoyaltyFileOperator,
        GuardRemovalsOperator,
        LoadContactsOperator,
        PlanPartitionsOperator,
        TransformContactsOperator,
    )

    def only(*names: str) -> dict[str, Any]:
        return {n: conn_ids[n] for n in names if n in conn_ids}

    states = {"state": state} if state else {}
    done: dict[str, Any] = {}
    done["extract_contacts"] = ExtractCrmContactsOperator(
        task_id="extract_contacts", **only("crm_conn_id")
    ).execute(context)
    done["extract_loyalty"] = ExtractLoyaltyFileOperator(
        task_id="extract_loyalty", sensed={"found": False}, **only("sftp_conn_id")
    ).execute(context)
    done["validate"] = ContactsQualityGateOperator(task_id="validate").execute(context)
    parts = PlanPartitionsOperator(task_id="plan", extracted=done["extract_contacts"]).execute(context)
    done["transform"] = [
        TransformContactsOperator(task_id="transform", part=p).execute(context) for p in parts
    ]
    if load:
        done["diff"] = [
            DiffContactsOperator(task_id="diff", transformed=t, **states).execute(context)
            for t in done["transform"]
        ]
        guarded = GuardRemovalsOperator(task_id="check_removals", diffs=done["diff"]).execute(context)
        done["load"] = [
            LoadContactsOperator(task_id="load", diffed=d, **states, **only("esp_conn_id")).execute(context)
            for d in guarded
        ]
    done["commit"] = CommitSnapshotsOperator(task_id="commit", extracted=done["extract_contacts"]).execute(
        context
    )
    return done
