"""A task's links to its run's files for people: Quality report, Quarantine, Rejected records,
Revenue report, on the task's page in the UI.

Each step operator declares the links of the files it writes (`operator_extra_links`). When a
task ends, succeeded or failed, Airflow 3's task runner asks each of its links for the URL
(`get_link`, on the worker) and stores it as the link's XCom, which is all the api-server reads:
so a link appears once its file holds a row, and a failed quality gate shows its report. The URL
points at the mailsync plugin's app (mailsync.run_files), which serves the file from staging to
logged-in users only. In the UI: the task's Details tab, "Extra Links".
"""

from __future__ import annotations

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
    """A task's link to one kind of its run's files (empty, no button, where it wrote none)."""

    kind: ClassVar[str]

    @property
    def name(self) -> str:
        return KINDS[self.kind][0]

    def url(self, dag_id: str, run_id: str) -> str:
        return f"{ui_url()}/mailsync/runs/{quote(dag_id)}/{quote(run_id, safe='')}/{self.kind}"

    def get_link(self, operator, *, ti_key) -> str:
        """Called on the worker as the task ends, with its task instance (see the module)."""
        from mailsync.operators.run import Run

        run = Run.from_context(ti_key.get_template_context())
        return self.url(run.dag_id, run.run_id) if self.written(Path(run.area.path.path)) else ""

    def written(self, folder: Path) -> bool:
        return any(_worth_a_look(p) for p in files_of(self.kind, folder))


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
    """The operator's links whose files the run folder holds, with their URLs (for messages)."""
    links = [link for link in operator.operator_extra_links if isinstance(link, RunFileLink)]
    return [(link, link.url(dag_id, run_id)) for link in links if link.written(folder)]
