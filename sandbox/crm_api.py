"""The CRM app: a subset of HubSpot's CRM v3 contacts API.

Bearer-token auth (private app token), HubSpot's error shape and rate-limit headers on every
response, cursor paging on the list endpoint, the search endpoint with its real 10,000-result
ceiling, and the batch endpoints with their 100-input limit and 207 multi-status answers.
Emails are matched trimmed and lower-cased (``email_key``); when the CRM holds duplicates of one
address, the lowest id wins. The exports API (full extracts as a file) is in sandbox/crm_exports.py;
its files are pre-signed links, which need their signature instead of the token.
"""

from __future__ import annotations

import math
import uuid
from urllib.parse import parse_qs

from starlette.requests import Request

from sandbox import store
from sandbox.crm_model import (
    PROPS,
    SELECT_COLUMNS,
    STORED,
    PropertyErrors,
    coerce,
    coerce_all,
    contact_json,
    requested,
)
from sandbox.esp_model import normalise_email
from sandbox.timefmt import hs_time, iso_day, parse_instant
from sandbox.web import AppState, Call, Reply, Vendor, VendorError

BATCH_MAX = 100
SEARCH_MAX_LIMIT = 200
SEARCH_CEILING = 10_000
IN_MAX = 100  # values of one IN / NOT_IN filter
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
_EMAIL_AT = 5 + STORED.index("email")
EXPORTS_PREFIX = "/hubspot-exports/"  # pre-signed export files (sandbox/crm_exports.py)
NOT_FOUND_MESSAGE = (
    "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
)


def error(status: int, message: str, category: str, **extra) -> Reply:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}
    return Reply(status, body | extra)


def invalid(message: str, **extra) -> VendorError:
    return VendorError(error(400, message, "VALIDATION_ERROR", **extra))


def _body(call: Call) -> dict:
    data = call.json()
    if not isinstance(data, dict):
        raise invalid("Invalid input JSON on line 1, column 1: the body must be a JSON object")
    return data


def _props(call: Call, names: object = None) -> list[str]:
    if names is None:
        return requested(call.query.getlist("properties"))
    if not isinstance(names, list):
        raise invalid("properties must be an array of property names")
    return requested([str(n) for n in names])


def _select(call: Call, where: str, args: list, tail: str = "") -> list[tuple]:
    return call.db.execute(f"SELECT {SELECT_COLUMNS} FROM crm_contacts WHERE {where} {tail}", args).fetchall()


def _validated(properties: object) -> dict:
    try:
        return coerce_all(properties)
    except PropertyErrors as exc:
        raise VendorError(error(400, category="VALIDATION_ERROR", **exc.body())) from None
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _inputs(data: dict) -> list:
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise invalid("inputs must be an array of objects")
    if len(inputs) > BATCH_MAX:
        raise invalid(
            f"Batch input size {len(inputs)} exceeds the maximum of {BATCH_MAX}.",
            context={"inputs": [str(len(inputs))]},
        )
    return inputs


def _batch_reply(
    results: list[dict], errors: list[dict], started_ms: int, now_ms: int, keys: list[str], n: int
) -> Reply:
    body = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": hs_time(started_ms),
        "completedAt": hs_time(now_ms),
    }
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
    return Reply(207 if errors else 200, body, keys=keys, n_records=n, n_returned=len(results))


def _lookup(call: Call, refs: list[str], id_property: str | None, archived: bool) -> dict[str, tuple]:
    """Map each reference (id or email) to its row; missing ones are absent."""
    if not refs:
        return {}
    marks = ",".join("?" * len(refs))
    if id_property == "email":
        keys = [normalise_email(r) for r in refs]
        rows = _select(
            call, f"email_key IN ({marks}) AND archived = ?", [*keys, int(archived)], "ORDER BY id DESC"
        )
        by_key = {}
        for row in rows:  # descending ids: the lowest id is written last and wins
            by_key[normalise_email(row[_EMAIL_AT] or "")] = row
        return {r: by_key[k] for r, k in zip(refs, keys, strict=True) if k in by_key}
    ids = [int(r) for r in refs if str(r).isdigit()]
    rows = _select(
        call, f"id IN ({','.join('?' * len(ids)) or 'NULL'}) AND archived = ?", [*ids, int(archived)]
    )
    by_id = {str(row[0]): row for row in rows}
    return {r: by_id[str(r)] for r in refs if str(r) in by_id}


