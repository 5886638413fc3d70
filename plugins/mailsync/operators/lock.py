"""One run of a DAG at a time through the part that reads and rewrites shared data.

Airflow runs up to 10 backfill days at once whatever the DAG's `max_active_runs` (a backfill
has its own, default 10, and so has the UI's Backfill dialog), and a manual run can meet the
scheduled one. The daily totals, the orders snapshot and the contacts snapshot are shared by
every run of their DAG, so the runs must not interleave there. A DAG therefore brackets that
part with a setup and a teardown task:

    acquire_run_lock (RunLockSensor, setup) >> ...work... >> release_run_lock (teardown)

The lease lives in the state database (`mailsync.state.RunLock`), so it holds across Celery
workers. Waiting runs poke in reschedule mode (no worker slot is held). Each task of the part
renews the lease when it starts (`pre_execute=hold_run_lock`) and fails if another run holds
it. The teardown releases it whether the work failed or not; clearing a task clears its setup
and teardown too, so a rerun takes the lease again. A lease of a run that died without its
teardown frees itself `MAILSYNC_RUN_LOCK_TTL_S` after its last renewal (default 3 h, longer
than any task's execution_timeout); to free it at once, clear that run's `release_run_lock`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, BaseSensorOperator

from mailsync.settings import run_lock_ttl_s

LOCK_NAME = "{{ dag.dag_id }}"


def hold_run_lock(context: Any) -> None:
    """pre_execute of every task under the lease: renew it, or fail when another run holds it."""
    from mailsync.state import RunLock

    RunLock(context["dag"].dag_id).hold(context["run_id"], run_lock_ttl_s())


class RunLockSensor(BaseSensorOperator):
    """Wait (reschedule mode) until this run holds its DAG's run lease; the setup of the part
    of the DAG that only one run may do at a time. Returns the lock name."""

    template_fields = ("lock_name",)
    ui_color = "#f3e8d6"

    def __init__(self, *, lock_name: str = LOCK_NAME, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 10)
        kwargs.setdefault("timeout", 6 * 3600)
        kwargs.setdefault(
            "doc_md",
            "Waits until no other run of this DAG is between its `acquire_run_lock` and "
            "`release_run_lock` (backfill days, a manual run beside the scheduled one), then takes "
            "the lease. Its log names the run it waits for. A lease left by a run that died "
            "without releasing expires by itself; clearing that run's `release_run_lock` frees it."
            "\n\n**When it fails:** it waited 6 h: the run its log names is stuck; let it finish, or "
            "clear that run's `release_run_lock`, then clear this task.",
        )
        super().__init__(**kwargs)
        self.lock_name = lock_name

    def poke(self, context: Any) -> bool:
        from mailsync.state import RunLock

        other = RunLock(self.lock_name).acquire(context["run_id"], run_lock_ttl_s())
        if other is None:
            self.log.info("Run lock %s taken by this run", self.lock_name)
            return True
        self.log.info("Run lock %s is %s: waiting", self.lock_name, other.describe())
        return False

    def execute(self, context: Any) -> str:
        super().execute(context)
        return self.lock_name


class ReleaseRunLockOperator(BaseOperator):
    """Give the run lease back (a teardown: it runs whether the work succeeded or failed)."""

    template_fields = ("lock_name",)
    ui_color = "#f3e8d6"

    def __init__(self, *, lock_name: str = LOCK_NAME, **kwargs: Any) -> None:
        kwargs.setdefault(
            "doc_md",
            "Releases this run's lease so the next run of the DAG can go on (a teardown: it runs "
            "whether the work failed or not).\n\n**When it fails:** the state database was "
            "unreachable; the lease expires by itself (`MAILSYNC_RUN_LOCK_TTL_S`); clear this task "
            "to free it now.",
        )
        super().__init__(**kwargs)
        self.lock_name = lock_name

    def execute(self, context: Any) -> bool:
        from mailsync.state import RunLock

        released = RunLock(self.lock_name).release(context["run_id"])
        self.log.info("Run lock %s %s", self.lock_name, "released" if released else "was not held")
        return released
