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

from airflow.sdk import DAG, Param

from mailsync.brand_dags import brand_dags, integration_dag, mapping_of, one_run_at_a_time
from mailsync.brands import Brand
from mailsync.operators.lock import hold_run_lock
from mailsync.operators.steps import (
    DiffOperator,
    LoadEspMembersOperator,
    MapOperator,
    QualityGateOperator,
    ReportOperator,
    StageSqlOperator,
)

INTEGRATION = "legacy_members_to_esp"


def build(brand: Brand) -> DAG:
    """The integration for one brand: its connections, state, schedule, owner and role."""
    settings = brand.integration(INTEGRATION)
    mapping = mapping_of(brand, INTEGRATION)
    db, esp = brand.conn_id("legacy_members_db", INTEGRATION), brand.conn_id("esp", INTEGRATION)
    state = brand.state(INTEGRATION)
    with integration_dag(
        brand,
        INTEGRATION,
        doc_md=__doc__,
        description="Daily legacy club-member database (PostgreSQL, no API) → ESP merge fields",
        schedule="0 3 * * *",
        tags=["legacy", "sql", "esp", "daily"],
        timeout=timedelta(hours=1),
        params={
            "full_refresh": Param(
                False, type="boolean", description="Read every member instead of the interval's changes."
            )
        },
        dry_run="Compute and report; write nothing to the ESP.",
    ) as dag:
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
        report = ReportOperator(
            task_id="report",
            summary="members_report",
            results={
                "extract": extract.output,
                "validate": validate.output,
                "diff": diffed.output,
                "load": load.output,
            },
            pre_execute=hold_run_lock,
            doc_md="The run's summary: one XCom, the run's note, `report.json`; refused records "
            "notify.\n\n**When it fails:** the load is done; clear it to get the summary.",
        )
        extract >> validate >> mapped >> diffed >> load >> report
        one_run_at_a_time(extract, report)
    return dag


globals().update(brand_dags(INTEGRATION, build))  # include/brands/*.yaml: a new file is a new DAG
