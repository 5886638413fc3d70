"""HubSpot's CRM exports API: start an export, poll its task, download the file.

As HubSpot documents it (CRM API "Exports" guide and the v3 reference): ``POST
/crm/v3/exports/export/async`` with ``exportType`` (VIEW or LIST), ``format``, ``exportName``,
``objectType``, ``objectProperties``, ``language``, ``exportInternalValuesOptions`` and, for a
view, ``publicCrmSearchRequest`` (filters, sorts, query) answers 202 with ``{"id", "links":
{"status"}}``; ``GET /crm/v3/exports/export/async/tasks/{id}/status`` answers ``status``
(PENDING, PROCESSING, COMPLETE or CANCELED), ``requestedAt``, ``startedAt``, ``completedAt``,
``numErrors``/``errors`` and, when COMPLETE, ``result``: a download link that needs no
authorization and expires after 5 minutes (each status read makes a new one). CSV files larger
than 2 MB are served zipped.

Here: exports are CSV only, built from the contact table in a background thread (a snapshot of
the moment the export was asked for: a read-only connection, one SELECT), so a big export does
not block the server; the file lands in ``DIR/exports/``. An export finishes at its ``polls``-th
status read (default 2) once the file is written (that read waits up to 0.2 s for it, so a small
export finishes exactly then; a big one stays PROCESSING until its file is there). The ``jobs``
fault switch (sandbox/faults.py) sets ``polls``, ``stall`` (stays PROCESSING), ``fail`` (ends
CANCELED with an error) and ``zip_over`` (the size above which the file is zipped). Columns: the
record id first (``hs_object_id``, or ``Record ID`` without the NAMES option), then the properties
asked for; values are the API's own strings (times as ISO instants), an empty cell for an empty or
null one.
"""

from __future__ import annotations

import csv
import logging
import re
import threading
import zipfile
from pathlib import Path

from sandbox import store
from sandbox.crm_api import EXPORTS_PREFIX, _order, _where, error, invalid
from sandbox.crm_model import PROPS, SELECT_COLUMNS, STORED
from sandbox.esp_batches import expired, fresh, missing, raw, sign
from sandbox.timefmt import hs_time
from sandbox.web import Call, Reply, VendorError

log = logging.getLogger("sandbox")

URL_TTL_S = 300  # "the download URL expires after 5 minutes"
ZIP_OVER = 2 * 1024 * 1024  # "CSV files larger than 2MB are automatically zipped"
FORMATS = ("CSV", "XLSX", "XLS")
LANGUAGES = ("DE", "EN", "ES", "FI", "FR", "IT", "JA", "NL", "PL", "PT", "SV")
OBJECT_TYPES = ("CONTACT", "CONTACTS", "0-1")
MAX_GROUPS = MAX_FILTERS = 3  # "maximum 3 filterGroups with up to 3 filters each"
_FIRST_ID = 478_408_617_100
FILE_WAIT_S = 0.2  # a status read due to complete waits this long for the file (longer: PROCESSING)


def _jobs(call: Call) -> dict:
    return call.state.faults.jobs.setdefault("crm", {})


def _required(data: dict, name: str) -> object:
    if data.get(name) in (None, "", []):
        raise invalid(
            f"Required field '{name}' is missing",
            errors=[{"message": f"{name} is required", "code": "REQUIRED_FIELD", "in": name}],
        )
    return data[name]


def _choice(data: dict, name: str, options: tuple[str, ...], default: str | None = None) -> str:
    value = str(data.get(name) or default or _required(data, name)).upper()
    if value not in options:
        raise invalid(
            f"Invalid {name} '{data.get(name)}': one of {', '.join(options)}",
            errors=[
                {"message": f"{name} must be one of {', '.join(options)}", "code": "INVALID_ENUM", "in": name}
            ],
        )
    return value


