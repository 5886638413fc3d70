"""
### CRM → ESP contacts, nightly

Pushes what the CRM (HubSpot) knows about each customer — names, birthday, city and country,
language, client id, loyalty tier, lifetime value, last order date, consent — to the ESP
(Mailchimp) audience, for personalisation and segments.

**Flow:** `wait_for_loyalty_file`; `acquire_run_lock` → `extract_contacts` / `extract_loyalty`
→ `validate` / `list_audience` → `plan` → per partition `transform` → `diff` → `check_removals`
(all partitions) → per partition `load` → `commit` → `report` → `release_run_lock`.

* **One run at a time** from `acquire_run_lock` to `release_run_lock` (setup and teardown): a
  manual run or a backfill next to the nightly waits there (its log names the run it waits for),
  whatever `max_active_runs` says, since the runs share the snapshot and the ESP audience.

* **Extract** takes the contacts modified in the run's data interval (all of them with
  `full_refresh`, and on the very first run). If earlier nights were skipped, the window
  reaches back to the end of the last completed sync, so no change is ever missed.
* **Validate** runs the Great Expectations checks of `include/mappings/crm_to_esp_contacts.yaml`:
  bad rows (invalid email, impossible birthday, negative lifetime value, unknown tier, ...) are
  quarantined with a reason; the run fails only past the mapping's bad-row threshold or on a
  dataset-level failure (missing columns, too many duplicate emails). Report and quarantine
  file: the paths are in the `validate` and `report` return values.
* **Loyalty file**: read in the dialect the mapping declares (`sources.loyalty.file`: encodings,
  delimiters, BOM, header in any case and order) and checked for completeness (the done-marker's
  SHA-256 and row count, a final line break). Bad lines are quarantined with their line number;
  a customer whose row is bad keeps the last tier (`on_invalid: keep_last`). A file that cannot
  be used (damaged, cut off, another dialect, past the bad-row threshold) is refused whole: the
  night goes on with the last known tiers (unless `loyalty_required`), the `report` return value
  says `loyalty: rejected` with `loyalty_reason`, and a WARNING "Loyalty file rejected" is logged.
* **Transform** keeps a snapshot of the latest valid version of every CRM contact, so the whole
  desired audience is computed every night; duplicates of an email resolve to the most recently
  modified contact.
* **Commit**: only after every partition loaded do tonight's snapshots replace the current
  ones and the high-water mark advance. A run stopped by the removal guard, or failed anywhere,
  leaves both as they were. A full listing that ends early (fewer contacts than the CRM counts)
  fails `extract_contacts` instead of rebuilding the snapshot without the missing people.
* **Diff / load** send only new, changed and removed members (a quiet night costs few API
  calls). Consent only narrows: a consenting contact is subscribed only when new to the
  audience; "no consent" in the CRM unsubscribes; nobody the ESP has as unsubscribed or cleaned
  is ever subscribed again. Contacts deleted in the CRM are archived the next night; contacts
  erased (GDPR) vanish from HubSpot without a trace, so they are archived by the next
  `full_refresh` — schedule one weekly (a run with that param).
* **Mirror** (the first full sync against an audience that existed before us): removals
  normally come only from what this sync acknowledged, so members whose CRM contact was
  archived or deleted before the first sync stay subscribed. With `mirror` (a full refresh),
  `list_audience` lists the ESP audience and every member no CRM contact has (valid or
  quarantined) is archived (or deleted, as the mapping's `on_removed` says) in the `load` of its
  key bucket. Nothing else changes for anybody: an unsubscribed or cleaned member is only ever
  archived, never set to another status. The removal stop counts these removals with the others,
  against the audience size: on an audience full of old members, confirm with
  `allow_mass_removal`.

**Params:** `full_refresh` (pull every contact; detects GDPR erasures), `dry_run` (compute and
report the difference, write nothing), `partitions` (parallel load tasks; the result does not
depend on it), `loyalty_wait_minutes` / `loyalty_required` (how long to wait for the loyalty
file, and whether to fail or go on with the last known tiers), `allow_mass_removal` /
`max_removal_share` (a safety stop against archiving much of the audience by mistake),
`mirror` (also archive ESP members the CRM does not have; implies `full_refresh`).

**When it fails:** read the failed task's log (it says what to check). A quality failure: open
the report; fix at the source or raise the threshold in the mapping; clear the `validate` task.
An API outage: clear the failed task once the service is back — loads resume where the
acknowledgements stopped, nothing is sent twice. Rerunning a night is always safe.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from mailsync.mapping.spec import load_mapping
from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock
from mailsync.operators.run import Run, logical_date_help
from mailsync.operators.sensors import LoyaltyFileSensor
from mailsync.settings import BUCKETS, staging_url, task_defaults

staging_url()  # a staging URL no worker could use is this file's import error, shown in the UI
MAPPING = load_mapping("crm_to_esp_contacts")  # a broken mapping shows as an import error in the UI
ESP_CONTACTS = Asset(name="esp_audience_contacts", uri="mailsync://esp/audience/contacts")


@dag(
    dag_id="crm_to_esp_contacts",
    description="Nightly CRM → ESP contact sync (profile, consent, loyalty tier), only what changed",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,  # a stateful sync: one run catches up skipped nights (see Extract above)
    max_active_runs=1,
    doc_md=__doc__,
    deadline=deadline_alert("crm_to_esp_contacts"),  # include/notifications.yaml
    tags=["mailsync", "crm", "esp", "nightly"],
    default_args={
        "owner": "data-engineering",
        **task_defaults(),
        "execution_timeout": timedelta(hours=3),
    },
    params={
        "full_refresh": Param(
            False,
            type="boolean",
            description="Pull every CRM contact instead of the interval's changes.",
            description_md=logical_date_help("02:00")
            + "\n\n**full_refresh:** pull every CRM contact instead of the interval's changes.",
        ),
        "dry_run": Param(
            False, type="boolean", description="Compute and report the difference; write nothing to the ESP."
        ),
        "partitions": Param(
            2, type="integer", minimum=1, maximum=BUCKETS, description="Parallel load tasks."
        ),
        "loyalty_wait_minutes": Param(
            120, type="integer", minimum=0, description="How long to wait for the loyalty file."
        ),
        "loyalty_required": Param(
            False,
            type="boolean",
            description="Fail when the loyalty file does not come (else keep last tiers).",
        ),
        "allow_mass_removal": Param(
            False, type="boolean", description="Allow archiving more than max_removal_share of the audience."
        ),
        "max_removal_share": Param(
            0.1, type="number", minimum=0, maximum=1, description="Safety stop for removals."
        ),
        "mirror": Param(
            False,
            type="boolean",
            description="First sync against an existing audience: also archive (on_removed) every ESP "
            "member the CRM does not have. Implies full_refresh; counted by the removal stop.",
        ),
    },
)
def crm_to_esp_contacts():
    loyalty_day = LoyaltyFileSensor(
        task_id="wait_for_loyalty_file",
        doc_md="Waits (reschedule mode, no worker slot held) for the night's loyalty file and its "
        "done-marker on SFTP.\n\n**Inputs:** the `loyalty_sftp` connection; `loyalty_wait_minutes`.\n\n"
        "**Returns** the file's day and whether it was found: when it was not and `loyalty_required` "
        "is false, the run goes on with the last known tiers (the report says `loyalty: missing`).\n\n"
        "**When it fails:** only with `loyalty_required`: ask the partner for the file, then clear "
        "this task.",
    )

    lock = RunLockSensor(task_id="acquire_run_lock")

    @task(pre_execute=hold_run_lock)
    def extract_contacts() -> dict:
        """Stage the CRM contacts modified in the interval (all with `full_refresh`) as Parquet chunks.

        **Inputs:** the `crm_default` connection (HubSpot), the data interval, the high-water mark
        of the last completed night (skipped nights are caught up).

        **When it fails:** nothing has been written yet. 401/403: fix the connection's token. "still
        failing ... rerun the task later": the CRM was down past the retry budget; clear the task
        once it answers. `IncompleteExtract`: the listing ended early; clear the task.
        """
        from mailsync.operators import contacts

        return contacts.extract(Run.of_current_task())

    @task(pre_execute=hold_run_lock)
    def extract_loyalty(sensed: dict) -> dict:
        """Download the loyalty file (checked against its done-marker), parse it in the mapping's dialect.

        **Inputs:** the sensor's result, the `loyalty_sftp` connection, `sources.loyalty.file` of
        the mapping (encodings, delimiters, header, completeness).

        **When it fails:** a file that cannot be used is refused, not failed: the night goes on
        with the last tiers and the report says `loyalty: rejected` with the reason. It fails only
        with `loyalty_required` (ask the partner for a corrected file) or on an SFTP outage (clear
        it once the server answers).
        """
        from mailsync.operators import contacts

        return contacts.extract_loyalty(Run.of_current_task(), sensed)

    @task(pre_execute=hold_run_lock)
    def validate(extracted: dict, loyalty: dict) -> dict:
        """Great Expectations quality gate: quarantine bad rows with reasons; fail past the threshold.

        **Inputs:** the staged contacts and loyalty rows; the checks of
        `include/mappings/crm_to_esp_contacts.yaml`.

        **When it fails:** too many bad rows, or a dataset-level failure (missing columns, too many
        duplicate emails). Open the quality report named in the error; fix the data at the source,
        or raise `bad_row_threshold` in the mapping if the data is right; clear this task.
        """
        from mailsync.operators import contacts

        return contacts.validate(Run.of_current_task())

    @task(pre_execute=hold_run_lock, multiple_outputs=False)
    def list_audience(extracted: dict) -> dict:
        """With `mirror`: list the ESP audience and stage the members no CRM contact has (else nothing).

        **Inputs:** the `esp_default` connection (Mailchimp), the staged contacts.

        **When it fails:** an ESP outage or credentials: fix or wait, then clear it.
        """
        from mailsync.operators import contacts

        return contacts.list_audience(Run.of_current_task())

    @task(pre_execute=hold_run_lock)
    def plan(extracted: dict, validated: dict) -> list[dict]:
        """Split the key buckets into the `partitions` param's number of partitions.

        **Inputs:** the `partitions` param. The result does not depend on it.

        **When it fails:** it cannot, short of a broken deployment: read its log.
        """
        from mailsync.operators.run import partitions

        full = extracted["mode"] == "full"
        return [
            {"partition": i, "buckets": b, "full": full}
            for i, b in enumerate(partitions(Run.of_current_task().params["partitions"], BUCKETS))
        ]

    @task(
        pre_execute=hold_run_lock,
        doc_md="Merge tonight's rows into the next contacts snapshot (committed after the loads); "
        "map to ESP members (mapping YAML).\n\n**Inputs:** one partition's key buckets, the valid "
        "rows, the current snapshot.\n\n**When it fails:** a mapping error names file, line and "
        "key: fix the mapping, then clear the task. Nothing was sent yet.",
    )  # mapped tasks take no doc from the docstring
    def transform(part: dict) -> dict:
        from mailsync.operators import contacts

        return contacts.transform(
            Run.of_current_task(), part["partition"], part["buckets"], full=part["full"]
        )

    @task(
        pre_execute=hold_run_lock,
        doc_md="Desired members vs what the ESP acknowledged: new, changed, unchanged, to remove."
        "\n\n**Inputs:** the transform's members, the sync state (`mailsync_state`).\n\n"
        "**When it fails:** the state database was unreachable: clear the task once it is back.",
    )  # mapped tasks take no doc from the docstring
    def diff(transformed: dict) -> dict:
        from mailsync.operators import contacts

        return contacts.diff(Run.of_current_task(), transformed)

    @task(pre_execute=hold_run_lock)
    def check_removals(diffs: list[dict]) -> list[dict]:
        """Safety stop over all partitions before anything is sent: too many removals fail the run.

        **Inputs:** every partition's diff; `max_removal_share`, `allow_mass_removal`.

        **When it fails:** nothing was sent. Find out why so many members would go (a CRM export
        gone wrong?). If it is intended, trigger the night again with `allow_mass_removal`.
        """
        from mailsync.operators import contacts

        return contacts.guard_removals(Run.of_current_task(), diffs)

    @task(
        retries=5,
        pre_execute=hold_run_lock,
        doc_md="Batch-upsert the difference, archive removed contacts; state advances per acked batch."
        "\n\n**Inputs:** one partition's diff, the `esp_default` connection.\n\n**When it fails:** an "
        "ESP outage past the retries: clear it once the ESP answers. It resumes where the "
        "acknowledgements stopped; nothing is sent twice. Members the ESP refused are in the "
        "rejected file and sent again next night.",
    )  # mapped tasks take no doc from the docstring
    def load(diffed: dict) -> dict:
        from mailsync.operators import contacts

        run = Run.of_current_task()
        return contacts.load(run, diffed, partitions=int(run.params["partitions"]))

    @task(pre_execute=hold_run_lock)
    def commit(loads: list[dict]) -> dict:
        """After every partition loaded: tonight's snapshots become current, the high-water mark advances.

        **Inputs:** the loads' results, the staged snapshots.

        **When it fails:** the snapshot and the mark stay as they were, so the next night repeats
        tonight's work (safe: the state knows what was sent). Clear it to finish tonight.
        """
        from mailsync.operators import contacts

        return contacts.commit(Run.of_current_task())

    @task(outlets=[ESP_CONTACTS], pre_execute=hold_run_lock, multiple_outputs=False)
    def report(extracted: dict, loyalty: dict, validated: dict, loads: list[dict], committed: dict) -> dict:
        """Counts per stage, API calls and duration: this run's summary.

        The one XCom of this task, the run's note (Markdown, on the run's page, through the
        `airflow_api` connection) and `report.json` beside the run's files. Warnings (a refused or
        missing loyalty file, members the ESP refused) notify (include/notifications.yaml).

        **When it fails:** the sync itself is done; clear it to get the summary.
        """
        from mailsync.operators.report import contacts_report

        return contacts_report(Run.of_current_task(), extracted, loyalty, validated, loads)

    release = ReleaseRunLockOperator(task_id="release_run_lock")
    extracted = extract_contacts()
    loyalty = extract_loyalty(loyalty_day.output)
    lock >> [extracted, loyalty]
    validated = validate(extracted, loyalty)
    planned = plan(extracted, validated)
    list_audience(extracted) >> planned
    diffs = diff.expand(transformed=transform.expand(part=planned))
    loads = load.expand(diffed=check_removals(diffs))
    report(extracted, loyalty, validated, loads, commit(loads)) >> release.as_teardown(setups=lock)


crm_to_esp_contacts()
