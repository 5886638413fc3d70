"""Where mailsync finds its configuration and keeps its files. Read at run time, never at parse.

Defaults suit the embedded demo (everything under AIRFLOW_HOME); production sets
MAILSYNC_STAGING_URL to shared storage (a volume every worker mounts, or s3://...) and defines
the `mailsync_state` connection (PostgreSQL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict

PROJECT_DIR = Path(__file__).resolve().parents[2]
INCLUDE_DIR = Path(os.environ.get("MAILSYNC_INCLUDE_DIR", PROJECT_DIR / "include"))
MAPPINGS_DIR = INCLUDE_DIR / "mappings"
STATE_CONN_ID = "mailsync_state"
# Records are spread over this many key buckets (stable hash of the key). A run's partitions
# (dynamic task mapping) each take a set of buckets, so the result never depends on how many
# partitions there are; it caps the useful partitions at this number. The sync state stores
# each record's bucket: changing this number needs the state re-bucketed (or emptied and a
# full refresh), else one key would be "removed" in one partition and "new" in another.
BUCKETS = 32
CHUNK_ROWS = 100_000  # rows per staged Parquet file: the unit of memory of every step


def task_defaults() -> dict:
    """default_args of every task: retries, a deployment knob (env: e.g. short delays in tests,
    so a failing run fails in seconds rather than waiting out production back-off), and one
    notification when a task fails after its last retry (mailsync.notifications)."""
    from mailsync.notifications import FailureNotifier

    return {
        "on_failure_callback": FailureNotifier(),
        "retries": int(os.environ.get("MAILSYNC_TASK_RETRIES", "3")),
        "retry_delay": timedelta(seconds=float(os.environ.get("MAILSYNC_TASK_RETRY_DELAY_S", "120"))),
        "retry_exponential_backoff": True,
    }


def run_lock_ttl_s() -> float:
    """How long a run lease lasts after its last renewal (see mailsync.operators.lock); longer
    than any task's execution_timeout, since each task renews it when it starts."""
    return float(os.environ.get("MAILSYNC_RUN_LOCK_TTL_S", str(3 * 3600)))


RETENTION_FILE = "retention.yaml"  # in INCLUDE_DIR; MAILSYNC_RETENTION_FILE names another one


@dataclass(frozen=True)
class Retention:
    """How long personal data stays in our staging (include/retention.yaml, enforced daily by
    the mailsync_retention DAG). Run folders hold full extracts; quarantine and rejected files
    hold raw bad rows by design, so they go sooner; a recorded erasure must be applied to every
    copy we keep within `erasure_days`."""

    run_days: int
    quarantine_days: int
    erasure_days: int


def retention() -> Retention:
    """The retention policy, checked: a day at least for run folders (never tonight's), and
    quarantine files not kept longer than the run folders that contain them."""
    import yaml

    path = Path(os.environ.get("MAILSYNC_RETENTION_FILE") or INCLUDE_DIR / RETENTION_FILE)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(raw) - {"version", "run_days", "quarantine_days", "erasure_days"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    policy = Retention(int(raw["run_days"]), int(raw["quarantine_days"]), int(raw["erasure_days"]))
    if policy.run_days < 1 or policy.quarantine_days < 1 or policy.erasure_days < 1:
        raise ValueError(f"{path}: every retention must be at least 1 day: {policy}")
    if policy.quarantine_days > policy.run_days:
        raise ValueError(f"{path}: quarantine_days {policy.quarantine_days} > run_days {policy.run_days}")
    return policy


NOTIFICATIONS_FILE = "notifications.yaml"  # in INCLUDE_DIR; MAILSYNC_NOTIFICATIONS_FILE names another one


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conn_id: str
    to: list[str] = []


class Notifications(BaseModel):
    """Unknown keys are an error, so a typo never silences on-call."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    email: Channel | None = None
    webhook: Channel | None = None
    deadlines: dict[str, timedelta] = {}


def notifications() -> Notifications:
    """Notification channels and deadlines (include/notifications.yaml)."""
    import yaml

    path = Path(os.environ.get("MAILSYNC_NOTIFICATIONS_FILE") or INCLUDE_DIR / NOTIFICATIONS_FILE)
    try:
        return Notifications.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


# Schemes whose filesystem is installed and tested. Every worker must see the same files: on
# several machines a file:// root is a volume each of them mounts at the same path.
STAGING_SCHEMES = ("file",)


class StagingNotSupported(ValueError):
    """MAILSYNC_STAGING_URL names storage this project does not install or test."""


def staging_url() -> str:
    """Root URL of the staging area; one folder per DAG and data interval. Checked here, so a
    DAG file that calls it at parse time shows a wrong setting as its import error at once,
    rather than a task failing at its first write."""
    url = os.environ.get("MAILSYNC_STAGING_URL") or (airflow_home() / "mailsync-staging").as_uri()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in STAGING_SCHEMES:
        raise StagingNotSupported(
            f"MAILSYNC_STAGING_URL has scheme {scheme or '(none)'!r}; supported: "
            + ", ".join(f"{s}://" for s in STAGING_SCHEMES)
            + " (a folder every worker mounts at the same path, e.g. file:///opt/mailsync-staging). "
            "Object stores need their fsspec filesystem and Airflow provider installed and tested first."
        )
    return url
