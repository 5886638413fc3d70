"""`make demo`: one night of mailsync on the embedded default, against the local sandbox.

Starts the sandbox vendors (a freshly generated world) and a project-local Airflow (SQLite
metadata DB, LocalExecutor, each component its own process) under a fresh .demo/, and runs the
night's chain for the sandbox's last day, each DAG unpaused and waited for:

1. `crm_to_esp_contacts`, full refresh: the audience (updates the contacts Asset);
2. `shop_conversions_to_esp`: that day's orders of those members, buyer totals (the orders Asset);
3. `esp_buyer_segments`, scheduled on both Assets: tags the buyers over 100 EUR.

The scheduler runs with its job schedule off (`USE_JOB_SCHEDULE=False`): unpaused, the daily
DAGs would otherwise start scheduled runs for every day from their start_date to today, while
the sandbox's world ends on 2026-11-20. That switch also stops the runs the scheduler makes from
Asset events (both are made in `SchedulerJobRunner._create_dagruns_for_dags`), so the demo plays
the scheduler's part for step 3: it waits until both Assets are queued for esp_buyer_segments,
triggers the run and clears the queue, as the scheduler does when it creates an Asset-triggered run.

It prints each run's outcome, the run pages and the notifications in the sandbox's mail sink.
With DEMO_ONCE=1 (or no terminal) it then stops everything and exits; otherwise the UI stays up
until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from devtools.local_airflow import LocalAirflow, free_port
from sandbox import Sandbox

PROJECT = Path(__file__).resolve().parent.parent
DEMO = PROJECT / ".demo"
# The sandbox's generated world ends on 2026-11-20 00:00 UTC; each DAG runs the interval that ends
# then (the nightly's interval ends at its 02:00 tick).
FULL_REFRESH = {"full_refresh": True, "loyalty_wait_minutes": 0}
CONTACTS = ("crm_to_esp_contacts", "2026-11-20T02:00:00+00:00", FULL_REFRESH)
SHOP = ("shop_conversions_to_esp", "2026-11-20T00:00:00+00:00", {})
SEGMENTS = ("esp_buyer_segments", "2026-11-20T06:00:00+00:00", {})  # after both, as the schedule would
REPORT_TASK = {CONTACTS[0]: "report", SHOP[0]: "report", SEGMENTS[0]: "refresh_segment"}


def main() -> int:
    once = os.environ.get("DEMO_ONCE") == "1" or not sys.stdin.isatty()
    contacts = int(os.environ.get("DEMO_CONTACTS", "2000"))
    started = time.monotonic()
    _fresh_demo_dir()
    print(f"mailsync demo: sandbox with {contacts} generated contacts, Airflow under {DEMO}")
    sandbox = Sandbox.start(DEMO / "sandbox", seed=42, contacts=contacts, days=7, parent_pid=os.getpid())
    env = {f"AIRFLOW_CONN_{k.upper()}": v for k, v in sandbox.airflow_connections().items()}
    env["MAILSYNC_STAGING_URL"] = (DEMO / "staging").as_uri()
    env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # only the runs the demo starts (docstring)
    airflow = LocalAirflow(DEMO / "airflow", env=env, port=free_port(8080))
    try:
        airflow.start()
        print(f"Airflow is up at {airflow.url} (user {airflow.user}, password {airflow.password})")
        for dag_id in REPORT_TASK:
            airflow.wait_for_dag(dag_id)
            airflow.unpause(dag_id)
        runs: dict[str, tuple[str, str]] = {}
        ok = _run(airflow, *CONTACTS, runs) and _run(airflow, *SHOP, runs)
        if ok:
            _wait_for_assets(airflow, SEGMENTS[0])
            ok = _run(airflow, *SEGMENTS, runs)
            airflow.api("DELETE", f"dags/{SEGMENTS[0]}/assets/queuedEvents")  # consumed by that run
        _where_to_look(airflow, sandbox, runs, time.monotonic() - started, failed=not ok)
        if not ok:
            return 1
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


def _fresh_demo_dir() -> None:
    """Each demo generates the sandbox's world anew, so the sync state and staging (and the run
    history, whose logical dates would clash) start anew too; a demo still running keeps its own."""
    ready = DEMO / "sandbox" / "ready.json"
    if ready.exists():
        pid = json.loads(ready.read_text())["pid"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pass
        else:
            sys.exit(f"A demo is still running (sandbox pid {pid}): stop it (Ctrl-C) first.")
    shutil.rmtree(DEMO, ignore_errors=True)


def _run(airflow: LocalAirflow, dag_id: str, logical_date: str, conf: dict, runs: dict) -> bool:
    """Trigger one run, wait for it, print its outcome and report; True if it succeeded."""
    run_id = airflow.trigger(dag_id, logical_date=logical_date, conf=conf)
    print(f"\nTriggered {dag_id} run {run_id}; waiting ...")
    t0 = time.monotonic()
    state = airflow.wait_for_run(dag_id, run_id)
    runs[dag_id] = (run_id, state)
    print(f"{dag_id}: {state} in {time.monotonic() - t0:.0f}s")
    if state != "success":
        failed = {t: s for t, s in airflow.task_states(dag_id, run_id).items() if s != "success"}
        print(f"  not successful: {failed}. Task logs: {airflow.home / 'logs'}", file=sys.stderr)
        return False
    print(_indent(json.dumps(airflow.xcom(dag_id, run_id, REPORT_TASK[dag_id]), indent=2)))
    return True


def _wait_for_assets(airflow: LocalAirflow, dag_id: str, timeout: float = 60) -> None:
    """Until every Asset the DAG is scheduled on has an event queued for it: the scheduler's condition."""
    assets = airflow.api("GET", "assets", params={"dag_ids": dag_id})["assets"]
    wanted = {a["id"]: a["name"] for a in assets if any(d["dag_id"] == dag_id for d in a["scheduled_dags"])}
    deadline = time.monotonic() + timeout
    while True:
        events = airflow.api("GET", f"dags/{dag_id}/assets/queuedEvents")["queued_events"]
        missing = sorted(name for i, name in wanted.items() if i not in {e["asset_id"] for e in events})
        if wanted and not missing:
            print(f"\n{dag_id} is due: its Assets {', '.join(sorted(wanted.values()))} are updated.")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id}: no queued event of {missing or 'any Asset'} within {timeout:.0f}s")
        time.sleep(1)


