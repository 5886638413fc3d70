"""The DAG of one integration for one brand: what every mailsync DAG file shares.

A DAG file says what is its own (flow, params, timeout, tags) and loops over the brands that run
it (`mailsync.brands.brands_for`); this module gives each DAG the brand's id, schedule, owner,
tags, FAB role, the deadline alert, the task defaults, the trigger form's help and a `dry_run`
param. A brand file changes those, never the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from mailsync.brands import Brand, brands_for
from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor
from mailsync.operators.run import logical_date_help
from mailsync.settings import INCLUDE_DIR, staging_url, task_defaults

START = pendulum.datetime(2026, 11, 1, tz="UTC")
# what a DAG's last task updates, by name (Asset-scheduled DAGs wait for them)
ASSETS = {
    "esp_audience_contacts": "mailsync://esp/audience/contacts",
    "esp_ecommerce_orders": "mailsync://esp/ecommerce/orders",
    "crm_contact_engagement": "mailsync://crm/contacts/engagement",
}


def _tick(cron: str) -> str:
    """HH:MM of a daily cron (for the trigger form's help), else the cron itself."""
    minute, hour, *_ = [*cron.split(), "", ""]
    return f"{int(hour):02d}:{int(minute):02d}" if minute.isdigit() and hour.isdigit() else cron


def integration_dag(
    brand: Brand,
    integration: str,
    *,
    doc_md: str,
    description: str,
    tags: list[str],
    timeout: timedelta,
    params: dict[str, Param],
    dry_run: str,
    schedule: str | None = None,
    catchup: bool = True,
    asset_schedule: Any = None,
) -> DAG:
    """A DAG for `brand` running `integration`. `schedule` is the integration's default cron (a
    brand may set its own); `asset_schedule` replaces the clock for asset-triggered DAGs.
    The first param's form help says which day a run covers; `dry_run` is every DAG's."""
    staging_url()  # a staging URL no worker could use is the DAG file's import error in the UI
    settings = brand.integration(integration)
    dag_id = brand.dag_id(integration)
    if asset_schedule is None:
        cron = settings.schedule or schedule
        timetable: Any = CronDataIntervalTimetable(cron, timezone=settings.timezone)
        if params:
            first, param = next(iter(params.items()))
            help_md = logical_date_help(_tick(cron)) + f"\n\n**{first}:** {param.description}"
            schema = {**param.schema, "description_md": help_md}
            params = {**params, first: Param(param.value, description=param.description, **schema)}
    else:
        timetable, catchup = asset_schedule, False
    return DAG(
        dag_id=dag_id,
        description=description + ("" if brand.is_default else f" — brand {brand.title or brand.name}"),
        schedule=timetable,
        start_date=START,
        catchup=catchup,
        max_active_runs=1,  # scheduled runs; backfills ignore it: the run lock serialises every run
        doc_md=doc_md,
        deadline=deadline_alert(dag_id),  # include/notifications.yaml
        template_searchpath=[str(INCLUDE_DIR)],
        tags=brand.dag_tags(["mailsync", *tags]),
        access_control=brand.access_control(),  # FAB auth manager: the brand's role only
        default_args={"owner": brand.owner, **task_defaults(), "execution_timeout": timeout},
        params={**params, "dry_run": Param(False, type="boolean", description=dry_run)},
    )


def mapping_of(brand: Brand, integration: str, default: str | None = None) -> str:
    """The mapping (include/mappings/<name>.yaml) an integration of this brand uses: the brand
    file's `mapping`, else `default`, else the integration's name. Read now, so that a broken
    mapping is the DAG file's import error in the UI, not a failed night."""
    from mailsync.mapping.spec import load_mapping

    name = brand.integration(integration).mapping or default or integration
    load_mapping(name)
    return name


def brand_asset(brand: Brand, name: str) -> Asset:
    """One of ASSETS for one brand: the default brand's is today's, another brand's its own
    (`<name>__<brand>`), so a brand's segments wait for that brand's syncs only."""
    uri = ASSETS[name]
    return Asset(name=brand.dag_id(name), uri=uri if brand.is_default else f"{uri}/{brand.name}")


def brand_dags(integration: str, build) -> dict[str, DAG]:
    """`build(brand)` for every brand that runs `integration`, by DAG id (for the file's globals:
    a new brand file is a new DAG)."""
    return {b.dag_id(integration): build(b) for b in brands_for(integration)}


def one_run_at_a_time(first: Iterable[Any] | Any, last: Any) -> None:
    """Bracket the tasks from `first` to `last` with the run lock (mailsync.operators.lock): a
    setup that waits for the lease, a teardown that gives it back whatever happened."""
    lock = RunLockSensor(task_id="acquire_run_lock")
    lock >> first
    last >> ReleaseRunLockOperator(task_id="release_run_lock").as_teardown(setups=lock)
