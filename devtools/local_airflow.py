"""A real Airflow (api-server, scheduler, dag-processor, triggerer) as local processes.

Used by `make demo` and by the tests that need Airflow's own scheduler (backfills). Each
component is its own process, as in production; the REST API is the way in.
"""

from __future__ import annotations

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

import requests

from devtools.airflow_env import airflow_env

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


class LocalAirflow:
    """Start, drive and stop a project-local Airflow on SQLite with the LocalExecutor.

    `auth="fab"` opts in to the FAB auth manager (apache-airflow-providers-fab): users and roles
    live in the metadata DB, the admin is created as an FAB `Admin`, and every brand's role
    (include/brands/) is created before the dag-processor stores the DAGs whose `access_control`
    names it. `add_user()` adds a user with one role. The default is the simple auth manager.
    """

    def __init__(
        self,
        home: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        auth: str = "simple",
    ) -> None:
        self.home = Path(home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.auth = auth
        self.user = "admin"
        passwords = self.home / "passwords.json"
        if not passwords.exists():  # a local, generated password; nothing secret lives in the repo
            passwords.write_text(json.dumps({self.user: secrets.token_urlsafe(12)}))
        self.password = json.loads(passwords.read_text())[self.user]
        self.env = {
            **os.environ,
            **airflow_env(self.home, auth=auth),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            # the report task writes the run's note through the REST API as this user
            "AIRFLOW_CONN_AIRFLOW_API": json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": self.port,
                    "login": self.user,
                    "password": self.password,
                    "extra": {"retry_budget": 30, "timeout": 30},
                }
            ),
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True
        )
        if check and done.returncode:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def start(self, timeout: float = 120) -> None:
        self.airflow("db", "migrate")  # with the FAB auth manager this creates FAB's tables too
        if self.auth == "fab":
            self._fab_setup()
        logs = self.home / "process-logs"
        logs.mkdir(exist_ok=True)
        for name in COMPONENTS:
            out = (logs / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).ok:
                    return
            except requests.RequestException:  # not up yet, or a slow first answer on a busy machine
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Airflow API did not answer within {timeout:.0f}s; see {logs}")

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited ({proc.returncode}); see {self.home}/process-logs/{name}.log"
                )

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()

    # -- FAB auth manager ----------------------------------------------------------------------
    def _fab_setup(self) -> None:
        """Brand roles first (a DAG whose access_control names a missing role fails to store:
        DagAccessControlValidationError), then the admin the runner's own API calls use."""
        from mailsync.brands import load_brands

        include = self.env.get("MAILSYNC_INCLUDE_DIR")
        roles = [b.access_role for b in load_brands(Path(include) if include else None) if b.access_role]
        if roles:
            self.airflow("roles", "create", *roles)  # existing roles are left as they are
        self.add_user(self.user, "Admin", self.password)

    def add_user(self, username: str, role: str, password: str | None = None) -> str:
        """An FAB user with one role (`airflow users create`); returns its password."""
        if self.auth != "fab":
            raise RuntimeError("add_user needs LocalAirflow(..., auth='fab')")
        password = password or secrets.token_urlsafe(12)
        done = self.airflow(
            "users", "create", "--username", username, "--password", password, "--role", role,
            "--email", f"{username}@mailsync.invalid", "--firstname", username, "--lastname", role,
            check=False,
        )  # fmt: skip
        if done.returncode and "already exist" not in done.stdout + done.stderr:
            output = done.stdout[-1000:] + done.stderr[-2000:]
            raise RuntimeError(f"airflow users create {username} exited {done.returncode}:\n{output}")
        return password

    def token_for(self, username: str, password: str) -> str:
        """A JWT from `POST /auth/token`: the same route under the simple and the FAB auth manager."""
        response = requests.post(
            f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        response.raise_for_status()
        return response.json()["access_token"]

    # -- REST API ----------------------------------------------------------------------------
    @property
    def token(self) -> str:
        """A JWT of the admin user, as `POST /auth/token` gives any API client."""
        if self._token is None:
            self._token = self.token_for(self.user, self.password)
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method,
            f"{self.url}/api/v2/{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kwargs,
        )
        if not response.ok:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.api("GET", f"dags/{dag_id}/details")  # 404 until the serialized DAG is stored
                return
            except RuntimeError:
                time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f}s")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, *, logical_date: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.api("GET", f"dags/{dag_id}/dagRuns/{_quote(run_id)}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id} did not finish within {timeout:.0f}s")

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.api("GET", path)["value"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        items = self.api("GET", f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances")["task_instances"]
        return {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in items}


def _quote(run_id: str) -> str:
    return requests.utils.quote(run_id, safe="")