def _where_to_look(airflow: LocalAirflow, sandbox: Sandbox, runs: dict, elapsed: float, failed: bool) -> None:
    mail = sandbox.mail()
    for _ in range(30 if failed else 0):  # a failed run's message is sent by its callback, moments later
        if mail:
            break
        time.sleep(1)
        mail = sandbox.mail()
    admin = f"http://{sandbox.info['host']}:{sandbox.info['ports']['esp']}/_sandbox/mail"
    contacts = runs.get(CONTACTS[0])
    report = airflow.xcom(CONTACTS[0], contacts[0], "report") if contacts and contacts[1] == "success" else {}
    print(f"\nDone in {elapsed:.0f}s. Where to look (UI user {airflow.user}, password {airflow.password}):")
    for dag_id, (run_id, state) in runs.items():
        print(f"  {dag_id + ':':27} {state:8} {airflow.url}/dags/{dag_id}/runs/{run_id}")
    print(
        f"  notifications:              {len(mail)} message(s) in the sandbox's mail sink, SMTP "
        f"{sandbox.info['host']}:{sandbox.info['ports']['smtp']}\n"
        "                              (one per failed run, run with warnings or missed deadline:"
        " include/notifications.yaml)\n"
        f"                              list them while the demo runs: curl -s {admin}\n"
        f"                              or Sandbox.attach('{DEMO / 'sandbox'}').mail() (sandbox/README.md)"
    )
    for message in mail:
        print(f"                              - {message['subject']}")
    if report:
        print(
            f"  quality report:             {report.get('quality_report')}\n"
            f"  quarantine:                 {report.get('quarantine_file')}"
        )
    print(
        f"  task logs:                  {airflow.home / 'logs'}\n"
        f"  vendors' end state:         sandbox DB {sandbox.info['db_path']}"
    )


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
