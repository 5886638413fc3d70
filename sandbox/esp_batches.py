"""Mailchimp batch operations: ``POST /3.0/batches``, poll ``GET /3.0/batches/{id}``, fetch the results.

As Mailchimp documents them (Marketing API reference "Batch operations" and the guide "Run async
requests with the batch endpoint"): the body is ``{"operations": [{"method", "path", "params",
"body" (a JSON *string*), "operation_id"}]}``; the answer is the batch (``pending``), which moves
through ``started`` to ``finished``; its ``response_body_url`` is then a short-lived pre-signed
link to a gzipped tar of JSON files, each a list of ``{"status_code", "operation_id",
"response"}`` where ``response`` is the operation's answer as a JSON string. Operations are
independent: a 400 of one is its own result and never fails the batch.

Here the operations run against the sandbox's own handlers (members, e-commerce, reports), each in
a savepoint of the status read that processes it, so a refused operation writes nothing. A batch
makes progress only when its status is read: each read runs the next share of its operations and
the ``polls``-th read (default 2) finishes it. The ``jobs`` fault switch changes that (see
sandbox/faults.py): ``polls``, ``stall`` (never finishes), ``fail_every`` (every k-th operation
is refused with a 400, so ``2`` fails half of a batch).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import math
import tarfile
import time
import uuid
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.routing import Match, Route

from sandbox import esp_fields
from sandbox.esp_http import fail, invalid, paging, problem
from sandbox.timefmt import mc_time
from sandbox.web import Call, Reply, VendorError

MAX_OPERATIONS = 1000  # operations per POST /batches
MAX_PENDING = 500  # unfinished batches per account (Mailchimp answers 429 past it)
RESULTS_PER_FILE = 500  # responses per JSON file inside the results archive
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESULTS_PREFIX = "/mailchimp-api-batch/"  # where the pre-signed archives are served (S3 in Mailchimp)
URL_TTL_S = 600


# --- pre-signed download links (shared with sandbox/crm_exports.py) ---------------------------------
# Both vendors hand out result files as short-lived links that need no credentials (an S3 pre-signed
# URL): "Download URLs are accessible without additional authorization" (HubSpot). The signature is
# an HMAC of the path and expiry keyed by the account's own credential; the vendor app's
# `authorized` accepts a call to a download path with a valid signature instead of its usual auth.


def sign(secret: str, path: str, ttl_s: float) -> str:
    """``path?Expires=..&Signature=..``: valid for ttl_s seconds of wall-clock time."""
    expires = str(int(time.time() + ttl_s))
    return f"{path}?{urlencode({'Expires': expires, 'Signature': _signature(secret, path, expires)})}"


def signed(secret: str, path: str, query) -> bool:
    """True when the query carries a signature of this path made with this secret (expired or not)."""
    expires, signature = query.get("Expires", ""), query.get("Signature", "")
    return bool(expires and signature) and hmac.compare_digest(signature, _signature(secret, path, expires))


def fresh(query) -> bool:
    try:
        return float(query.get("Expires", "0")) >= time.time()
    except ValueError:
        return False


def _signature(secret: str, path: str, expires: str) -> str:
    return hmac.new(secret.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def _s3_error(status: int, code: str, message: str) -> Reply:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Reply(status, raw(body.encode()), media_type="application/xml")


def expired() -> Reply:
    return _s3_error(403, "AccessDenied", "Request has expired")


def missing() -> Reply:
    return _s3_error(404, "NoSuchKey", "The specified key does not exist.")


def raw(data: bytes) -> msgspec.Raw:
    """A body sent as these bytes: the pipeline JSON-encodes bodies, and msgspec writes Raw as is."""
    return msgspec.Raw(data)


def _jobs(call: Call) -> dict:
    return call.state.faults.jobs.setdefault("esp", {})


def _operations(data: object) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("operations"), list):
        raise invalid([{"field": "operations", "message": "Schema describes array"}])
    ops = data["operations"]
    if not ops:
        raise invalid([{"field": "operations", "message": "This value should not be blank."}])
    if len(ops) > MAX_OPERATIONS:
        raise fail(400, f"A batch may hold at most {MAX_OPERATIONS} operations; this one has {len(ops)}.")
    clean = []
    for i, op in enumerate(ops):
        where = f"operations[{i}]"
        if not isinstance(op, dict):
            raise invalid([{"field": where, "message": "Schema describes object"}])
        method = str(op.get("method", "")).upper()
        if method not in METHODS:
            raise invalid(
                [{"field": f"{where}.method", "message": f"Value must be one of {', '.join(METHODS)}"}]
            )
        if not isinstance(op.get("path"), str) or not op["path"].startswith("/"):
            raise invalid(
                [{"field": f"{where}.path", "message": "A relative path starting with / is required."}]
            )
        if op.get("body") is not None and not isinstance(op["body"], str):
            raise invalid([{"field": f"{where}.body", "message": "Schema describes string"}])
        if op.get("params") is not None and not isinstance(op["params"], dict):
            raise invalid([{"field": f"{where}.params", "message": "Schema describes object"}])
        op_id = op.get("operation_id")
        clean.append(
            {
                "method": method,
                "path": op["path"],
                "params": op.get("params") or {},
                "body": op.get("body"),
                "operation_id": None if op_id is None else str(op_id),
            }
        )
    return clean


def _doc(job: dict, call: Call) -> dict:
    doc = {
        "id": job["id"],
        "status": job["status"],
        "total_operations": len(job["ops"]),
        "finished_operations": len(job["results"]),
        "errored_operations": sum(1 for r in job["results"] if r["status_code"] >= 400),
        "submitted_at": job["submitted_at"],
        "completed_at": job["completed_at"],
        "response_body_url": "",
        "_links": [],
    }
    if job["status"] == "finished":
        path = f"{RESULTS_PREFIX}{job['id']}-response.tar.gz"
        doc["response_body_url"] = call.base_url + sign(call.state.settings.esp_api_key, path, URL_TTL_S)
    return doc


def start(call: Call) -> Reply:
    ops = _operations(call.json())
    jobs = _jobs(call)
    if sum(1 for j in jobs.values() if j["status"] != "finished") >= MAX_PENDING:
        raise fail(429, f"You have more than {MAX_PENDING} pending batches; wait for some to finish.")
    switch = call.state.faults.job_switch("esp", call.method, call.path)
    batch_id = uuid.uuid4().hex[:10]
    jobs[batch_id] = job = {
        "id": batch_id,
        "status": "pending",
        "ops": ops,
        "results": [],
        "reads": 0,
        "polls": max(1, int(switch.get("polls", 2))),
        "stall": bool(switch.get("stall", False)),
        "fail_every": int(switch.get("fail_every", 0)),
        "submitted_at": mc_time(call.now_ms),
        "completed_at": "",
        "archive": None,
    }
    keys = [op["operation_id"] for op in ops if op["operation_id"] is not None]
    return Reply(body=_doc(job, call), keys=keys or None, n_records=len(ops))


def _job(call: Call) -> dict:
    job = _jobs(call).get(call.params["batch_id"])
    if job is None:
        raise fail(404)
    return job


def status(call: Call) -> Reply:
    """Read a batch's status; the read is what moves it on (see the module docstring)."""
    job = _job(call)
    if job["status"] != "finished":
        job["reads"] += 1
        if job["stall"]:
            job["status"] = "started"
        else:
            target = math.ceil(len(job["ops"]) * min(1.0, job["reads"] / job["polls"]))
            while len(job["results"]) < target:
                job["results"].append(_run(call, job, len(job["results"])))
            job["status"] = "finished" if len(job["results"]) == len(job["ops"]) else "started"
            if job["status"] == "finished":
                job["completed_at"] = mc_time(call.now_ms)
                job["archive"] = _archive(job)
    return Reply(body=_doc(job, call), n_returned=1)


