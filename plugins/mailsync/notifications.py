"""Telling people: one message per failed run, per run that succeeded with warnings and per
missed deadline, by email (the SMTP provider's `SmtpNotifier`) and a Slack-compatible webhook,
whichever `include/notifications.yaml` configures and the connections exist for.

A message says what on-call needs and nothing more: DAG, run, task, data interval, the reason in
one sentence, what to do, a link to the run. Never personal data nor a secret: reasons are our
own exception messages (which never quote a record) passed through `redact` anyway, and no
record, connection or config value is ever added to them.

The Home page's "Failed Dags" tile counts only each DAG's latest run, so a failed rerun of an
older day shows nowhere: these messages are how people learn of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from airflow.sdk.bases.notifier import BaseNotifier

from mailsync.pii import redact

log = logging.getLogger(__name__)

# What to do, by the failure's exception class (its message says the particulars).
ACTIONS = {
    "QualityGateFailed": "Open the quality report named in the reason; fix the data at the source, "
    "or raise the threshold in the mapping if the data is right; then clear the failed task.",
    "VendorUnavailable": "The service was down or throttling past the retry budget: clear the failed "
    "task once it answers again. Loads resume where the acknowledgements stopped; nothing is sent twice.",
    "VendorError": "A vendor refused a call: fix what the reason names (often the connection's "
    "credentials or ids), then clear the failed task.",
    "IncompleteExtract": "The CRM listing ended early: clear the task to list again; nothing was "
    "written and the snapshot was kept.",
    "MassRemovalRefused": "Check why so many members would be removed. If it is intended, trigger "
    "the run again with allow_mass_removal (or a higher max_removal_share).",
    "LoyaltyFileRejected": "The loyalty file was required and could not be used: ask the partner for "
    "a corrected file, or run without loyalty_required to keep the last tiers.",
    "StateNotConfigured": "Define the mailsync_state connection (PostgreSQL), then clear the task.",
    "RunLockLost": "Another run of this DAG took the run lock: let it finish, then clear this run.",
    "ErasureOverdue": "A GDPR erasure is overdue: free the DAG named in the reason (its run lock), "
    "then clear the task.",
    "AirflowTaskTimeout": "The task ran past its execution_timeout: look for a slow vendor in its "
    "log, then clear it (reruns are safe).",
}
DEFAULT_ACTION = (
    "Read the failed task's log (link below), fix the cause, then clear the task: "
    "rerunning a run is always safe."
)
TITLES = {
    "failed": "FAILED",
    "warnings": "succeeded with warnings",
    "deadline": "LATE: not finished by its deadline",
}


@dataclass(frozen=True)
class Alert:
    kind: str  # failed | warnings | deadline
    dag_id: str
    run_id: str
    interval: str
    reason: str
    action: str
    link: str
    task: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (name, url) of the run's reports the task links to

    @property
    def subject(self) -> str:
        where = f" at {self.task}" if self.task else ""
        return f"[mailsync] {self.dag_id} {TITLES[self.kind]}{where} ({self.interval})"

    def fields(self) -> list[tuple[str, str]]:
        rows = [("DAG", self.dag_id), ("Run", self.run_id), ("Task", self.task or ""),
                ("Data interval", self.interval), ("Reason", self.reason),
                ("What to do", self.action), ("Run page", self.link), *self.files]  # fmt: skip
        return [(k, v) for k, v in rows if v]

    def text(self) -> str:
        return "\n".join([self.subject, "", *(f"{k}: {v}" for k, v in self.fields())])

    def html(self) -> str:
        from mailsync.templates import render

        return render("alert.html", alert=self)


def send(alert: Alert, context: Any = None) -> list[str]:
    """Every configured channel whose connection exists; returns those reached. A channel that
    fails is logged and the others still tried: an alert must not be lost to one of them."""
    from mailsync.settings import notifications

    config, reached = notifications(), []
    channels = {"email": config.email, "webhook": config.webhook}
    for name, channel in channels.items():
        if channel is None or not _defined(channel.conn_id):
            continue
        try:
            if name == "email":
                from airflow.providers.smtp.notifications.smtp import SmtpNotifier

                SmtpNotifier(
                    to=channel.to,
                    subject=alert.subject,
                    html_content=alert.html(),
                    smtp_conn_id=channel.conn_id,
                ).notify(context or {})  # notify(), not __call__: our text is not a template
            else:
                from mailsync.hooks.airflow_api import WebhookHook

                WebhookHook(channel.conn_id).post_text(alert.text())
        except Exception as exc:  # the other channel must still be tried
            log.error("Notification by %s (%s) failed: %s", name, channel.conn_id, _one_sentence(exc))
        else:
            reached.append(name)
    if reached:
        log.info("Notified (%s): %s", ", ".join(reached), alert.subject)
    else:
        log.error(
            "Nobody was notified of: %s. Define a connection named in include/notifications.yaml.",
            alert.subject,
        )
    return reached


def notify_once(alert: Alert, clear_number: int, context: Any = None) -> list[str]:
    """Send unless this run (in this clear of it) was already told of this kind of event."""
    from mailsync.state import claim_notification

    try:
        first = claim_notification(alert.dag_id, alert.run_id, int(clear_number or 0), alert.kind)
    except Exception as exc:  # the state database may be the failure: tell anyway
        log.warning("Could not record the notification (%s); sending it anyway", _one_sentence(exc))
        first = True
    if not first:
        log.info("Already notified for this run: %s", alert.subject)
        return []
    return send(alert, context)


class FailureNotifier(BaseNotifier):
    """`on_failure_callback` of every task: called after the last retry only (retries call
    on_retry_callback), so one failed run makes one message, however many tasks failed in it.
    The run's note says it failed, where and why."""

    def notify(self, context: Any) -> None:
        ti, dag_run, exc = context["ti"], context["dag_run"], context.get("exception")
        mapped = ti.map_index is not None and ti.map_index >= 0
        task = f"{ti.task_id}[{ti.map_index}]" if mapped else ti.task_id
        alert = Alert(
            kind="failed",
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            interval=_interval(context.get("data_interval_start"), context.get("data_interval_end")),
            task=task,
            reason=_one_sentence(exc) if exc else "the task failed (no exception: killed or timed out)",
            action=_action(exc),
            link=_run_link(ti.dag_id, ti.run_id),
            files=_report_links(context),
        )
        notify_once(alert, getattr(dag_run, "clear_number", 0), context)
        set_run_note(
            ti.dag_id,
            ti.run_id,
            f"### ❌ Failed at `{task}`\n\n{alert.reason}\n\n**What to do:** {alert.action}",
        )


