"""
### Retention and erasure, daily

Personal data stays in mailsync's own staging only as long as `include/retention.yaml` says.
Every run folder holds full extracts (emails, names, birthdays), the quarantine and rejected
files hold raw bad rows by design, and the snapshots and daily stores under `<dag>/current/`
live as long as the integrations do.

**Flow:** `acquire_run_lock` → `delete_old_runs` → `delete_people_files` → `apply_erasures`
→ `release_run_lock`.

* **delete_old_runs**: run folders whose data interval ended `run_days` or more before this
  run's interval end (by the interval in the folder name, never file times; never `current/`).
* **delete_people_files**: `quarantine.csv`, `rejected*.csv`, `unparsed.parquet`,
  `unknown_customer_orders.csv` and the loyalty file's unparsed lines of runs older than
  `quarantine_days`.
* **apply_erasures**: everyone in the erasure ledger (state table `mailsync_erasure`, hashes
  only) leaves the contacts and loyalty snapshots, the engagement daily store and clicks, the
  shop's orders snapshot and their lines, every kept run folder (Parquet and CSV rewritten
  without their rows), and the sync state of every integration. The contacts sync's `commit`
  records contacts a full refresh no longer finds in the CRM (HubSpot's GDPR delete); requests
  are recorded with `python -m mailsync.operators.retention erase EMAIL`. It runs over every
  entry each day, so a partner file or a backfill that brings an erased person back is cleaned
  again. Logs and return values carry counts and hashed ids only.

Each DAG's files are changed only while this run holds that DAG's run lease: a DAG that is
running is left for the next day. **When it fails:** `apply_erasures` fails when an erasure is
pending past `erasure_days` — its message says why (the person is still in the CRM: erase them
there and run a full refresh; or a DAG was busy every day). Rerunning is always safe.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock
from mailsync.operators.run import Run
from mailsync.settings import staging_url, task_defaults

staging_url()  # a staging URL no worker could use is this file's import error, shown in the UI


@dag(
    dag_id="mailsync_retention",
    description="Delete expired run folders and quarantine files; apply GDPR erasures to staging and state",
    schedule=CronDataIntervalTimetable("0 5 * * *", timezone="UTC"),  # after the nightly syncs
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,  # each run looks at everything kept: one run catches up skipped days
    max_active_runs=1,
    doc_md=__doc__,
    deadline=deadline_alert("mailsync_retention"),  # include/notifications.yaml
    tags=["mailsync", "retention", "gdpr", "daily"],
    default_args={
        "owner": "data-engineering",
        **task_defaults(),
        "execution_timeout": timedelta(hours=2),
    },
)
def mailsync_retention():
    lock = RunLockSensor(task_id="acquire_run_lock")

    @task(pre_execute=hold_run_lock, multiple_outputs=False)
    def delete_old_runs() -> dict:
        """Delete run folders older than `run_days` (by their interval end).

        **Inputs:** `include/retention.yaml`, the staging area of every DAG.

        **When it fails:** a file system error names the folder: fix permissions, clear the task.
        """
        from mailsync.operators import retention

        return retention.delete_old_runs(Run.of_current_task())

    @task(pre_execute=hold_run_lock, multiple_outputs=False)
    def delete_people_files(deleted: dict) -> dict:
        """Delete quarantine, rejected and unparsed-line files older than `quarantine_days`.

        **Inputs:** `include/retention.yaml`, the kept run folders.

        **When it fails:** a file system error names the file: fix permissions, clear the task.
        """
        from mailsync.operators import retention

        return retention.delete_people_files(Run.of_current_task())

    @task(pre_execute=hold_run_lock, multiple_outputs=False)
    def apply_erasures(deleted: dict) -> dict:
        """Remove everyone in the erasure ledger from snapshots, kept run files and sync state.

        **Inputs:** the erasure ledger (`mailsync_erasure` in the state database), every DAG's
        files; it works on a DAG only while holding that DAG's run lock.

        **When it fails:** `ErasureOverdue`: an erasure waited past `erasure_days`, usually because
        a DAG was busy or stuck every day; free it (its run lock) and clear this task.
        """
        from mailsync.operators import retention

        return retention.apply_erasures(Run.of_current_task())

    release = ReleaseRunLockOperator(task_id="release_run_lock")
    lock >> apply_erasures(delete_people_files(delete_old_runs())) >> release.as_teardown(setups=lock)


mailsync_retention()