def _not_found(ids: list[str]) -> dict:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": NOT_FOUND_MESSAGE,
        "context": {"ids": ids},
    }


def _fault_error(ids: list[str]) -> dict:
    return {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Property values were not valid (record rejected by the sandbox record_errors fault)",
        "context": {"ids": ids},
    }


# --- reads ---------------------------------------------------------------------------------------


def list_contacts(call: Call) -> Reply:
    limit = call.qint("limit", 10, minimum=1, maximum=100)
    after = call.query.get("after") or "0"
    if not after.isdigit():
        raise invalid(f"Invalid after cursor: {after}")
    archived = call.query.get("archived", "false").lower() == "true"
    props = _props(call)
    rows = _select(
        call, "archived = ? AND id >= ?", [int(archived), int(after), limit + 1], "ORDER BY id LIMIT ?"
    )
    body: dict = {"results": [contact_json(r, props) for r in rows[:limit]]}
    if len(rows) > limit and not call.truncate:
        cursor = str(rows[limit][0])
        link = (
            f"{call.base_url}/crm/v3/objects/contacts?limit={limit}&after={cursor}"
            f"&properties={','.join(props)}&archived={str(archived).lower()}"
        )
        body["paging"] = {"next": {"after": cursor, "link": link}}
    return Reply(body=body, n_returned=len(body["results"]))


def get_contact(call: Call) -> Reply:
    archived = call.query.get("archived", "false").lower() == "true"
    ref = call.params["contact_id"]
    found = _lookup(call, [ref], call.query.get("idProperty"), archived)
    if ref not in found:
        raise VendorError(error(404, "resource not found", "OBJECT_NOT_FOUND"))
    return Reply(body=contact_json(found[ref], _props(call)), n_returned=1)


def batch_read(call: Call) -> Reply:
    started = call.now_ms
    data = _body(call)
    inputs = _inputs(data)
    refs = [str(i.get("id", "")) for i in inputs]
    archived = call.query.get("archived", "false").lower() == "true"
    found = _lookup(call, refs, data.get("idProperty"), archived)
    props = _props(call, data.get("properties") or None)
    results = [contact_json(found[r], props) for r in dict.fromkeys(refs) if r in found]
    missing = [r for r in dict.fromkeys(refs) if r not in found]
    errors = [_not_found(missing)] if missing else []
    return _batch_reply(results, errors, started, call.now_ms, [], len(refs))


# --- search --------------------------------------------------------------------------------------

_OPS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}


def _column(name: str) -> tuple[str, object]:
    """SQL expression for a property, and a converter of filter values to comparable values."""
    prop = PROPS.get(name)
    if prop is None:
        raise invalid(
            f"Property {name} does not exist",
            errors=[{"message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST"}],
        )
    if name == "hs_object_id":
        return "id", lambda v: int(v)
    if name in ("createdate", "lastmodifieddate"):
        return ("created_ms" if name == "createdate" else "modified_ms"), parse_instant
    if prop.type == "date":
        return name, lambda v: iso_day(int(v)) if str(v).isdigit() else str(v)
    if prop.type == "number":
        return f"CAST({name} AS REAL)", float
    if prop.type == "datetime":
        return name, lambda v: hs_time(parse_instant(v))
    if name == "email":
        return "email_key", lambda v: normalise_email(str(v))
    return f"lower({name})", lambda v: str(v).strip().lower()


