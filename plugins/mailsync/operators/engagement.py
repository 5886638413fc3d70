"""Operators of the daily ESP -> CRM engagement write-back (DAG esp_to_crm_engagement); the logic
is mailsync.engagement's. The quality gate and the CRM write-back are the shared steps
(mailsync.operators.steps.QualityGateOperator, mailsync.operators.crm.WriteBackCrmContactsOperator).

Idempotent by construction: each interval's activity is aggregated per contact into the daily
store (one file per interval, replaced on rerun); a touched contact's CRM values are derived
from all stored days and written as absolute values. Running a day twice, or backfilling days
in any order, gives the same CRM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from mailsync.operators.crm import PENDING

ACTIVITY = "activity"  # the mapping's source of the ESP's events (extract/ and valid/ folders)


class ExtractEspActivityOperator(BaseOperator):
    """Stage the interval's opens, clicks, bounces and unsubscribes of every campaign sent in the
    last `campaign_lookback_days` (a param of the run, 30 without it) from the ESP connection
    `esp_conn_id`, as `extract/<source>/` in the run's staging folder."""

    template_fields: Sequence[str] = ("esp_conn_id", "source")
    ui_color = "#e8f0fb"

    def __init__(self, *, esp_conn_id: str = "esp_default", source: str = ACTIVITY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.esp_conn_id = esp_conn_id
        self.source = source

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.engagement import activity
        from mailsync.hooks.esp import EspHook
        from mailsync.operators.run import Run
        from mailsync.operators.steps import EXTRACT

        run = Run.from_context(context)
        lookback = int(run.params.get("campaign_lookback_days", 30))
        out = run.area / EXTRACT / self.source
        return activity.extract(run, EspHook(self.esp_conn_id), out, lookback_days=lookback)


class EngagementTotalsOperator(BaseOperator):
    """Replace this interval in the daily store (and its clicks); derive each touched contact's
    values from all stored days and map them to CRM records (`desired` in the run's staging
    folder), for the write-back. Reads the valid rows of `source` (the quality gate's output).
    Touched are also the contacts in `pending`, whose last write-back the CRM refused."""

    template_fields: Sequence[str] = ("mapping", "source", "desired", "pending")
    ui_color = "#eef7ee"

    def __init__(
        self,
        *,
        mapping: str,
        source: str = ACTIVITY,
        desired: str = "desired/contacts.parquet",
        pending: str = PENDING,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping
        self.source = source
        self.desired = desired
        self.pending = pending

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.engagement import clicks, totals
        from mailsync.mapping.spec import load_mapping
        from mailsync.operators.crm import pending_emails
        from mailsync.operators.run import Run
        from mailsync.operators.staged import concat
        from mailsync.operators.steps import VALID

        run, m = Run.from_context(context), load_mapping(self.mapping)
        events = concat((run.area / VALID / self.source).iter_parquet())
        clicks.store_clicks(run.current, events, totals.day_file(run))
        folder, _, name = self.desired.rpartition("/")
        return totals.update(
            run,
            m,
            events,
            pending=pending_emails(run.current, self.pending),
            desired=run.area / folder if folder else run.area,
            name=name,
        )
