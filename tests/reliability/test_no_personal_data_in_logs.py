"""No credential and no clear-text email in task logs, XComs, rendered templates or reports.

A demo night is run the way the tests run DAGs: the nightly contacts DAG (full refresh) and one
engagement day, through dag.test(). Where the logs are: dag.test() writes no task log files
(AIRFLOW_HOME/logs stays empty); its tasks log through the same structlog pipeline the file
handler of a scheduled task uses, to this process's stdout, so the suite captures that output
(capfd) with the mailsync, task and HTTP-provider loggers at DEBUG (the level someone debugging
a night would set; the HTTP provider logs whole URLs there). dag.test() also does not mask
connection secrets the way a supervised task does (shared/PITFALLS.md), so a secret that a
hook logs shows here even where production would print `***`: the stricter place to look.

Scanned: that output; XCom values, rendered template fields and run conf in the metadata
database; every text file in the runs' staging (report.json, report.html, markers, CSVs) except
quarantine and rejected files, which must hold the rows they quarantine (their count is
reported, and they must not be readable by every user of the machine). Parquet files are the
data itself (extracts and snapshots hold the contacts, emails included, by design); they are
counted, not scanned. Looked for: every password / API key of the sandbox connections, and
every email address of a CRM contact, in any case (masked forms such as j***@e***.com and
hashes are fine).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.integration.dags import dagrun
from tests.reliability.checker import Outcome
from tests.reliability.conftest import run_dag

pytestmark = pytest.mark.slow
EMAILISH = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
DEBUG_LOGGERS = ("mailsync", "airflow.task", "airflow.providers.http", "urllib3", "great_expectations")
PEOPLE_FILES = ("quarantine", "rejected")


def _secrets(sandbox) -> set[str]:
    found = set()
    for value in sandbox.airflow_connections().values():
        conn = json.loads(value)
        if conn.get("password"):
            found.add(conn["password"])
    return found


def _emails(sandbox) -> set[str]:
    out = set()
    for c in sandbox.crm_contacts(archived=True) + sandbox.crm_contacts():
        email = (c["properties"].get("email") or "").strip().lower()
        if "@" in email:
            out.add(email)
    return out


def _hits(text: str, secrets: set[str], emails: set[str]) -> tuple[list[str], list[str]]:
    lowered = text.lower()
    leaked_emails = sorted({m.group(0).lower() for m in EMAILISH.finditer(text)} & emails)
    # an email that holds a character the pattern above stops at (spaces, quotes): search plainly
    leaked_emails += sorted(e for e in emails if not EMAILISH.fullmatch(e) and e in lowered)
    return [s for s in secrets if s in text], leaked_emails


def _metadata_texts() -> dict[str, str]:
    """XComs, rendered templates, run conf and notes from the session's metadata DB."""
    db = Path(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    texts = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for table, column in (
            ("xcom", "value"),
            ("rendered_task_instance_fields", "rendered_fields"),
            ("dag_run", "conf"),
            ("dag_run_note", "content"),
            ("task_instance_note", "content"),
        ):
            try:
                rows = conn.execute(f"SELECT {column} FROM {table}").fetchall()
            except sqlite3.OperationalError:
                continue
            texts[table] = "\n".join(
                r[0].decode("utf-8", "replace") if isinstance(r[0], bytes) else str(r[0])
                for r in rows
                if r[0]
            )
    return texts


def test_a_demo_night_leaks_no_secret_and_no_email(
    vendors, airflow_db, tmp_path, capfd, recorder, clock, session_home
):
    dagrun.isolate(tmp_path)
    levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    for name in DEBUG_LOGGERS[:4]:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        contacts = run_dag(
            "crm_to_esp_contacts", "2026-11-20T02:00:00Z", capfd, full_refresh=True, loyalty_wait_minutes=0
        )
        engagement = run_dag("esp_to_crm_engagement", "2026-11-19T00:00:00Z", capfd)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    output = capfd.readouterr().out
    assert contacts.state == "success" and engagement.state == "success"
    secrets, emails = _secrets(vendors), _emails(vendors)
    assert len(secrets) == 4 and len(emails) > 900

    sources: dict[str, str] = {"task logs (dag.test output, DEBUG)": output}
    sources.update({f"metadata DB: {t}": text for t, text in _metadata_texts().items()})
    staging = tmp_path / "staging"
    people_files, parquet, open_to_all = [], 0, []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = str(path.relative_to(staging))
        if path.suffix == ".parquet":
            parquet += 1
            continue
        if any(k in path.name or k in rel for k in PEOPLE_FILES):
            people_files.append(rel)
            if path.stat().st_mode & stat.S_IROTH:
                open_to_all.append(rel)
            continue
        sources[f"staging: {rel}"] = path.read_bytes().decode("utf-8", "replace")
    leaks = {}
    for where, text in sources.items():
        s, e = _hits(text, secrets, emails)
        if s or e:
            leaks[where] = {"secrets": len(s), "emails": len(e)}
    outcome = Outcome(
        case="secrets and emails in logs, XComs, rendered templates, staging reports",
        group="contacts full night + engagement day",
        inputs=f"{len(secrets)} secrets, {len(emails)} emails; {len(sources)} texts scanned "
        f"({len(output) // 1024} KiB of task log), {parquet} Parquet files not scanned",
        runs=2,
        expected=len(sources),
        found=len(sources) - len(leaks),
        lost=len(leaks),
        outcome="no leak" if not leaks else "leaks: " + "; ".join(f"{w}: {n}" for w, n in leaks.items()),
    )
    outcome.details = {"people_files": len(people_files), "people_files_readable_by_all": open_to_all}
    outcome.passed = not leaks
    recorder.record(outcome, clock)
    assert people_files, "the night quarantined rows; their files must exist"
    assert not leaks, leaks
