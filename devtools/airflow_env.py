"""The environment a project-local Airflow runs with (demo, tests, benchmarks).

One place, so the demo, the tests and the benchmarks run the same Airflow configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

# SQLite waits this long for another component's write lock before `database is locked`
# (Python's default is 5 s: too short when the scheduler, dag-processor, api-server and a CLI
# command all write to one file on a busy 2-core machine). Read by Airflow through
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS.
SQLITE_CONNECT_ARGS = {"timeout": 60}


def airflow_env(home: Path, *, executor: str = "LocalExecutor", parallelism: int = 8) -> dict[str, str]:
    """Return AIRFLOW__* settings for an Airflow whose metadata DB is SQLite under `home`.

    Parallelism stays <= 16 on SQLite: at the default 32 `database is locked` kills the
    scheduler (see shared/PITFALLS.md).
    """
    home = Path(home).resolve()
    extra_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": "regexp",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
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
