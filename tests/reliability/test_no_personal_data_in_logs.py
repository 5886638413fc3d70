"""No credential and no clear-text email in task logs, XComs, rendered templates or reports.

A demo night is run the way the tests run DAGs: the nightly contacts DAG (full refresh) and one
engagement day, through dag.test(). Where the logs are: dag.test() writes no task log files
(AIRFLOW_HOME/logs stays empty); its tasks log through the same structlog pipeline the file
handler of a scheduled task uses, to this process's stdout; the suite redirects that file
descriptor into a file, with Airflow's logging configured at DEBUG for the two runs (the level
someone debugging a night would set; the HTTP provider and urllib3 log whole URLs there; the
count of DEBUG lines that came through is in the result row). dag.test() also does not mask
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
import sys
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


@pytest.fixture(scope="module")
def demo_night(sandbox, connections, airflow_db, tmp_path_factory):
    """The contacts night and an engagement day, their output captured at the file descriptor
    (dag.test() prints every task's log lines to stdout)."""
    sandbox.reset(seed=42, contacts=1000, days=7)
    folder = tmp_path_factory.mktemp("demo-night")
    dagrun.isolate(folder)
    levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    for name in DEBUG_LOGGERS[:4]:
        logging.getLogger(name).setLevel(logging.DEBUG)
    log_file = folder / "dag-test-output.log"
    saved = os.dup(1)
    sys.stdout.flush()
    from airflow.sdk.log import configure_logging

    with log_file.open("w", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)  # whatever writes to the descriptor itself
        sys.stdout, stdout = sink, sys.stdout  # the task loggers print to sys.stdout
        configure_logging(log_level="DEBUG", output=sink, cache_logger_on_first_use=False)
        try:
            contacts = run_dag(
                "crm_to_esp_contacts", "2026-11-20T02:00:00Z", full_refresh=True, loyalty_wait_minutes=0
            )
            engagement = run_dag("esp_to_crm_engagement", "2026-11-19T00:00:00Z")
        finally:
            sys.stdout.flush()
            sys.stdout = stdout
            configure_logging(output=stdout)  # the session's own level and stream again
            os.dup2(saved, 1)
            os.close(saved)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
    assert contacts.state == "success" and engagement.state == "success"
    return {
        "output": log_file.read_text(encoding="utf-8", errors="replace"),
        "staging": folder / "staging",
        "sandbox": sandbox,
    }


def _people_files(staging: Path) -> list[Path]:
    return [
        p
        for p in sorted(staging.rglob("*"))
        if p.is_file()
        and p.suffix != ".parquet"
        and any(k in str(p.relative_to(staging)) for k in PEOPLE_FILES)
    ]


def test_a_demo_night_leaks_no_secret_and_no_email(demo_night, recorder, clock):
    output, staging, sb = demo_night["output"], demo_night["staging"], demo_night["sandbox"]
    secrets, emails = _secrets(sb), _emails(sb)
    assert len(secrets) >= 5 and len(emails) > 900  # four vendors and the mail sink

    # Airflow itself (3.3.2, execution_time/supervisor.py) logs every secret-masking request at
    # DEBUG as `Sending request ... MaskSecret(value='<the secret>')`: upstream, not mailsync code;
    # counted apart (the reason [logging] logging_level must stay at INFO in production)
    upstream = [line for line in output.splitlines() if "MaskSecret(value=" in line]
    upstream_secrets = {x for x in secrets if any(x in line for line in upstream)}
    output = "\n".join(line for line in output.splitlines() if "MaskSecret(value=" not in line)
    sources: dict[str, str] = {"task logs (dag.test output)": output}
    sources["notifications (the mail sink)"] = json.dumps(sb.mail(), ensure_ascii=False)
    sources.update({f"metadata DB: {t}": text for t, text in _metadata_texts().items()})
    people, parquet = set(_people_files(staging)), 0
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            parquet += 1
        elif path not in people:
            sources[f"staging: {path.relative_to(staging)}"] = path.read_bytes().decode("utf-8", "replace")
    leaks = {}
    for where, text in sources.items():
        s, e = _hits(text, secrets, emails)
        if s or e:
            leaks[where] = {"secrets": len(s), "emails": len(e)}
    debug_lines = sum(1 for line in output.splitlines() if "[debug" in line)
    outcome = Outcome(
        case="secrets and emails in logs, XComs, rendered templates, staging reports",
        group="contacts full night + engagement day",
        inputs=f"{len(secrets)} secrets, {len(emails)} emails; {len(sources)} texts scanned "
        f"({len(output) // 1024} KiB of task log, {debug_lines} DEBUG lines), "
        f"{parquet} Parquet files and {len(people)} quarantine/rejected files not scanned",
        runs=2,
        expected=len(sources),
        found=len(sources) - len(leaks),
        lost=len(leaks),
        outcome=("no leak" if not leaks else "leaks: " + "; ".join(f"{w}: {n}" for w, n in leaks.items()))
        + (
            f"; Airflow's own DEBUG line `MaskSecret(value=...)` shows {len(upstream_secrets)} of the "
            f"{len(secrets)} secrets ({len(upstream)} lines): keep logging_level at INFO"
            if upstream
            else ""
        ),
    )
    outcome.passed = not leaks
    recorder.record(outcome, clock)
    assert people, "the night quarantined rows; their files must exist"
    assert not leaks, leaks


def test_quarantine_and_rejected_files_are_not_readable_by_everyone(demo_night, recorder, clock):
    """They must hold emails (that is their use); so only the service account may read them."""
    staging = demo_night["staging"]
    people = _people_files(staging)
    open_to_all = [str(p.relative_to(staging)) for p in people if p.stat().st_mode & stat.S_IROTH]
    recorder.record(
        Outcome(
            case="quarantine and rejected files access-controlled",
            group="contacts full night + engagement day",
            inputs=f"{len(people)} files holding personal data",
            expected=len(people),
            found=len(people) - len(open_to_all),
            lost=len(open_to_all),
            outcome="none readable by every user"
            if not open_to_all
            else f"{len(open_to_all)} readable by every user of the machine (mode o+r)",
            passed=not open_to_all,
        ),
        clock,
    )
    assert people
    assert not open_to_all, open_to_all