def notify_warnings(context: Any, warnings: list[str]) -> list[str]:
    """A run that succeeded but needs a look (the report task calls it)."""
    dag_run = context["dag_run"]
    alert = Alert(
        kind="warnings",
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        interval=_interval(context.get("data_interval_start"), context.get("data_interval_end")),
        reason=redact(" ".join(warnings)),
        action="Read the run's note and report; nothing to rerun unless a warning says so.",
        link=_run_link(dag_run.dag_id, dag_run.run_id),
    )
    return notify_once(alert, dag_run.clear_number, context)


def deadline_missed(context: dict, **_: Any) -> None:
    """The `DeadlineAlert` callback (`SyncCallback`, run by the executor): the run has not finished
    by its deadline. `context` is what the scheduler sends: the DAG run and the deadline."""
    run, deadline = context.get("dag_run") or {}, context.get("deadline") or {}
    dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
    alert = Alert(
        kind="deadline",
        dag_id=dag_id,
        run_id=run_id,
        interval=_interval(run.get("data_interval_start"), run.get("data_interval_end")),
        reason=f"the run was due to finish by {deadline.get('deadline_time')} and is still "
        f"{run.get('state', 'running')}.",
        action="Open the run: a task may wait (the loyalty file, the run lock of another run) or a "
        "vendor may be slow or throttling. Nothing to undo; tell the people who wait for the data.",
        link=_run_link(dag_id, run_id),
    )
    notify_once(alert, run.get("clear_number") or 0)


def set_run_note(dag_id: str, run_id: str, note: str, conn_id: str = "airflow_api") -> bool:
    """Write the DAG run's note through the REST API; without the connection, say so and go on
    (the same summary is the report task's XCom)."""
    if not _defined(conn_id):
        log.info("Run note not written: no %r connection (see README, Run notes)", conn_id)
        return False
    from mailsync.hooks.airflow_api import AirflowApiHook

    try:
        AirflowApiHook(conn_id).set_run_note(dag_id, run_id, note)
    except Exception as exc:  # a note is no reason to fail a run that did its work
        log.warning("Run note not written: %s", _one_sentence(exc))
        return False
    return True


def _defined(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def _one_sentence(exc: BaseException | None) -> str:
    text = " ".join(str(exc or "").split()) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}"[:600])


def _action(exc: BaseException | None) -> str:
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls.__name__ in ACTIONS:
            return ACTIONS[cls.__name__]
    return DEFAULT_ACTION


def _interval(start: Any, end: Any) -> str:
    def show(value: Any) -> str:
        if isinstance(value, str):  # the deadline callback's context is JSON
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value.isoformat() if value else "?"

    return f"{show(start)} → {show(end)}"


def _report_links(context: Any) -> tuple[tuple[str, str], ...]:
    """The failed task's report links (Quality report, ...), as its page shows them."""
    from pathlib import Path

    from mailsync.links import existing_links
    from mailsync.operators.run import Run

    run = Run.from_context(context)
    found = existing_links(context["task"], run.dag_id, run.run_id, Path(run.area.path.path))
    return tuple((link.name, url) for link, url in found)


def _run_link(dag_id: str, run_id: str) -> str:
    from mailsync.links import ui_url

    return f"{ui_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def deadline_alert(dag_id: str):
    """The DAG's `DeadlineAlert` when include/notifications.yaml gives it a deadline (else None):
    a run not finished that long after it was queued notifies, through `deadline_missed`."""
    from airflow.sdk import DeadlineAlert, DeadlineReference, SyncCallback

    from mailsync.settings import notifications

    after = notifications().deadlines.get(dag_id)
    if not after:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=after, callback=SyncCallback(deadline_missed)
    )
