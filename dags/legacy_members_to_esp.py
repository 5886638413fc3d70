"""
### Legacy club members → ESP merge fields, daily

The club system has no API: its member table (`club.members` in its PostgreSQL) is read
straight from the database through the `legacy_members_db` connection (the postgres provider's
hook), incrementally on `updated_at`, and each audience member's club level, points and member
number are written to the ESP (`CLUB`, `CLUBPOINTS`, `MEMBERNO`).

Built from configuration and the shared operators alone: the query is
`include/sql/legacy_members_to_esp.sql`, the checks, fields and consent rule are
`include/mappings/legacy_members_to_esp.yaml`; the operators are `mailsync.operators.steps`.

**Flow:** `acquire_run_lock` → `extract` (the interval's saved rows, all with `full_refresh`) →
`validate` (Great Expectations: invalid email, negative points, unknown level, control
characters, overlong names quarantined with a reason) → `map` → `diff` (against what the ESP
acknowledged: only changes are sent) → `load` (audience members only: nobody is added or
subscribed; an opt-out in the club system unsubscribes) → `report` → `release_run_lock`.

**Params:** `full_refresh` (read every member, e.g. the first run, or after the mapping gained a
field), `dry_run`.

**Brands:** one DAG per file of `include/brands/` (`legacy_members_to_esp__<brand>`), each with
only its brand's connections, its own sync state and, with the FAB auth manager, visible to its
brand's role only; without brand files (or with `default.yaml`) this DAG keeps its plain id.

**When it fails:** the failed task's documentation says what to do; rerunning a day is safe.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from mailsync.brands import Brand, brands_for
from mailsync.mapping.spec import load_mapping
from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock
from mailsync.operators.run import logical_date_help
from mailsync.operators.steps import (
    DiffOperator,
    LoadEspMembersOperator,
    MapOperator,
    QualityGateOperator,
    StageSqlOperator,
    SummaryReportOperator,
)
from mailsync.settings import INCLUDE_DIR, staging_url, task_defaults

staging_url()  # a staging URL no worker could use is this file's import error, shown in the UI
INTEGRATION = "legacy_members_to_esp"
SCHEDULE = "0 3 * * *"
HEADLINE = ("extracted", "quarantined", "unchanged", "new", "changed", "not_audience_members", "updated")


def _tick(cron: str) -> str:
    """HH:MM of a daily cron (for the trigger form's help), else the cron itself."""
    minute, hour, *_ = [*cron.split(), "", ""]
    return f"{int(hour):02d}:{int(minute):02d}" if minute.isdigit() and hour.isdigit() else cron


def build(brand: Brand) -> DAG:
    """The integration for one brand: its connections, state, schedule, owner and role."""
    settings = brand.integration(INTEGRATION)
    mapping = settings.mapping or INTEGRATION
    load_mapping(mapping)  # a broken mapping shows as an import error in the UI
    db, esp = brand.conn_id("legacy_members_db", INTEGRATION), brand.conn_id("esp", INTEGRATION)
    dag_id, state = brand.dag_id(INTEGRATION), brand.state(INTEGRATION)
    schedule = settings.schedule or SCHEDULE
    with DAG(
        dag_id=dag_id,
        description="Daily legacy club-member database (PostgreSQL, no API) → ESP merge fields"
        + ("" if brand.is_default else f" — brand {brand.title or brand.name}"),
        schedule=CronDataIntervalTimetable(schedule, timezone=settings.timezone),
        start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
        catchup=True,  # incremental by day: a day the scheduler missed still runs
        max_active_runs=1,
        doc_md=__doc__,
        deadline=deadline_alert(dag_id),  # include/notifications.yaml
        template_searchpath=[str(INCLUDE_DIR)],
        tags=brand.dag_tags(["mailsync", "legacy", "sql", "esp", "daily"]),
        access_control=brand.access_control(),  # FAB auth manager: the brand's role only
        default_args={
            "owner": brand.owner,
            **task_defaults(),
            "execution_timeout": timedelta(hours=1),
        },
        params={
            "full_refresh": Param(
                False,
                type="boolean",
                description="Read every member instead of the interval's changes.",
                description_md=logical_date_help(_tick(schedule))
                + "\n\n**full_refresh:** read every member instead of the interval's changes.",
            ),
            "dry_run": Param(
                False, type="boolean", description="Compute and report; write nothing to the ESP."
            ),
        },
    ) as dag:
        lock = RunLockSensor(task_id="acquire_run_lock")
        extract = StageSqlOperator(
            task_id="extract",
            conn_id=db,
            sql=settings.sql or f"sql/{INTEGRATION}.sql",
            parameters={"since": "{{ data_interval_start }}", "until": "{{ data_interval_end }}"},
            source="members",
            pre_execute=hold_run_lock,
            doc_md="Reads the members saved in the interval (all with `full_refresh`) from the club "
            f"database and stages them as Parquet.\n\n**Inputs:** the `{db}` connection, "
            f"`include/{settings.sql or f'sql/{INTEGRATION}.sql'}` (rendered: see the task's Rendered "
            "Template).\n\n**When it fails:** a connection error names the host: check the database "
            "and the connection, then clear the task. Nothing has been written yet.",
        )
        validate = QualityGateOperator(
            task_id="validate",
            mapping=mapping,
            source="members",
            pre_execute=hold_run_lock,
            doc_md="Great Expectations checks of the mapping: bad rows quarantined with their reason.\n\n"
            f"**Inputs:** the staged members, `include/mappings/{mapping}.yaml`.\n\n"
            "**When it fails:** past the bad-row threshold: open the Quality report link, fix the "
            "rows in the club system (or the threshold in the mapping), clear this task.",
        )
        mapped = MapOperator(
            task_id="map",
            mapping=mapping,
            source="members",
            pre_execute=hold_run_lock,
            doc_md="Maps the valid members to ESP merge fields (one record per email, the latest "
            "saved wins).\n\n**Inputs:** the valid rows, the mapping.\n\n**When it fails:** a mapping "
            "error names file, line and key: fix the mapping, clear the task.",
        )
        diffed = DiffOperator(
            task_id="diff",
            state=state,
            pre_execute=hold_run_lock,
            doc_md="New and changed records against what the ESP acknowledged (the sync state "
            f"`{state}`).\n\n**Inputs:** the mapped records, the `mailsync_state` connection.\n\n"
            "**When it fails:** the state database was unreachable: clear the task once it is back.",
        )
        load = LoadEspMembersOperator(
            task_id="load",
            mapping=mapping,
            state=state,
            esp_conn_id=esp,
            audience_state=brand.state("crm_to_esp_contacts"),
            pre_execute=hold_run_lock,
            retries=5,
            doc_md="Writes the changed merge fields of audience members (others are counted, not "
            "added); the state advances per acknowledged batch.\n\n**Inputs:** the diff, the "
            f"`{esp}` connection, the audience of `{brand.dag_id('crm_to_esp_contacts')}`.\n\n"
            "**When it fails:** an ESP outage past the retries: clear it once the ESP answers; it "
            "resumes, nothing is sent twice.",
        )
        report = SummaryReportOperator(
            task_id="report",
            extract="extract",
            validate="validate",
            diff="diff",
            load="load",
            headline=HEADLINE,
            pre_execute=hold_run_lock,
            doc_md="The run's summary: one XCom, the run's note, `report.json`; refused records "
            "notify.\n\n**When it fails:** the load is done; clear it to get the summary.",
        )
        release = ReleaseRunLockOperator(task_id="release_run_lock")
        lock >> extract >> validate >> mapped >> diffed >> load >> report >> release.as_teardown(setups=lock)
    return dag


for _brand in brands_for(INTEGRATION):  # include/brands/*.yaml; a new file is a new DAG
    globals()[_brand.dag_id(INTEGRATION)] = build(_brand)