def _search(data: dict) -> tuple[str, list, str]:
    """WHERE, its arguments and ORDER BY of a view export's ``publicCrmSearchRequest``."""
    request = data.get("publicCrmSearchRequest") or {}
    if not isinstance(request, dict):
        raise invalid("publicCrmSearchRequest must be an object")
    groups = request.get("filterGroups")
    if groups is None and request.get("filters"):
        groups = [{"filters": request["filters"]}]
    groups = groups or []
    if (
        not isinstance(groups, list)
        or len(groups) > MAX_GROUPS
        or any(not isinstance(g, dict) or len(g.get("filters") or []) > MAX_FILTERS for g in groups)
    ):
        raise invalid(
            f"An export takes at most {MAX_GROUPS} filterGroups of at most {MAX_FILTERS} filters each"
        )
    sorts = [
        {
            "propertyName": s.get("propertyName"),
            "direction": "DESCENDING" if str(s.get("order", "")).upper().startswith("DES") else "ASCENDING",
        }
        if isinstance(s, dict)
        else s
        for s in request.get("sorts") or []
    ]
    where, args = _where({"filterGroups": groups, "query": request.get("query")})
    return where, args, _order({"sorts": sorts})


def start(call: Call) -> Reply:
    data = call.json()
    if not isinstance(data, dict):
        raise invalid("Invalid input JSON on line 1, column 1: the body must be a JSON object")
    export_type = _choice(data, "exportType", ("VIEW", "LIST"))
    fmt = _choice(data, "format", FORMATS)
    name = str(_required(data, "exportName"))
    _choice(data, "language", LANGUAGES, default="EN")
    _choice(data, "objectType", OBJECT_TYPES)
    props = _required(data, "objectProperties")
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise invalid("objectProperties must be an array of property names")
    unknown = [p for p in props if p not in PROPS]
    if unknown:
        raise invalid(
            f"Property {unknown[0]} does not exist",
            errors=[
                {"message": f'Property "{p}" does not exist', "code": "PROPERTY_DOESNT_EXIST"}
                for p in unknown
            ],
        )
    options = data.get("exportInternalValuesOptions") or []
    if not isinstance(options, list) or not set(map(str, options)) <= {"NAMES", "VALUES"}:
        raise invalid("exportInternalValuesOptions takes NAMES and/or VALUES")
    if data.get("associatedObjectType"):
        raise invalid("associatedObjectType: the sandbox has no associations")
    if export_type == "LIST":
        list_id = _required(data, "listId")
        raise VendorError(error(404, f"List {list_id} does not exist", "OBJECT_NOT_FOUND"))
    if fmt != "CSV":
        raise invalid(f"format {fmt}: the sandbox writes CSV exports only")
    where, args, order = _search(data)
    columns = list(dict.fromkeys(["hs_object_id", *props]))
    header = columns if "NAMES" in options else [PROPS[c].label for c in columns]
    switch = call.state.faults.job_switch("crm", call.method, call.path)
    jobs = _jobs(call)
    export_id = str(_FIRST_ID + len(jobs) + 1)
    jobs[export_id] = job = {
        "id": export_id,
        "name": name,
        "status": "PENDING",
        "reads": 0,
        "polls": max(1, int(switch.get("polls", 2))),
        "stall": bool(switch.get("stall", False)),
        "fail": bool(switch.get("fail", False)),
        "requested_ms": call.now_ms,
        "started_ms": None,
        "completed_ms": None,
        "done": False,
        "file": None,
        "rows": 0,
        "error": None,
    }
    settings = call.state.settings
    job["thread"] = threading.Thread(
        target=_build,
        args=(job, settings.db_path, settings.data_dir / "exports", (where, args, order), columns, header),
        kwargs={"zip_over": int(switch.get("zip_over", ZIP_OVER))},
        name=f"crm-export-{export_id}",
        daemon=True,
    )
    job["thread"].start()
    status_url = f"{call.base_url}/crm/v3/exports/export/async/tasks/{export_id}/status"
    return Reply(202, {"id": export_id, "links": {"status": status_url}}, keys=[export_id], n_records=1)


