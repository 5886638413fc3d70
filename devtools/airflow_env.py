"""The environment a project-local Airflow runs with (demo, tests, benchmarks).

One place, so the demo, the tests and the benchmarks run the same Airflow configuration.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


class _SavepointCursor(sqlite3.Cursor):
    """Opens a transaction that starts with a SAVEPOINT as `BEGIN IMMEDIATE`.

    SQLAlchemy's `session.begin_nested()` emits a bare SAVEPOINT, and outside a transaction SQLite
    runs that as a DEFERRED begin: the next SELECT takes a read snapshot, and the first write must
    then upgrade it. SQLite never waits on that upgrade (the busy timeout is skipped to avoid a
    deadlock, and in WAL a snapshot older than another component's commit can never be upgraded),
    so it fails at once with `database is locked`. That is how `airflow backfill create` died on a
    `dag_run` insert while the scheduler wrote: models/backfill.py creates each day in a
    begin_nested(), and as that SAVEPOINT had opened the transaction its RELEASE committed it, so
    every day began again with a read. BEGIN IMMEDIATE takes the write lock first, waiting up to
    `timeout` for it, and RELEASE no longer commits: the session's commit does, as SQLAlchemy
    means it. Transactions pysqlite opens itself (before an INSERT/UPDATE/DELETE) already wait.
    """

    def execute(self, sql, parameters=(), /):
        if not self.connection.in_transaction and sql.lstrip()[:9].upper() == "SAVEPOINT":
            super().execute("BEGIN IMMEDIATE")
        return super().execute(sql, parameters)


class SavepointsBeginImmediate(sqlite3.Connection):
    """The sqlite3 connection Airflow's engine uses: every cursor is a `_SavepointCursor`."""

    def cursor(self, factory=_SavepointCursor):
        return super().cursor(factory)


# Read by Airflow through AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS (passed to sqlite3.connect).
# timeout: SQLite waits this long for another component's write lock before `database is locked`
# (Python's default is 5 s: too short when the scheduler, dag-processor, api-server and a CLI
# command all write to one file on a busy 2-core machine). factory: see _SavepointCursor.
SQLITE_CONNECT_ARGS = {"timeout": 60, "factory": SavepointsBeginImmediate}


AUTH_MANAGERS = {
    "simple": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    # per-DAG permissions (a brand's role sees only its DAGs): apache-airflow-providers-fab
    "fab": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
}


# What every task process runs with, beyond Airflow's settings: Arrow's allocator is the system
# malloc, not the wheel's default mimalloc, which kept 30-55 MiB more resident for the same work
# (issue 22, alternating runs: the quality gate over 100k rows 468-477 -> 430-431 MiB peak;
# bench_mapping's transform + validate of 100k rows 566-581 -> 525-528 MiB, of 1M rows 673-675 ->
# 641-650 MiB; no steady difference in time). The same in the Dockerfile.
TASK_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system"}


def airflow_env(
    home: Path, *, executor: str = "LocalExecutor", parallelism: int = 8, auth: str = "simple"
) -> dict[str, str]:
    """Return AIRFLOW__* settings for an Airflow whose metadata DB is SQLite under `home`.

    Parallelism stays <= 16 on SQLite: at the default 32 `database is locked` kills the
    scheduler (see shared/PITFALLS.md). `auth="fab"` opts in to the FAB auth manager (users
    and roles in the metadata DB, see LocalAirflow); the default is the simple one.
    """
    home = Path(home).resolve()
    extra_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    opt_in = {} if auth == "simple" else {"AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGERS[auth]}
    return {
        **opt_in,
        **TASK_ENV,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": "regexp",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        # how long the scheduler sleeps after a loop with nothing to do (Airflow's default 1 s):
        # every hand-off from a task to the next waited up to that long (issue 22: a 1%-change
        # night of 20k contacts 18.2 s at 1 s, 12.1 s at 0.25 s, side by side); the same in
        # docker-compose.yaml
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "devtools.airflow_env.SQLITE_CONNECT_ARGS",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "mailsync-local-only-" + "0" * 64,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "PYTHONWARNINGS": "ignore::UserWarning",
        # every component imports mailsync (plugins/) and the connect args above (devtools/)
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(PROJECT / "plugins"), str(PROJECT), *extra_path])),
    }


def notifications_without_deadlines(folder: Path) -> dict[str, str]:
    """MAILSYNC_NOTIFICATIONS_FILE pointing at the project's notification settings minus deadlines,
    written to `folder`, for processes that run DAGs with dag.test(): Airflow 3.3.2's dag.test()
    cannot finish a run of a DAG with a DeadlineAlert (it hands the serialized alert to code that
    expects its id: AttributeError 'dict' object has no attribute 'hex'). Deadlines are tested on
    a real scheduler (tests/e2e/test_run_page_and_alerts.py), where they work."""
    import yaml

    config = yaml.safe_load((PROJECT / "include" / "notifications.yaml").read_text())
    config.pop("deadlines", None)
    path = Path(folder) / "notifications.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"MAILSYNC_NOTIFICATIONS_FILE": str(path)}
