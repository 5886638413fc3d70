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

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from mailsync.mapping.spec import load_mapping
from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock
from mailsync.operators.run import Run, logical_date_help
from mailsync.settings import staging_url, task_defaults

staging_url()  # a staging URL no worker could use is this file's import error, shown in the UI
MAPPING = load_mapping("esp_to_crm_engagement")
CRM_ENGAGEMENT = Asset(name="crm_contact_engagement", uri="mailsync://crm/contacts/engagement")


@dag(
    dag_id="esp_to_crm_engagement",
    description="Daily ESP → CRM write-back of opens, clicks, bounces and unsubscribes (backfill-safe)",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,  # every interval runs: days missed while the scheduler was down are not lost
    max_active_runs=1,  # scheduled runs; backfills ignore it: the run lock serialises every run
    doc_md=__doc__,
    deadline=deadline_alert("esp_to_crm_engagement"),  # include/notifications.yaml
    tags=["mailsync", "esp", "crm", "daily", "backfill"],
    default_args={
        "owner": "data-engineering",
        **task_defaults(),
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "campaign_lookback_days": Param(
            30,
            type="integer",
            minimum=1,
            maximum=365,
            description="Read activity of campaigns sent this many days back.",
            description_md=logical_date_help("00:00")
            + "\n\n**campaign_lookback_days:** read activity of campaigns sent this many days back.",
        ),
        "dry_run": Param(False, type="boolean", description="Compute and report; write nothing to the CRM."),
    },
)
def esp_to_crm_engagement():
    @task(pre_execute=hold_run_lock)
    def extract() -> dict:
        """Stage the interval's campaign activity (opens, clicks, bounces, unsubscribes) from the ESP.

        **Inputs:** the `esp_default` connection (Mailchimp), the data interval,
        `campaign_lookback_days` (campaigns sent that far back are read).

        **When it fails:** nothing is written yet. 401/403: fix the connection's API key; "rerun
        the task later": the ESP was down past the retry budget, clear the task once it answers.
        """
        from mailsync.operators import engagement

        return engagement.extract(Run.of_current_task())

    @task(pre_execute=hold_run_lock)
    def validate(extracted: dict) -> dict:
        """Great Expectations quality gate on the activity rows; bad rows quarantined with reasons.

        **Inputs:** the staged activity; the checks of `include/mappings/esp_to_crm_engagement.yaml`.

        **When it fails:** past the bad-row threshold: open the quality report named in the error,
        fix at the source or raise the threshold in the mapping, clear the task.
        """
        from mailsync.operators import engagement

        return engagement.validate(Run.of_current_task())

    @task(pre_execute=hold_run_lock)
    def transform(validated: dict) -> dict:
        """Replace this interval in the daily store; derive touched contacts' values from all days.

        **Inputs:** the valid activity rows, the daily store of every earlier day (so days may run in
        any order, or twice, with the same result).

        **When it fails:** a mapping error names file, line and key; fix it, clear the task.
        """
        from mailsync.operators import engagement

        return engagement.transform(Run.of_current_task())

    @task(retries=5, pre_execute=hold_run_lock)
    def load(transformed: dict) -> dict:
        """Batch-update the contacts whose values changed (100 per call); unknown contacts reported.

        **Inputs:** the derived values, the `crm_default` connection (HubSpot). Every CRM record
        sharing the email is written; a bounce or unsubscribe is never undone.

        **When it fails:** a CRM outage past the retries: clear it once HubSpot answers; values are
        absolute, so writing them again is harmless. Refused write-backs are retried next run.
        """
        from mailsync.operators import engagement

        return engagement.load(Run.of_current_task())

    @task(outlets=[CRM_ENGAGEMENT], pre_execute=hold_run_lock, multiple_outputs=False)
    def report(extracted: dict, validated: dict, transformed: dict, loaded: dict) -> dict:
        """The day's counts: events, contacts written, unknown contacts, API calls, duration.

        The one XCom of this task, the run's note (on the run's page) and `report.json`. Refused
        write-backs notify (include/notifications.yaml).

        **When it fails:** the write-back is done; clear it to get the summary.
        """
        from mailsync.operators.report import engagement_report

        return engagement_report(Run.of_current_task(), extracted, validated, transformed, loaded)

    lock = RunLockSensor(task_id="acquire_run_lock")
    extracted = extract()
    validated = validate(extracted)
    transformed = transform(validated)
    lock >> extracted
    done = report(extracted, validated, transformed, load(transformed))
    done >> ReleaseRunLockOperator(task_id="release_run_lock").as_teardown(setups=lock)


esp_to_crm_engagement()
