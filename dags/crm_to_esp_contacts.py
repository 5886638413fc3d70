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

**Brands:** one DAG per file of `include/brands/` (`crm_to_esp_contacts__<brand>`), each with
only its brand's CRM, ESP and SFTP connections, its own snapshot and sync state; the default
brand keeps the plain id.

**When it fails:** read the failed task's log (it says what to check). A quality failure: open
the report; fix at the source or raise the threshold in the mapping; clear the `validate` task.
An API outage: clear the failed task once the service is back — loads resume where the
acknowledgements stopped, nothing is sent twice. Rerunning a night is always safe.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from mailsync.brand_dags import brand_asset, brand_dags, integration_dag, mapping_of, one_run_at_a_time
from mailsync.brands import Brand
from mailsync.operators.contacts import (
    CommitSnapshotsOperator,
    ContactsQualityGateOperator,
    DiffContactsOperator,
    ExtractCrmContactsOperator,
    ExtractLoyaltyFileOperator,
    GuardRemovalsOperator,
    ListAudienceOperator,
    LoadContactsOperator,
    PlanPartitionsOperator,
    TransformContactsOperator,
)
from mailsync.operators.lock import hold_run_lock
from mailsync.operators.sensors import LoyaltyFileSensor
from mailsync.operators.steps import ReportOperator
from mailsync.settings import BUCKETS

