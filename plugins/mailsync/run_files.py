"""A run's files for people, linked from its tasks: Quality report, Quarantine, Rejected
records, Revenue report.

The files sit in staging (a worker's disk on one machine, a shared volume under Celery), so the
api-server serves them itself: a FastAPI app of the mailsync plugin (plugins/mailsync_plugin.py)
at `/mailsync/runs/<dag>/<run>/<kind>`. They hold personal data, so only a logged-in user who may
see the DAG's task instances gets them (Airflow's own `requires_access_dag`, the session cookie
of the UI or a bearer token), and nothing is cached. The links on the task pages are the step
operators' (mailsync.links).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from mailsync.links import KINDS, files_of

HEADERS = {
    "Cache-Control": "no-store",  # personal data: not in any browser or proxy cache
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
}

app = FastAPI(
    title="mailsync run files",
    description="Quality reports, quarantine and rejected records, revenue pages of a DAG run.",
)


def _requires_task_instance_access():
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.TASK_INSTANCE))


def _run_folder(dag_id: str, run_id: str) -> Path:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from mailsync.staging import run_area

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one_or_none()
        if run is None:
            raise HTTPException(404, f"No run {run_id!r} of DAG {dag_id!r}")
        start, end = run.data_interval_start, run.data_interval_end
    return Path(run_area(dag_id, start, end).path.path)


def _serve(path: Path) -> FileResponse:
    if path.suffix == ".html":
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=HEADERS)
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=path.name, headers=HEADERS)


AccessDep = Annotated[None, _requires_task_instance_access()]


@app.get("/runs/{dag_id}/{run_id}/file/{relative:path}")
def run_file(dag_id: str, run_id: str, relative: str, _: AccessDep) -> FileResponse:
    """One file of a run's folder, if it is one of the kinds' files (never a Parquet extract)."""
    folder = _run_folder(dag_id, run_id)
    allowed = {p for kind in KINDS for p in files_of(kind, folder)}
    path = (folder / relative).resolve()
    if path not in {p.resolve() for p in allowed}:
        raise HTTPException(404, "No such report file in this run")
    return _serve(path)


@app.get("/runs/{dag_id}/{run_id}/{kind}", response_model=None)
def run_files(dag_id: str, run_id: str, kind: str, _: AccessDep) -> FileResponse | HTMLResponse:
    """The run's file of this kind, or a list when there are several (one per source or partition)."""
    if kind not in KINDS:
        raise HTTPException(404, f"Unknown kind {kind!r}; known: {', '.join(KINDS)}")
    label = KINDS[kind][0]
    folder = _run_folder(dag_id, run_id)
    found = files_of(kind, folder)
    if not found:
        raise HTTPException(
            404,
            f"No {label.lower()} in this run: the task did not get that far, or retention has "
            "deleted it (include/retention.yaml).",
        )
    if len(found) == 1:
        return _serve(found[0])
    from mailsync.templates import render

    links = [(str(p.relative_to(folder)), f"file/{quote(str(p.relative_to(folder)))}") for p in found]
    html = render("run_files.html", title=f"{label}: {dag_id} {run_id}", links=links)
    return HTMLResponse(html, headers=HEADERS)
