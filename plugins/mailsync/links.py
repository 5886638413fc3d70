"""A task's links to its run's files for people: Quality report, Quarantine, Rejected records,
Revenue report, on the task's page in the UI.

Each step operator declares the links of the files it writes (`operator_extra_links`) and
publishes them when it ends, succeeded or failed (`publish_links`): a link appears once its file
exists, so a failed quality gate shows its report. The URL (stored as the link's XCom, which is
how Airflow 3's api-server reads an operator's links) points at the mailsync plugin's app
(mailsync.run_files), which serves the file from staging to logged-in users only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from airflow.sdk.bases.operatorlink import BaseOperatorLink

# kind -> (link name, files of the run folder it means)
KINDS: dict[str, tuple[str, str]] = {
    "quality-report": ("Quality report", "quality/*/report.html"),
    "quarantine": ("Quarantine", "quality/*/quarantine.csv"),
    "rejected": ("Rejected records", "load/**/rejected*.csv"),
    "revenue": ("Revenue report", "report/revenue.html"),
}


def ui_url() -> str:
    """Where people open Airflow (`[api] base_url`), for links that leave the UI (messages)."""
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")


def files_of(kind: str, folder: Path) -> list[Path]:
    """The run folder's files of one kind (several: one per source or partition)."""
    return sorted(p for p in folder.glob(KINDS[kind][1]) if p.is_file())


class RunFileLink(BaseOperatorLink):
    """A task's link to one kind of its run's files; the URL is the task's XCom under this
    link's key, published by the task (empty, no button, until then)."""

    kind: ClassVar[str]

    @property
    def name(self) -> str:
        return KINDS[self.kind][0]

    def url(self, dag_id: str, run_id: str) -> str:
        return f"{ui_url()}/mailsync/runs/{quote(dag_id)}/{quote(run_id, safe='')}/{self.kind}"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""


class QualityReportLink(RunFileLink):
    kind = "quality-report"


class QuarantineLink(RunFileLink):
    kind = "quarantine"


class RejectedRecordsLink(RunFileLink):
    kind = "rejected"


class RevenueReportLink(RunFileLink):
    kind = "revenue"


QUALITY = (QualityReportLink(), QuarantineLink())
REJECTED = (RejectedRecordsLink(),)
REVENUE = (RevenueReportLink(),)
ALL = (*QUALITY, *REJECTED, *REVENUE)


def _worth_a_look(path: Path) -> bool:
    """A CSV with no row below its header (nothing quarantined, nothing refused) is no link."""
    if path.suffix != ".csv":
        return True
    with path.open("rb") as f:
        f.readline()  # the header
        return bool(f.readline().strip())


def existing_links(operator: Any, dag_id: str, run_id: str, folder: Path) -> list[tuple[RunFileLink, str]]:
    """The operator's links whose files exist in the run folder (and hold a row), with their URLs."""
    links = [link for link in operator.operator_extra_links if isinstance(link, RunFileLink)]
    return [
        (link, link.url(dag_id, run_id))
        for link in links
        if any(_worth_a_look(p) for p in files_of(link.kind, folder))
    ]


@contextmanager
def publish_links(context: Any, operator: Any) -> Iterator[None]:
    """Around a step's work: afterwards, whether it succeeded or failed, store the URL of each
    of its links whose file now exists (what the task's page shows)."""
    try:
        yield
    finally:
        from mailsync.operators.run import Run

        run = Run.from_context(context)
        for link, url in existing_links(operator, run.dag_id, run.run_id, Path(run.area.path.path)):
            context["ti"].xcom_push(key=link.xcom_key, value=url)