def list_batches(call: Call) -> Reply:
    count, offset = paging(call)
    jobs = list(_jobs(call).values())
    docs = [_doc(j, call) for j in jobs[offset : offset + count]]
    return Reply(body={"batches": docs, "total_items": len(jobs), "_links": []}, n_returned=len(docs))


def delete(call: Call) -> Reply:
    """Stop a batch: what it did so far stays done, its results are gone (as Mailchimp)."""
    job = _job(call)
    del _jobs(call)[job["id"]]
    return Reply(204, keys=[job["id"]], n_records=1)


def results(call: Call) -> Reply:
    """The pre-signed results archive (the signature is checked by ``Mailchimp.authorized``)."""
    if not fresh(call.query):
        return expired()
    name = call.params["name"]
    job = _jobs(call).get(name.removesuffix("-response.tar.gz"))
    if job is None or job["archive"] is None or not name.endswith("-response.tar.gz"):
        return missing()
    return Reply(body=raw(job["archive"]), media_type="application/x-gzip", n_returned=len(job["ops"]))


# --- running one operation -----------------------------------------------------------------------


def _router() -> list[tuple[Route, object]]:
    from sandbox import esp_ecommerce, esp_members, esp_reports  # the handlers the operations reach

    routes = []
    for path, methods, handler in [*esp_members.ROUTES, *esp_reports.ROUTES, *esp_ecommerce.ROUTES]:
        routes.append((Route(path, endpoint=handler, methods=methods), handler))
    return routes


