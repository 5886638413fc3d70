"""The production topology of docker-compose.yaml, as native processes on this machine.

CeleryExecutor, PostgreSQL metadata DB, Redis broker, `db+postgresql` result backend, and the
components as separate processes, each in its own process group: api-server, scheduler,
dag-processor, triggerer and N Celery workers. Every worker has its own AIRFLOW_HOME (as each
worker container has its own file system) and sees the one staging folder (the compose file's
shared `staging` volume). Connections, the `mailsync_state` one included, live in the metadata DB
(`airflow connections add`), never in AIRFLOW_CONN_* variables, so the topology proves the path
a real deployment takes.

Used by tests/e2e/test_celery_topology.py and bench/bench_celery_topology.py. Parallel sessions
on one machine do not collide: each topology creates its own two databases (dropped by `stop()`),
claims a Redis db index of its own and uses its own Celery queue.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devtools.local_airflow import LocalAirflow, _quote, free_port

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS = ("127.0.0.1", 6379)
_REDIS_CLAIM = "mailsync:celery-topology:db{}"  # in Redis db 0: which topology owns db N


def worker_hostname() -> str:
    """`[core] hostname_callable` of the workers: the worker's own name (MAILSYNC_WORKER_HOSTNAME).

    On one machine every worker would report the same FQDN as its task instances' hostname;
    separate hosts would not, so each worker process names itself.
    """
    return os.environ.get("MAILSYNC_WORKER_HOSTNAME") or socket.getfqdn()


def pg_url(database: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG['user']}@{PG['host']}:{PG['port']}/{database}"


def _pg_admin(*statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _claim_redis_db(token: str) -> int:
    """An empty Redis db index (1-15) claimed for this topology (released by `stop()`)."""
    import redis

    admin = redis.Redis(*REDIS, db=0)
    for n in range(1, int(admin.config_get("databases")["databases"])):
        if admin.set(_REDIS_CLAIM.format(n), token, nx=True, ex=6 * 3600):
            if redis.Redis(*REDIS, db=n).dbsize() == 0:
                return n
            admin.delete(_REDIS_CLAIM.format(n))  # someone uses it without a claim: leave it alone
    raise RuntimeError("no free Redis db index (1-15) for the Celery broker")


class CeleryAirflow(LocalAirflow):
    """Start, drive and stop Airflow with the CeleryExecutor on PostgreSQL and Redis."""

    def __init__(
        self,
        home: Path,
        *,
        workers: int = 2,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.suffix = secrets.token_hex(4)
        self.metadata_db = f"mailsync_af_{self.suffix}"
        self.state_db = f"mailsync_state_{self.suffix}"
        self.redis_db: int | None = None
        self.queue = f"mailsync_{self.suffix}"
        self.n_workers, self.concurrency = workers, concurrency
        home = Path(home).resolve()
        self.staging = home / "staging"  # the shared volume: every worker reads and writes it
        topology = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(self.metadata_db),
            "AIRFLOW__CELERY__RESULT_BACKEND": pg_url(self.metadata_db, "db+postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CORE__PARALLELISM": "16",
            # a worker that dies (SIGKILL, lost machine) stops heartbeating its task instances:
            # after this many seconds the scheduler fails the try and the retry goes elsewhere
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs we trigger or backfill
            "MAILSYNC_STAGING_URL": self.staging.as_uri(),
            "MAILSYNC_TASK_RETRY_DELAY_S": "1",
        }
        super().__init__(home, env={**topology, **(env or {})}, port=port)
        for key in list(self.env):  # inherited from a test process: the metadata DB must be the path
            if key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")):
                del self.env[key]
        self.env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)  # SQLite's, not psycopg2's
        self.workers: dict[str, subprocess.Popen] = {}
        self.killed: list[str] = []
        self._created = False

    # -- life cycle --------------------------------------------------------------------------
    def start(self, timeout: float = 180, *, connections: dict[str, dict | str] | None = None) -> None:
        """Databases, broker db, `db migrate`, the components, connections, then the workers."""
        atexit.register(self.stop)
        _pg_admin(f'CREATE DATABASE "{self.metadata_db}"', f'CREATE DATABASE "{self.state_db}"')
        self._created = True
        self.redis_db = _claim_redis_db(self.suffix)
        self.env["AIRFLOW__CELERY__BROKER_URL"] = f"redis://{REDIS[0]}:{REDIS[1]}/{self.redis_db}"
        self.staging.mkdir(parents=True, exist_ok=True)
        super().start(timeout)
        self.add_connections(
            {
                **(connections or {}),
                "mailsync_state": {
                    "conn_type": "postgres",
                    "host": PG["host"],
                    "port": PG["port"],
                    "login": PG["user"],
                    "schema": self.state_db,
                },
            }
        )
        for k in range(1, self.n_workers + 1):
            self.start_worker(f"w{k}")
        self.wait_for_workers(timeout)

    def add_connections(self, connections: dict[str, dict | str]) -> None:
        """`airflow connections add` for each (in parallel: ~2 s of CLI start-up each)."""
        procs = {
            conn_id: subprocess.Popen(
                [sys.executable, "-m", "airflow", "connections", "add", conn_id, "--conn-json",
                 value if isinstance(value, str) else json.dumps(value)],
                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for conn_id, value in connections.items()
        }  # fmt: skip
        failed = {c: p.communicate()[0][-1500:] for c, p in procs.items() if p.wait() != 0}
        if failed:
            raise RuntimeError(f"airflow connections add failed: {failed}")

    def start_worker(self, name: str) -> None:
        """One Celery worker `name@<host>` in its own process group and AIRFLOW_HOME."""
        home = self.home / "workers" / name
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devtools.celery_airflow.worker_hostname",
            "MAILSYNC_WORKER_HOSTNAME": f"{name}@{socket.gethostname()}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        log = (self.home / "process-logs" / f"worker-{name}.log").open("ab")
        cmd = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", str(self.concurrency)]
        self.workers[name] = self.processes[f"worker-{name}"] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *cmd, "--without-gossip", "--without-mingle"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def wait_for_workers(self, timeout: float = 120) -> None:
        """Until every live worker has logged Celery's `ready.`."""
        deadline = time.monotonic() + timeout
        pending = set(self.workers)
        while pending and time.monotonic() < deadline:
            self._check_alive()
            for name in list(pending):
                text = (self.home / "process-logs" / f"worker-{name}.log").read_text(errors="replace")
                if " ready." in text:
                    pending.discard(name)
            time.sleep(0.5)
        if pending:
            raise TimeoutError(f"workers {sorted(pending)} not ready within {timeout:.0f}s")

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL worker `name` and every process below it, as if its machine died.

        The task runners sit in process groups of their own (the Task SDK's supervisor puts them
        there), so a signal to the worker's group would miss them: the whole tree is killed.
        Returns the pids killed.
        """
        import psutil

        proc = self.workers.pop(name)
        self.processes.pop(f"worker-{name}")
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed.append(name)
        return [p.pid for p in tree]

    def stop(self) -> None:
        """Stop every process (and what they spawned), drop both databases, free the Redis db."""
        import psutil

        atexit.unregister(self.stop)
        descendants = []
        for proc in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(proc.pid).children(recursive=True)
        super().stop()
        for p in descendants:  # task runners in their own process groups
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.workers.clear()
        if self.redis_db is not None:
            import redis

            redis.Redis(*REDIS, db=self.redis_db).flushdb()
            redis.Redis(*REDIS, db=0).delete(_REDIS_CLAIM.format(self.redis_db))
            self.redis_db = None
        if self._created:
            _pg_admin(
                f'DROP DATABASE IF EXISTS "{self.metadata_db}" WITH (FORCE)',
                f'DROP DATABASE IF EXISTS "{self.state_db}" WITH (FORCE)',
            )
            self._created = False

    # -- the state database ----------------------------------------------------------------
    @property
    def state_url(self) -> str:
        return pg_url(self.state_db)

    def terminate_state_connections(self) -> int:
        """pg_terminate_backend every session on the state database; returns how many."""
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", **PG)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.state_db,),
                )
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def state_rows(self, integration: str | None = None) -> int:
        """Rows of mailsync's sync-state table in the state database (0 before the first ack)."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.state_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("mailsync_sync_state"):
                    return 0
                q = "SELECT count(*) FROM mailsync_sync_state"
                if integration:
                    return conn.execute(
                        sa.text(q + " WHERE integration = :i"), {"i": integration}
                    ).scalar_one()
                return conn.execute(sa.text(q)).scalar_one()
        finally:
            engine.dispose()

    def reset_state(self) -> None:
        """Empty the sync state, the staging folder and the DAG runs: a test starts from nothing."""
        import shutil

        import sqlalchemy as sa

        engine = sa.create_engine(self.state_url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                for table in sa.inspect(conn).get_table_names():
                    conn.execute(sa.text(f'DROP TABLE "{table}"'))
        finally:
            engine.dispose()
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    # -- REST API --------------------------------------------------------------------------
    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances (latest try), with hostname, try_number, start and end."""
        path = f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances"
        return self.api("GET", path, params={"limit": 1000})["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance (hostname and state of each)."""
        path = f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.api("GET", f"{path}/tries")["task_instances"]

    def all_tries(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every try of every task instance of the run."""
        out = []
        for ti in self.task_instances(dag_id, run_id):
            out += self.tries(dag_id, run_id, ti["task_id"], ti["map_index"])
        return out

    def hostnames(self, dag_id: str, run_id: str) -> dict[str, list[str]]:
        """task_id[map_index] -> the hostname of each try, in try order."""
        out: dict[str, list[str]] = {}
        for t in sorted(self.all_tries(dag_id, run_id), key=lambda t: t["try_number"]):
            out.setdefault(f"{t['task_id']}[{t['map_index']}]", []).append(t.get("hostname") or "")
        return out

    def delete_runs(self, dag_id: str) -> None:
        for run in self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 1000})["dag_runs"]:
            self.api("DELETE", f"dags/{dag_id}/dagRuns/{_quote(run['dag_run_id'])}")

    def backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        *,
        max_active_runs: int = 1,
        reprocess: str = "completed",
    ) -> subprocess.CompletedProcess:
        """`airflow backfill create` (the scheduler then runs the days)."""
        return self.airflow(
            "backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date,
            "--reprocess-behavior", reprocess, "--max-active-runs", str(max_active_runs),
        )  # fmt: skip

    def wait_for_backfill(self, dag_id: str, days: int, timeout: float = 900) -> list[dict[str, Any]]:
        """Until `days` backfill runs of the DAG have finished; returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            runs = self.api("GET", f"dags/{dag_id}/dagRuns", params={"run_type": "backfill", "limit": 100})
            runs = runs["dag_runs"]
            if len(runs) >= days and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            time.sleep(2)
        raise TimeoutError(f"backfill of {dag_id} did not finish within {timeout:.0f}s")