def _filter_sql(flt: object) -> tuple[str, list]:
    if not isinstance(flt, dict) or "propertyName" not in flt or "operator" not in flt:
        raise invalid("Each filter needs propertyName and operator")
    column, convert = _column(str(flt["propertyName"]))
    op = str(flt["operator"]).upper()
    try:
        if op in _OPS:
            if "value" not in flt:
                raise invalid(f"Filter on {flt['propertyName']} with {op} needs a value")
            sql = f"{column} {_OPS[op]} ?"
            return (f"({column} IS NULL OR {sql})" if op == "NEQ" else sql), [convert(flt["value"])]
        if op == "BETWEEN":
            return f"{column} BETWEEN ? AND ?", [convert(flt["value"]), convert(flt["highValue"])]
        if op in ("IN", "NOT_IN"):
            if len(flt.get("values", [])) > IN_MAX:
                raise invalid(f"{op} filter on {flt['propertyName']} takes at most {IN_MAX} values")
            values = [convert(v) for v in flt.get("values", [])]
            marks = ",".join("?" * len(values)) or "NULL"
            return f"{column} {'NOT ' if op == 'NOT_IN' else ''}IN ({marks})", values
        if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return f"{column} IS {'NOT ' if op == 'HAS_PROPERTY' else ''}NULL", []
        if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            token = str(flt.get("value", "")).strip("*").lower()
            return f"lower({column}) {'NOT ' if op.startswith('NOT') else ''}LIKE ?", [f"%{token}%"]
    except (KeyError, ValueError, TypeError):
        raise invalid(f"Invalid value for filter on {flt['propertyName']}: {flt.get('value')!r}") from None
    raise invalid(f"Unknown operator {op}")


def _where(data: dict) -> tuple[str, list]:
    groups = data.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > 5:
        raise invalid("filterGroups must be an array of at most 5 groups")
    if sum(len(g.get("filters", [])) for g in groups if isinstance(g, dict)) > 18:
        raise invalid("A search may use at most 18 filters in total")
    parts, args = [], []
    for group in groups:
        filters = group.get("filters", []) if isinstance(group, dict) else None
        if not isinstance(filters, list) or len(filters) > 6:
            raise invalid("Each filter group needs a filters array of at most 6 filters")
        sqls = []
        for flt in filters:
            sql, values = _filter_sql(flt)
            sqls.append(sql)
            args.extend(values)
        if sqls:
            parts.append("(" + " AND ".join(sqls) + ")")
    where = "archived = 0"
    if parts:
        where += " AND (" + " OR ".join(parts) + ")"
    query = data.get("query")
    if query:
        where += " AND (email_key LIKE ? OR lower(firstname) LIKE ? OR lower(lastname) LIKE ?)"
        args.extend([f"%{str(query).lower()}%"] * 3)
    return where, args


def _order(data: dict) -> str:
    sorts = data.get("sorts") or []
    if not isinstance(sorts, list) or len(sorts) > 1:
        raise invalid("At most one sort is supported")
    if not sorts:
        return "ORDER BY id"
    sort = sorts[0]
    if isinstance(sort, str):
        name, desc = sort.lstrip("-"), sort.startswith("-")
    elif isinstance(sort, dict):
        name, desc = str(sort.get("propertyName", "")), str(sort.get("direction", "")).upper() == "DESCENDING"
    else:
        raise invalid("Invalid sort")
    column = _column(name)[0]
    return f"ORDER BY {column} {'DESC' if desc else 'ASC'}, id"


def search(call: Call) -> Reply:
    data = _body(call)
    limit = data.get("limit", 10)
    after = str(data.get("after") or "0")
    if not isinstance(limit, int) or not 1 <= limit <= SEARCH_MAX_LIMIT:
        raise invalid(f"limit must be between 1 and {SEARCH_MAX_LIMIT}")
    if not after.isdigit():
        raise invalid(f"Invalid after value: {after}")
    offset = int(after)
    if offset >= SEARCH_CEILING:
        raise invalid(
            f"Search results are limited to {SEARCH_CEILING} per query; 'after' {offset} is beyond it. "
            "Narrow the filters (e.g. by lastmodifieddate) and search again.",
            errors=[{"message": "after must be less than 10000", "code": "INVALID_PAGINATION"}],
        )
    where, args = _where(data)
    props = _props(call, data.get("properties") or None)
    total = call.db.execute(f"SELECT COUNT(*) FROM crm_contacts WHERE {where}", args).fetchone()[0]
    rows = _select(call, where, [*args, limit, offset], f"{_order(data)} LIMIT ? OFFSET ?")
    body: dict = {"total": total, "results": [contact_json(r, props) for r in rows]}
    if offset + len(rows) < total:
        body["paging"] = {"next": {"after": str(offset + len(rows))}}
    return Reply(body=body, n_returned=len(rows))


# --- writes --------------------------------------------------------------------------------------