def _build(
    job: dict, db_path: Path, out_dir: Path, query: tuple, columns: list, header: list, *, zip_over: int
) -> None:
    """Write the export's CSV (zipped when large) from a snapshot of the contacts; never raises."""
    where, args, order = query
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{job['id']}.csv"
        conn = store.connect(db_path, readonly=True)
        try:
            cursor = conn.execute(f"SELECT {SELECT_COLUMNS} FROM crm_contacts WHERE {where} {order}", args)
            with path.open("w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                writer.writerow(header)
                rows = 0
                cells = _cells(columns)
                while batch := cursor.fetchmany(5000):
                    writer.writerows(cells(row) for row in batch)
                    rows += len(batch)
        finally:
            conn.close()
        if path.stat().st_size > zip_over:
            zipped = path.with_suffix(".zip")
            with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(path, arcname=f"{_slug(job['name'])}.csv")
            path.unlink()
            path = zipped
        job.update(file=path, rows=rows)
    except Exception as exc:  # the export fails as an export, the server goes on
        log.exception("export %s failed", job["id"])
        job["error"] = type(exc).__name__
    job["done"] = True


def _cells(columns: list[str]):
    """A row selected with SELECT_COLUMNS → its CSV cells: `contact_json`'s values, "" for null
    (without building a document per row: a million-row export spends its time here)."""
    times = {"createdate": 1, "lastmodifieddate": 2}  # created_ms, modified_ms in SELECT_COLUMNS
    at = {c: 5 + STORED.index(c) for c in columns if c in STORED}

    def cells(row: tuple) -> list:
        out = []
        for name in columns:
            if name == "hs_object_id":
                out.append(row[0])
            elif name in times:
                out.append(hs_time(row[times[name]]))
            else:
                value = row[at[name]]
                out.append("" if value is None else value)
        return out

    return cells


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "export"


def status(call: Call) -> Reply:
    """Read an export's status; the reads are what move it on (see the module docstring)."""
    task_id = call.params["task_id"]
    if not task_id.isdigit():
        raise invalid(
            f"Invalid exportId {task_id}: must be a positive integer",
            errors=[
                {
                    "message": "Invalid exportId provided",
                    "code": "400",
                    "in": "path",
                    "subCategory": "INVALID_ID",
                }
            ],
        )
    job = _jobs(call).get(task_id)
    if job is None:
        raise VendorError(error(404, f"Export {task_id} does not exist", "OBJECT_NOT_FOUND"))
    if job["status"] in ("PENDING", "PROCESSING"):
        job["reads"] += 1
        job["started_ms"] = job["started_ms"] or call.now_ms
        job["status"] = "PROCESSING"
        if not job["stall"] and job["reads"] >= job["polls"] and not job["done"]:
            job["thread"].join(FILE_WAIT_S)  # a small export is done at its polls-th read, always
        if not job["stall"] and job["reads"] >= job["polls"] and job["done"]:
            job["status"] = "CANCELED" if job["fail"] or job["error"] else "COMPLETE"
            job["completed_ms"] = call.now_ms
    body: dict = {
        "status": job["status"],
        "requestedAt": hs_time(job["requested_ms"]),
        "startedAt": hs_time(job["started_ms"]),
        "links": {},
    }
    if job["completed_ms"] is not None:
        body["completedAt"] = hs_time(job["completed_ms"])
    if job["status"] == "COMPLETE":
        path = f"{EXPORTS_PREFIX}{task_id}/{_slug(job['name'])}{job['file'].suffix}"
        body["result"] = call.base_url + sign(call.state.settings.crm_token, path, URL_TTL_S)
    elif job["status"] == "CANCELED":
        body["numErrors"] = 1
        body["errors"] = [
            {
                "status": "error",
                "category": "INTERNAL_ERROR",
                "message": f"Export {task_id} could not be completed"
                + (" (the sandbox's jobs fault: fail)" if job["fail"] else f" ({job['error']})"),
                "context": {"exportId": [task_id]},
            }
        ]
    return Reply(body=body, n_returned=1)


def download(call: Call) -> Reply:
    """The pre-signed export file (the signature is checked by ``HubSpot.authorized``)."""
    if not fresh(call.query):
        return expired()
    job = _jobs(call).get(call.params["task_id"])
    if job is None or job["file"] is None or not job["file"].exists():
        return missing()
    zipped = job["file"].suffix == ".zip"
    return Reply(
        body=raw(job["file"].read_bytes()),
        media_type="application/zip" if zipped else "text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{call.params["name"]}"'},
        n_returned=job["rows"],
    )


ROUTES = [
    ("/crm/v3/exports/export/async", ["POST"], start),
    ("/crm/v3/exports/export/async/tasks/{task_id}/status", ["GET"], status),
    (EXPORTS_PREFIX + "{task_id}/{name}", ["GET"], download),
]
