"""`make demo`: the nightly CRM -> ESP sync on the embedded default, against the local sandbox.

Starts the sandbox vendors, a project-local Airflow (SQLite metadata DB, LocalExecutor, each
component its own process), triggers `crm_to_esp_contacts` for the sandbox's last night with a
full refresh, waits for it and prints its report. With DEMO_ONCE=1 (or no terminal) it then
stops everything and exits; otherwise the UI stays up until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from devtools.local_airflow import LocalAirflow, free_port
from sandbox import Sandbox

PROJECT = Path(__file__).resolve().parent.parent
DEMO = PROJECT / ".demo"
DAG_ID = "crm_to_esp_contacts"
NIGHT = "2026-11-20T02:00:00+00:00"  # the sandbox's data is generated up to 2026-11-20


def main() -> int:
    once = os.environ.get("DEMO_ONCE") == "1" or not sys.stdin.isatty()
    contacts = int(os.environ.get("DEMO_CONTACTS", "2000"))
    started = time.monotonic()
    print(f"mailsync demo: sandbox with {contacts} generated contacts, Airflow under {DEMO}")
    sandbox = Sandbox.start(DEMO / "sandbox", seed=42, contacts=contacts, days=7, parent_pid=os.getpid())
    env = {f"AIRFLOW_CONN_{k.upper()}": v for k, v in sandbox.airflow_connections().items()}
    env["MAILSYNC_STAGING_URL"] = (DEMO / "staging").as_uri()
    env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # only the run we trigger, no scheduled ones
    airflow = LocalAirflow(DEMO / "airflow", env=env, port=free_port(8080))
    try:
        airflow.start()
        print(f"Airflow is up at {airflow.url} (user {airflow.user}, password {airflow.password})")
        airflow.wait_for_dag(DAG_ID)
        airflow.unpause(DAG_ID)
        conf = {"full_refresh": True, "loyalty_wait_minutes": 0}
        run_id = airflow.trigger(DAG_ID, logical_date=NIGHT, conf=conf)
        print(f"Triggered {DAG_ID} run {run_id} (full refresh); waiting ...")
        state = airflow.wait_for_run(DAG_ID, run_id)
        if state != "success":
            failed = {t: s for t, s in airflow.task_states(DAG_ID, run_id).items() if s != "success"}
            print(f"Run {state}: {failed}. Task logs: {airflow.home / 'logs'}", file=sys.stderr)
            return 1
        report = airflow.xcom(DAG_ID, run_id, "report")
        print(json.dumps(report, indent=2))
        print(
            f"\nDone in {time.monotonic() - started:.0f}s. Where to look:\n"
            f"  UI:             {airflow.url}/dags/{DAG_ID}\n"
            f"                  (user {airflow.user}, password {airflow.password})\n"
            f"  quality report: {report.get('quality_report')}\n"
            f"  quarantine:     {report.get('quarantine_file')}\n"
            f"  task logs:      {airflow.home / 'logs'}\n"
            f"  ESP end state:  sandbox DB {sandbox.info['db_path']}"
        )
        if not once:
            print("The UI stays up; Ctrl-C stops Airflow and the sandbox.")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        airflow.stop()
        sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