def _check_duplicates(refs: list[str]) -> None:
    seen, dups = set(), []
    for ref in refs:
        if ref in seen:
            dups.append(ref)
        seen.add(ref)
    if dups:
        raise invalid(f"Duplicate IDs found in batch input: {sorted(set(dups))}. IDs must be unique")


def _apply(call: Call, contact_id: int, values: dict) -> None:
    columns = [name for name in values if name in STORED]
    assignments = "".join(f"{name} = ?, " for name in columns)
    extra = [normalise_email(values["email"] or "")] if "email" in values else []
    key_column = "email_key = ?, " if extra else ""
    call.db.execute(
        f"UPDATE crm_contacts SET {assignments}{key_column}modified_ms = ? WHERE id = ?",
        [*(values[n] for n in columns), *extra, call.now_ms, contact_id],
    )


def batch_update(call: Call) -> Reply:
    started = call.now_ms
    data = _body(call)
    inputs = _inputs(data)
    prepared = [(str(i.get("id", "")), _validated(i.get("properties", {}))) for i in inputs]
    id_property = data.get("idProperty") or (inputs[0].get("idProperty") if inputs else None)
    if id_property == "email":  # as HubSpot: batch update goes by record id; by email only batch/upsert
        raise invalid(f"Unable to perform update/upsert by non-unique 0-1 property {id_property}")
    refs = [ref for ref, _ in prepared]
    _check_duplicates(refs)
    found = _lookup(call, refs, id_property, archived=False)
    results, missing, rejected = [], [], []
    for ref, values in prepared:
        if ref not in found:
            missing.append(ref)
            continue
        if call.reject_record(ref):
            rejected.append(ref)
            continue
        contact_id = found[ref][0]
        _apply(call, contact_id, values)
        row = _select(call, "id = ?", [contact_id])[0]
        results.append(contact_json(row, requested(list(values)) if values else requested(None)))
    errors = ([_not_found(missing)] if missing else []) + ([_fault_error(rejected)] if rejected else [])
    return _batch_reply(results, errors, started, call.now_ms, refs, len(inputs))


def batch_upsert(call: Call) -> Reply:
    started = call.now_ms
    data = _body(call)
    inputs = _inputs(data)
    prepared = []
    for item in inputs:
        if item.get("idProperty") != "email":
            raise invalid('Upsert needs idProperty "email" (the unique property of contacts) on every input')
        email = normalise_email(str(item.get("id", "")))
        values = _validated(item.get("properties", {}))
        values["email"] = coerce("email", email)
        prepared.append((email, values))
    _check_duplicates([email for email, _ in prepared])
    found = _lookup(call, [e for e, _ in prepared], "email", archived=False)
    results, rejected = [], []
    next_id = store.next_id(call.db, "crm_contacts", "id", 1)
    for email, values in prepared:
        if call.reject_record(email):
            rejected.append(email)
            continue
        if email in found:
            contact_id, is_new = found[email][0], False
        else:
            contact_id, is_new, next_id = next_id, True, next_id + 1
            call.db.execute(
                "INSERT INTO crm_contacts (id, email, email_key, created_ms, modified_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (contact_id, email, email, call.now_ms, call.now_ms),
            )
        _apply(call, contact_id, values)
        row = _select(call, "id = ?", [contact_id])[0]
        results.append(contact_json(row, requested(list(values))) | {"new": is_new})
    errors = [_fault_error(rejected)] if rejected else []
    return _batch_reply(results, errors, started, call.now_ms, [e for e, _ in prepared], len(inputs))


def _archive(call: Call, ids: list[str]) -> None:
    numeric = [int(i) for i in ids if i.isdigit()]
    call.db.executemany(
        "UPDATE crm_contacts SET archived = 1, archived_ms = ? WHERE id = ? AND archived = 0",
        [(call.now_ms, i) for i in numeric],
    )


def batch_archive(call: Call) -> Reply:
    inputs = _inputs(_body(call))
    ids = [str(i.get("id", "")) for i in inputs]
    _archive(call, ids)
    return Reply(204, keys=ids, n_records=len(ids))


def delete_contact(call: Call) -> Reply:
    contact_id = call.params["contact_id"]
    _archive(call, [contact_id])
    return Reply(204, keys=[contact_id], n_records=1)