INTEGRATION = "crm_to_esp_contacts"
PARAMS = {
    "full_refresh": Param(
        False, type="boolean", description="Pull every CRM contact instead of the interval's changes."
    ),
    "partitions": Param(2, type="integer", minimum=1, maximum=BUCKETS, description="Parallel load tasks."),
    "loyalty_wait_minutes": Param(
        120, type="integer", minimum=0, description="How long to wait for the loyalty file."
    ),
    "loyalty_required": Param(
        False, type="boolean", description="Fail when the loyalty file does not come (else keep last tiers)."
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
}


def build(brand: Brand) -> DAG:
    """The nightly sync for one brand: its CRM, ESP and SFTP connections, snapshot and state."""
    mapping = mapping_of(brand, INTEGRATION)
    crm, esp = brand.conn_id("crm", INTEGRATION), brand.conn_id("esp", INTEGRATION)
    sftp, state = brand.conn_id("loyalty_sftp", INTEGRATION), brand.state(INTEGRATION)
    with integration_dag(
        brand,
        INTEGRATION,
        doc_md=__doc__,
        description="Nightly CRM → ESP contact sync (profile, consent, loyalty tier), only what changed",
        schedule="0 2 * * *",
        catchup=False,  # a stateful sync: one run catches up skipped nights (see Extract above)
        tags=["crm", "esp", "nightly"],
        timeout=timedelta(hours=3),
        params=PARAMS,
        dry_run="Compute and report the difference; write nothing to the ESP.",
    ) as dag:
        sensed = LoyaltyFileSensor(
            task_id="wait_for_loyalty_file",
            sftp_conn_id=sftp,
            doc_md="Waits (reschedule mode, no worker slot held) for the night's loyalty file and its "
            f"done-marker on SFTP.\n\n**Inputs:** the `{sftp}` connection; `loyalty_wait_minutes`.\n\n"
            "**Returns** the file's day and whether it was found: when it was not and `loyalty_required` "
            "is false, the run goes on with the last known tiers (the report says `loyalty: missing`).\n\n"
            "**When it fails:** only with `loyalty_required`: ask the partner for the file, then clear "
            "this task.",
        )
        extracted = ExtractCrmContactsOperator(
            task_id="extract_contacts",
            crm_conn_id=crm,
            mapping=mapping,
            pre_execute=hold_run_lock,
            doc_md="Stages the CRM contacts modified in the interval (all with `full_refresh`) as Parquet "
            f"chunks.\n\n**Inputs:** the `{crm}` connection (HubSpot), the data interval, the high-water "
            "mark of the last completed night (skipped nights are caught up).\n\n**When it fails:** "
            "nothing has been written yet. 401/403: fix the connection's token. \"still failing ... rerun "
            'the task later": the CRM was down past the retry budget; clear the task once it answers. '
            "`IncompleteExtract`: the listing ended early; clear the task.",
        )
        loyalty = ExtractLoyaltyFileOperator(
            task_id="extract_loyalty",
            sensed=sensed.output,
            sftp_conn_id=sftp,
            mapping=mapping,
            pre_execute=hold_run_lock,
            doc_md="Downloads the loyalty file (checked against its done-marker) and parses it in the "
            f"mapping's dialect.\n\n**Inputs:** the sensor's result, the `{sftp}` connection, "
            "`sources.loyalty.file` of the mapping (encodings, delimiters, header, completeness).\n\n"
            "**When it fails:** a file that cannot be used is refused, not failed: the night goes on "
            "with the last tiers and the report says `loyalty: rejected` with the reason. It fails only "
            "with `loyalty_required` (ask the partner for a corrected file) or on an SFTP outage (clear "
            "it once the server answers).",
        )
        validated = ContactsQualityGateOperator(
            task_id="validate",
            mapping=mapping,
            pre_execute=hold_run_lock,
            doc_md="Great Expectations quality gate: quarantines bad rows with reasons; fails past the "
            "threshold.\n\n**Inputs:** the staged contacts and loyalty rows; the checks of "
            f"`include/mappings/{mapping}.yaml`.\n\n**When it fails:** too many bad rows, or a "
            "dataset-level failure (missing columns, too many duplicate emails). Open the Quality report "
            "link; fix the data at the source, or raise `bad_row_threshold` in the mapping if the data is "
            "right; clear this task.",
        )
        audience = ListAudienceOperator(
            task_id="list_audience",
            esp_conn_id=esp,
            pre_execute=hold_run_lock,
            doc_md="With `mirror`: lists the ESP audience and stages the members no CRM contact has (else "
            f"nothing).\n\n**Inputs:** the `{esp}` connection (Mailchimp), the staged contacts.\n\n"
            "**When it fails:** an ESP outage or credentials: fix or wait, then clear it.",
        )
        plan = PlanPartitionsOperator(
            task_id="plan",
            extracted=extracted.output,
            pre_execute=hold_run_lock,
            doc_md="Splits the key buckets into the `partitions` param's number of partitions.\n\n"
            "**Inputs:** the `partitions` param. The result does not depend on it.\n\n**When it fails:** "
            "it cannot, short of a broken deployment: read its log.",
        )
        transformed = TransformContactsOperator.partial(
            task_id="transform",
            mapping=mapping,
            pre_execute=hold_run_lock,
            doc_md="Merges tonight's rows into the next contacts snapshot (committed after the loads); "
            "maps to ESP members (mapping YAML).\n\n**Inputs:** one partition's key buckets, the valid "
            "rows, the current snapshot.\n\n**When it fails:** a mapping error names file, line and "
            "key: fix the mapping, then clear the task. Nothing was sent yet.",
        ).expand(part=plan.output)
        diffs = DiffContactsOperator.partial(
            task_id="diff",
            state=state,
            pre_execute=hold_run_lock,
            doc_md="Desired members vs what the ESP acknowledged: new, changed, unchanged, to remove."
            f"\n\n**Inputs:** the transform's members, the sync state `{state}` (`mailsync_state`).\n\n"
            "**When it fails:** the state database was unreachable: clear the task once it is back.",
        ).expand(transformed=transformed.output)
        guarded = GuardRemovalsOperator(
            task_id="check_removals",
            diffs=diffs.output,
            pre_execute=hold_run_lock,
            doc_md="Safety stop over all partitions before anything is sent: too many removals fail the "
            "run.\n\n**Inputs:** every partition's diff; `max_removal_share`, `allow_mass_removal`.\n\n"
            "**When it fails:** nothing was sent. Find out why so many members would go (a CRM export "
            "gone wrong?). If it is intended, trigger the night again with `allow_mass_removal`.",
        )
        loads = LoadContactsOperator.partial(
            task_id="load",
            esp_conn_id=esp,
            mapping=mapping,
            state=state,
            retries=5,
            pre_execute=hold_run_lock,
            doc_md="Batch-upserts the difference, archives removed contacts; the state advances per "
            f"acknowledged batch.\n\n**Inputs:** one partition's diff, the `{esp}` connection.\n\n"
            "**When it fails:** an ESP outage past the retries: clear it once the ESP answers. It resumes "
            "where the acknowledgements stopped; nothing is sent twice. Members the ESP refused are in "
            "the Rejected records link and sent again next night.",
        ).expand(diffed=guarded.output)
        committed = CommitSnapshotsOperator(
            task_id="commit",
            extracted=extracted.output,
            pre_execute=hold_run_lock,
            doc_md="After every partition loaded: tonight's snapshots become current, the high-water mark "
            "advances.\n\n**Inputs:** the loads' results, the staged snapshots.\n\n**When it fails:** "
            "the snapshot and the mark stay as they were, so the next night repeats tonight's work (safe: "
            "the state knows what was sent). Clear it to finish tonight.",
        )
        report = ReportOperator(
            task_id="report",
            summary="contacts_report",
            results={
                "extract": extracted.output,
                "loyalty": loyalty.output,
                "validate": validated.output,
                "loads": loads.output,
            },
            outlets=[brand_asset(brand, "esp_audience_contacts")],
            pre_execute=hold_run_lock,
            doc_md="Counts per stage, API calls and duration: this run's summary. The one XCom of this "
            "task, the run's note (Markdown, on the run's page, through the `airflow_api` connection) "
            "and `report.json` beside the run's files. Warnings (a refused or missing loyalty file, "
            "members the ESP refused) notify (include/notifications.yaml).\n\n**When it fails:** the "
            "sync itself is done; clear it to get the summary.",
        )
        [extracted, loyalty] >> validated >> plan
        audience << extracted
        audience >> plan
        loads >> committed >> report
        one_run_at_a_time([extracted, loyalty], report)
    return dag


globals().update(brand_dags(INTEGRATION, build))  # include/brands/*.yaml: a new file is a new DAG