_ROUTES: list | None = None


def _handler_for(method: str, path: str) -> tuple[object, dict] | Reply:
    global _ROUTES
    if _ROUTES is None:
        _ROUTES = _router()
    allowed = False
    for route, handler in _ROUTES:
        match, child = route.matches({"type": "http", "path": path, "method": method})
        if match is Match.FULL:
            return handler, child["path_params"]
        allowed = allowed or match is Match.PARTIAL
    return problem(405 if allowed else 404)


def _run(call: Call, job: dict, index: int) -> dict:
    op = job["ops"][index]
    every = job["fail_every"]
    if every and (index + 1) % every == 0:
        reply = problem(400, "The operation was refused by the sandbox's jobs fault (fail_every).")
    else:
        reply = _dispatch(call, op)
    body = "" if reply.body is None else json.dumps(reply.body, separators=(",", ":"))
    return {"status_code": reply.status, "operation_id": op["operation_id"], "response": body}


def _dispatch(call: Call, op: dict) -> Reply:
    path = "/3.0" + op["path"] if not op["path"].startswith("/3.0/") else op["path"]
    found = _handler_for(op["method"], path)
    if isinstance(found, Reply):
        return found
    handler, params = found
    query = urlencode({k: str(v) for k, v in op["params"].items()})
    scope = {
        "type": "http",
        "method": op["method"],
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", call.request.headers.get("host", "localhost").encode())],
        "scheme": call.request.url.scheme,
        "server": None,
        "root_path": "",
        "path_params": params,
    }
    raw = (op["body"] or "").encode()
    inner = Call(Request(scope), raw, call.state, call.vendor, None)
    db = call.db
    db.execute("SAVEPOINT batch_op")
    try:
        reply = handler(inner)
    except VendorError as exc:
        db.execute("ROLLBACK TO batch_op")
        reply = exc.reply
    except Exception:  # a crash of one operation is its 500, as the pipeline makes it for a call
        db.execute("ROLLBACK TO batch_op")
        reply = problem(500)
    db.execute("RELEASE batch_op")
    return esp_fields.shape(reply, inner.query)


def _archive(job: dict) -> bytes:
    """The results as Mailchimp ships them: a .tar.gz of JSON files, each a list of results."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        rows = job["results"]
        for n in range(0, len(rows), RESULTS_PER_FILE):
            data = json.dumps(rows[n : n + RESULTS_PER_FILE]).encode()
            info = tarfile.TarInfo(f"{job['id']}/{uuid.uuid4().hex}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ROUTES = [
    ("/3.0/batches", ["POST"], start),
    ("/3.0/batches", ["GET"], list_batches),
    ("/3.0/batches/{batch_id}", ["GET"], status),
    ("/3.0/batches/{batch_id}", ["DELETE"], delete),
    (RESULTS_PREFIX + "{name}", ["GET"], results),
]
