"""
### ESP → CRM engagement, daily (backfillable)

After each campaign the CRM learns what its contacts did: opens, clicks, bounces and
unsubscribes from the ESP (Mailchimp) reports are written back to the CRM (HubSpot) contacts.

**Flow:** `acquire_run_lock` → `extract` (activity of every campaign sent in the last
`campaign_lookback_days`, with timestamps in the run's data interval [start, end)) →
`validate` (Great Expectations; bad rows quarantined) → `transform` → `load` → `report` →
`release_run_lock`. Days run one at a time between the lock and its release, even in a backfill
of many days at once (a backfill ignores `max_active_runs`): each day's totals are derived from
all stored days, so two days written at once would overwrite each other's totals. Waiting days
poke in reschedule mode.

**What is written, per contact:** `esp_opens_total`, `esp_clicks_total`,
`esp_soft_bounces_total`, `esp_campaigns_engaged`, `esp_last_open_at`, `esp_last_click_at`;
a **hard bounce** sets `email_invalid=true` with `email_invalid_date` / `email_invalid_reason`;
an **unsubscribe** sets `marketing_consent=false` with `marketing_opt_out_date` /
`marketing_opt_out_campaign`. Soft bounces are only counted. Contacts the CRM does not know are
reported (`unknown_contacts`), never created.

**Why reruns and backfills are safe:** each interval's activity is aggregated per contact into
a daily store (one file per interval, *replaced* when the interval is run again). A contact's
values are then derived from **all** stored days — sums of counts, the latest open and click,
the earliest bounce and unsubscribe — and written as absolute values, only when they differ from
what the CRM last acknowledged. So running a day twice changes nothing, a backfill of older days
never overwrites a newer "last open", and nothing here ever opts a contact back in.

**Brands:** one DAG per file of `include/brands/` (`esp_to_crm_engagement__<brand>`), each with
only its brand's ESP and CRM connections, its own sync state, daily store and Asset; without
brand files (or with `default.yaml`) this DAG keeps its plain id.

### Runbook (on-call)
* **Backfill a range** (scheduler running, DAG unpaused):
  ```
  airflow backfill create --dag-id esp_to_crm_engagement \\
      --from-date 2026-11-10 --to-date 2026-11-16 --reprocess-behavior completed
  ```
  (`none` = only days never run, `failed` = failed and missing days, `completed` = every day).
  In the UI: the DAG's *Trigger* menu → *Backfill*, same options.
* **Rerun only failed days:** `--reprocess-behavior failed`, or clear the failed runs in the grid.
* **Check the result:** each `report` task returns the day's counts (events, contacts written,
  unknown contacts, write calls); quarantined activity rows are in `validate`'s quarantine file.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from mailsync.brand_dags import brand_asset, brand_dags, integration_dag, mapping_of, one_run_at_a_time
from mailsync.brands import Brand
from mailsync.operators.crm import WriteBackCrmContactsOperator
from mailsync.operators.engagement import (
    EngagementTotalsOperator,
    ExtractEspActivityOperator,
)
from mailsync.operators.lock import hold_run_lock
from mailsync.operators.steps import QualityGateOperator, ReportOperator

INTEGRATION = "esp_to_crm_engagement"


def build(brand: Brand) -> DAG:
    """The integration for one brand: its ESP and CRM connections, state, schedule and owner."""
    mapping = mapping_of(brand, INTEGRATION)
    esp, crm = brand.conn_id("esp", INTEGRATION), brand.conn_id("crm", INTEGRATION)
    with integration_dag(
        brand,
        INTEGRATION,
        doc_md=__doc__,
        description="Daily ESP → CRM write-back of opens, clicks, bounces and unsubscribes (backfill-safe)",
        schedule="0 0 * * *",
        tags=["esp", "crm", "daily", "backfill"],
        timeout=timedelta(hours=2),
        params={
            "campaign_lookback_days": Param(
                30,
                type="integer",
                minimum=1,
                maximum=365,
                description="Read activity of campaigns sent this many days back.",
            )
        },
        dry_run="Compute and report; write nothing to the CRM.",
    ) as dag:
        extract = ExtractEspActivityOperator(
            task_id="extract",
            esp_conn_id=esp,
            pre_execute=hold_run_lock,
            doc_md="Stage the interval's campaign activity (opens, clicks, bounces, unsubscribes) from "
            f"the ESP.\n\n**Inputs:** the `{esp}` connection (Mailchimp), the data interval, "
            "`campaign_lookback_days` (campaigns sent that far back are read).\n\n**When it fails:** "
            'nothing is written yet. 401/403: fix the connection\'s API key; "rerun the task later": '
            "the ESP was down past the retry budget, clear the task once it answers.",
        )
        validate = QualityGateOperator(
            task_id="validate",
            mapping=mapping,
            source="activity",
            pre_execute=hold_run_lock,
            doc_md="Great Expectations quality gate on the activity rows; bad rows quarantined with "
            f"reasons.\n\n**Inputs:** the staged activity; the checks of `include/mappings/{mapping}.yaml`."
            "\n\n**When it fails:** past the bad-row threshold: open the quality report named in the "
            "error, fix at the source or raise the threshold in the mapping, clear the task.",
        )
        transform = EngagementTotalsOperator(
            task_id="transform",
            mapping=mapping,
            pre_execute=hold_run_lock,
            doc_md="Replace this interval in the daily store; derive touched contacts' values from all "
            "days.\n\n**Inputs:** the valid activity rows, the daily store of every earlier day (so "
            "days may run in any order, or twice, with the same result).\n\n**When it fails:** a "
            "mapping error names file, line and key; fix it, clear the task.",
        )
        load = WriteBackCrmContactsOperator(
            task_id="load",
            mapping=mapping,
            state=brand.state(INTEGRATION),
            crm_conn_id=crm,
            ids_from_dag=brand.dag_id("crm_to_esp_contacts"),  # CRM ids from its snapshot: no read by email
            retries=5,
            pre_execute=hold_run_lock,
            doc_md="Batch-update the contacts whose values changed (100 per call); unknown contacts "
            "reported.\n\n**Inputs:** the derived values, the contacts sync's snapshot and one search for "
            "the contacts modified since it (the CRM ids; an email neither has is reported unknown and "
            "read by email in the next run), "
            f"the `{crm}` connection (HubSpot). Every CRM "
            "record sharing the email is written; a bounce or unsubscribe is never undone.\n\n"
            "**When it fails:** a CRM outage past the retries: clear it once HubSpot answers; values "
            "are absolute, so writing them again is harmless. Refused write-backs are retried next run.",
        )
        report = ReportOperator(
            task_id="report",
            summary="engagement_report",
            results={
                "extract": extract.output,
                "validate": validate.output,
                "transform": transform.output,
                "load": load.output,
            },
            outlets=[brand_asset(brand, "crm_contact_engagement")],
            pre_execute=hold_run_lock,
            doc_md="The day's counts: events, contacts written, unknown contacts, API calls, duration."
            "\n\nThe one XCom of this task, the run's note (on the run's page) and `report.json`. "
            "Refused write-backs notify (include/notifications.yaml).\n\n**When it fails:** the "
            "write-back is done; clear it to get the summary.",
        )
        extract >> validate >> transform >> load >> report
        one_run_at_a_time(extract, report)
    return dag


globals().update(brand_dags(INTEGRATION, build))  # include/brands/*.yaml: a new file is a new DAG