def gdpr_delete(call: Call) -> Reply:
    data = _body(call)
    ref = str(data.get("objectId", ""))
    id_property = data.get("idProperty")
    found = _lookup(call, [ref], id_property, archived=False) or _lookup(
        call, [ref], id_property, archived=True
    )
    if ref not in found:
        raise VendorError(error(404, "resource not found", "OBJECT_NOT_FOUND"))
    call.db.execute("DELETE FROM crm_contacts WHERE id = ?", (found[ref][0],))
    return Reply(204, keys=[normalise_email(ref) if id_property == "email" else ref], n_records=1)


def get_properties(call: Call) -> Reply:
    return Reply(body={"results": [p.json() for p in PROPS.values()]}, n_returned=len(PROPS))


def get_property(call: Call) -> Reply:
    prop = PROPS.get(call.params["name"])
    if prop is None:
        raise VendorError(error(404, f"Unable to find property {call.params['name']}", "OBJECT_NOT_FOUND"))
    return Reply(body=prop.json(), n_returned=1)


_BASE = "/crm/v3/objects/contacts"
ROUTES = [
    (_BASE, ["GET"], list_contacts),
    (_BASE + "/search", ["POST"], search),
    (_BASE + "/batch/read", ["POST"], batch_read),
    (_BASE + "/batch/update", ["POST"], batch_update),
    (_BASE + "/batch/upsert", ["POST"], batch_upsert),
    (_BASE + "/batch/archive", ["POST"], batch_archive),
    (_BASE + "/gdpr-delete", ["POST"], gdpr_delete),
    (_BASE + "/{contact_id}", ["GET"], get_contact),
    (_BASE + "/{contact_id}", ["DELETE"], delete_contact),
    ("/crm/v3/properties/contacts", ["GET"], get_properties),
    ("/crm/v3/properties/contacts/{name}", ["GET"], get_property),
]


class HubSpot(Vendor):
    system = "crm"

    def routes(self):
        from sandbox import crm_exports  # it builds on this module's search helpers

        return [*ROUTES, *crm_exports.ROUTES]

    def credential(self, request: Request) -> str | None:
        if request.url.path.startswith(EXPORTS_PREFIX):
            return f"presigned:{request.url.path}?{request.url.query}"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def authorized(self, state: AppState, credential: str | None) -> bool:
        if credential and credential.startswith("presigned:"):
            from sandbox.esp_batches import signed

            path, _, query = credential.removeprefix("presigned:").partition("?")
            return signed(state.settings.crm_token, path, {k: v[-1] for k, v in parse_qs(query).items()})
        return credential == state.settings.crm_token

    def unauthorized(self) -> Reply:
        return error(401, AUTH_MESSAGE, "INVALID_AUTHENTICATION")

    def too_many_requests(self, retry_after: str, *, vendor_limit: bool) -> Reply:
        return self._rate_limited(retry_after, "TEN_SECONDLY_ROLLING" if vendor_limit else "SECONDLY")

    def _rate_limited(self, retry_after: str, policy: str) -> Reply:
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
        }
        return Reply(429, body, headers={"Retry-After": retry_after})

    def server_error(self, status: int) -> Reply:
        return error(
            status,
            "internal error" if status == 500 else "Service temporarily unavailable",
            "INTERNAL_ERROR" if status == 500 else "SERVICE_UNAVAILABLE",
        )

    def bad_request(self, message: str) -> Reply:
        return error(400, message, "VALIDATION_ERROR")

    def not_found(self) -> Reply:
        return error(404, "Resource not found", "OBJECT_NOT_FOUND")

    def method_not_allowed(self) -> Reply:
        return error(405, "HTTP 405 Method Not Allowed", "VALIDATION_ERROR")

    def limit(self, state: AppState, credential, method, path):
        if path.startswith(EXPORTS_PREFIX):  # a file download, not an API call: no limit, no headers
            return {}, None
        cfg = state.faults.vendor_limit(self.system, method, path)
        headers, refused = state.faults.hubspot.hit(cfg, search=path.endswith("/search"))
        if refused is not None:
            policy, wait = refused
            return headers, self._rate_limited(str(max(1, math.ceil(wait))), policy)
        return headers, None
