"""Mailchimp lists, merge fields, members and the batch subscribe endpoint (``POST /lists/{id}``)."""

from __future__ import annotations

from sandbox import store
from sandbox.config import LIST_ID
from sandbox.esp_http import fail, invalid, paging, require_list
from sandbox.esp_model import (
    MEMBER_COLUMNS,
    MERGE_FIELDS,
    STATUSES,
    MemberError,
    MemberRow,
    apply_member,
    member_json,
    normalise_email,
    subscriber_hash,
    tag_id,
)
from sandbox.timefmt import mc_time, parse_instant
from sandbox.web import Call, Reply

BATCH_MAX = 500
FAULT_ERROR = "{email} has signed up to a lot of lists very recently; we're not allowing more signups for now"


def ping(call: Call) -> Reply:
    return Reply(body={"health_status": "Everything's Chimpy!"})


def _list_json(call: Call) -> dict:
    counts = dict(call.db.execute("SELECT status, COUNT(*) FROM esp_members GROUP BY status"))
    campaigns = call.db.execute("SELECT COUNT(*), MAX(send_ms) FROM esp_campaigns").fetchone()
    return {
        "id": LIST_ID,
        "web_id": 1001,
        "name": "Mailsync Customers",
        "contact": {
            "company": "Mailsync Demo Shop",
            "address1": "Beispielstrasse 1",
            "city": "Berlin",
            "state": "",
            "zip": "10115",
            "country": "DE",
            "phone": "",
        },
        "permission_reminder": "You are receiving this email because you opted in at our shop.",
        "campaign_defaults": {
            "from_name": "Mailsync Shop",
            "from_email": "news@example.com",
            "subject": "",
            "language": "en",
        },
        "date_created": "2019-01-15T09:00:00+00:00",
        "list_rating": 4,
        "email_type_option": False,
        "visibility": "prv",
        "double_optin": False,
        "has_welcome": False,
        "marketing_permissions": False,
        "stats": {
            "member_count": counts.get("subscribed", 0),
            "unsubscribe_count": counts.get("unsubscribed", 0),
            "cleaned_count": counts.get("cleaned", 0),
            "campaign_count": campaigns[0],
            "campaign_last_sent": mc_time(campaigns[1]),
            "merge_field_count": len(MERGE_FIELDS),
            "total_contacts": sum(counts.values()),
        },
        "_links": [],
    }


def get_lists(call: Call) -> Reply:
    return Reply(
        body={
            "lists": [_list_json(call)],
            "total_items": 1,
            "constraints": {"may_create": False, "max_instances": 1, "current_total_instances": 1},
            "_links": [],
        },
        n_returned=1,
    )


def get_list(call: Call) -> Reply:
    require_list(call)
    return Reply(body=_list_json(call), n_returned=1)


def get_merge_fields(call: Call) -> Reply:
    list_id = require_list(call)
    count, offset = paging(call)
    fields = [
        {
            "merge_id": merge_id,
            "tag": tag,
            "name": name,
            "type": kind,
            "required": False,
            "default_value": "",
            "public": False,
            "display_order": merge_id + 1,
            "options": (
                {"date_format": "MM/DD"}
                if kind == "birthday"
                else {"date_format": "YYYY-MM-DD"}
                if kind == "date"
                else {"size": 25}
                if kind == "text"
                else {}
            ),
            "help_text": "",
            "list_id": list_id,
            "_links": [],
        }
        for merge_id, tag, name, kind in MERGE_FIELDS
    ]
    page = fields[offset : offset + count]
    return Reply(
        body={"merge_fields": page, "list_id": list_id, "total_items": len(fields), "_links": []},
        n_returned=len(page),
    )


def get_members(call: Call) -> Reply:
    list_id = require_list(call)
    count, offset = paging(call)
    where, args = [], []
    status = call.query.get("status")
    if status:
        if status not in (*STATUSES, "archived"):
            raise invalid([{"field": "status", "message": f"'{status}' is not a valid status"}])
        where.append("status = ?")
        args.append(status)
    for name, op in (("since_last_changed", ">="), ("before_last_changed", "<")):
        if call.query.get(name):
            try:
                args.append(parse_instant(call.query[name]))
            except ValueError:
                raise invalid([{"field": name, "message": "Please enter a valid ISO 8601 date"}]) from None
            where.append(f"changed_ms {op} ?")
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    total = call.db.execute(f"SELECT COUNT(*) FROM esp_members{sql_where}", args).fetchone()[0]
    rows = call.db.execute(
        f"SELECT {MEMBER_COLUMNS} FROM esp_members{sql_where} ORDER BY rid LIMIT ? OFFSET ?",
        [*args, count, offset],
    ).fetchall()
    members = [member_json(MemberRow.from_db(r), list_id) for r in rows]
    return Reply(
        body={"members": members, "list_id": list_id, "total_items": total, "_links": []},
        n_returned=len(members),
    )


def _member_hash(call: Call) -> str:
    ref = call.params["subscriber_hash"]
    return subscriber_hash(ref) if "@" in ref else ref.lower()


def _load(call: Call, email_hash: str) -> MemberRow | None:
    row = call.db.execute(
        f"SELECT {MEMBER_COLUMNS} FROM esp_members WHERE hash = ?", (email_hash,)
    ).fetchone()
    return None if row is None else MemberRow.from_db(row)


def _forgotten(call: Call, hashes: list[str]) -> set[str]:
    marks = ",".join("?" * len(hashes))
    return {h for (h,) in call.db.execute(f"SELECT hash FROM esp_forgotten WHERE hash IN ({marks})", hashes)}


def _save(call: Call, kind: str, row: MemberRow) -> None:
    if kind == "new":
        row.rid = store.next_id(call.db, "esp_members", "rid", 1)
        call.db.execute("INSERT INTO esp_members VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row.db_values())
    else:
        call.db.execute(_UPDATE, _update_values(row))


_UPDATE = (
    "UPDATE esp_members SET email=?, status=?, prev_status=?, merge_fields=?, language=?, tags=?, "
    "opt_ms=?, changed_ms=?, unsubscribe_reason=? WHERE rid=?"
)


def _update_values(row: MemberRow) -> tuple:
    return (
        row.email,
        row.status,
        row.prev_status,
        store.dumps(row.merge_fields),
        row.language,
        store.dumps(row.tags),
        row.opt_ms,
        row.changed_ms,
        row.unsubscribe_reason,
        row.rid,
    )


def _check_member_schema(member: object, where: str) -> list[dict]:
    """Whole-request validation, as Mailchimp's JSON schema check does it."""
    if not isinstance(member, dict):
        return [{"field": where, "message": "Schema describes object, NULL found instead"}]
    errors = []
    if not isinstance(member.get("email_address"), str):
        errors.append({"field": f"{where}.email_address", "message": "This value should not be blank."})
    for name in ("status", "status_if_new"):
        if member.get(name) is not None and member[name] not in STATUSES:
            errors.append(
                {"field": f"{where}.{name}", "message": f"Value must be one of: {', '.join(STATUSES)}"}
            )
    if member.get("language") is not None and not isinstance(member["language"], str):
        errors.append({"field": f"{where}.language", "message": "Schema describes string"})
    return errors


def _single_error(exc: MemberError):
    errors = [{"field": exc.field, "message": exc.field_message}] if exc.field else None
    return fail(400, exc.error, title=exc.title, errors=errors)


def get_member(call: Call) -> Reply:
    list_id = require_list(call)
    row = _load(call, _member_hash(call))
    if row is None:
        raise fail(404)
    return Reply(body=member_json(row, list_id), n_returned=1)


def write_member(call: Call) -> Reply:
    """POST /members (add only), PUT /members/{hash} (add or update), PATCH (update only)."""
    list_id = require_list(call)
    data = call.json()
    if not isinstance(data, dict):
        raise invalid([{"field": "body", "message": "Schema describes object"}])
    if call.method == "POST":
        email_hash = subscriber_hash(str(data.get("email_address", "")))
    else:
        email_hash = _member_hash(call)
    existing = _load(call, email_hash)
    if call.method == "PATCH":
        if existing is None:
            raise fail(404)
        data = {"email_address": existing.email, **data}
    errors = _check_member_schema(data, "body")
    if errors:
        raise invalid(errors)
    if subscriber_hash(data["email_address"]) != email_hash:
        raise fail(400, "The email address submitted does not match the subscriber hash in the URL.")
    try:
        kind, row = apply_member(
            data,
            existing,
            forgotten=bool(_forgotten(call, [email_hash])),
            update_existing=call.method != "POST",
            now_ms=call.now_ms,
        )
    except MemberError as exc:
        raise _single_error(exc) from None
    _save(call, kind, row)
    return Reply(body=member_json(row, list_id), keys=[normalise_email(row.email)], n_records=1)


def archive_member(call: Call) -> Reply:
    require_list(call)
    row = _load(call, _member_hash(call))
    if row is None:
        raise fail(404)
    if row.status != "archived":
        row.prev_status, row.status, row.changed_ms = row.status, "archived", call.now_ms
        call.db.execute(_UPDATE, _update_values(row))
    return Reply(204, keys=[normalise_email(row.email)], n_records=1)


def delete_permanent(call: Call) -> Reply:
    require_list(call)
    row = _load(call, _member_hash(call))
    if row is None:
        raise fail(404)
    call.db.execute("DELETE FROM esp_members WHERE rid = ?", (row.rid,))
    call.db.execute("INSERT OR IGNORE INTO esp_forgotten VALUES (?)", (row.hash,))
    return Reply(204, keys=[normalise_email(row.email)], n_records=1)


def get_tags(call: Call) -> Reply:
    require_list(call)
    row = _load(call, _member_hash(call))
    if row is None:
        raise fail(404)
    tags = [{"id": tag_id(name), "name": name, "date_added": mc_time(row.changed_ms)} for name in row.tags]
    return Reply(body={"tags": tags, "total_items": len(tags), "_links": []}, n_returned=len(tags))


def post_tags(call: Call) -> Reply:
    require_list(call)
    row = _load(call, _member_hash(call))
    if row is None:
        raise fail(404)
    data = call.json()
    tags = data.get("tags") if isinstance(data, dict) else None
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("status") in ("active", "inactive")
        for t in tags
    ):
        raise invalid([{"field": "tags", "message": "Each tag needs a name and status active|inactive"}])
    for tag in tags:
        if tag["status"] == "active" and tag["name"] not in row.tags:
            row.tags.append(tag["name"])
        elif tag["status"] == "inactive" and tag["name"] in row.tags:
            row.tags.remove(tag["name"])
    call.db.execute(_UPDATE, _update_values(row))
    return Reply(204, keys=[normalise_email(row.email)], n_records=len(tags))


def batch_subscribe(call: Call) -> Reply:
    """POST /lists/{id}: up to 500 members; per-member errors never fail the whole batch."""
    list_id = require_list(call)
    data = call.json()
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise invalid([{"field": "members", "message": "Schema describes array, NULL found instead"}])
    members = data["members"]
    if len(members) > BATCH_MAX:
        raise invalid(
            [
                {
                    "field": "members",
                    "message": f"Array may contain at most {BATCH_MAX} items, {len(members)} given",
                }
            ]
        )
    errors = [e for i, m in enumerate(members) for e in _check_member_schema(m, f"members[{i}]")]
    if errors:
        raise invalid(errors)
    update_existing = bool(data.get("update_existing", False))
    keys = [normalise_email(m["email_address"]) for m in members]
    hashes = [subscriber_hash(k) for k in keys]
    marks = ",".join("?" * len(hashes)) or "NULL"
    existing = {
        r[1]: MemberRow.from_db(r)
        for r in call.db.execute(f"SELECT {MEMBER_COLUMNS} FROM esp_members WHERE hash IN ({marks})", hashes)
    }
    forgotten = _forgotten(call, hashes) if hashes else set()
    new, updated, failed, seen = [], [], [], set()
    next_rid = store.next_id(call.db, "esp_members", "rid", 1)
    for member, key, email_hash in zip(members, keys, hashes, strict=True):
        email = member["email_address"].strip()
        if email_hash in seen:
            failed.append(
                MemberError(f"{email} is a duplicate of an earlier member of this batch.").entry(email)
            )
            continue
        seen.add(email_hash)
        if call.reject_record(key):
            failed.append(MemberError(FAULT_ERROR.format(email=email)).entry(email))
            continue
        try:
            kind, row = apply_member(
                member,
                existing.get(email_hash),
                forgotten=email_hash in forgotten,
                update_existing=update_existing,
                now_ms=call.now_ms,
            )
        except MemberError as exc:
            failed.append(exc.entry(email))
            continue
        if kind == "new":
            row.rid, next_rid = next_rid, next_rid + 1
            new.append(row)
        else:
            updated.append(row)
    call.db.executemany(
        "INSERT INTO esp_members VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [r.db_values() for r in new]
    )
    call.db.executemany(_UPDATE, [_update_values(r) for r in updated])
    body = {
        "new_members": [member_json(r, list_id) for r in new],
        "updated_members": [member_json(r, list_id) for r in updated],
        "errors": failed,
        "total_created": len(new),
        "total_updated": len(updated),
        "error_count": len(failed),
        "_links": [],
    }
    return Reply(body=body, keys=keys, n_records=len(members))


ROUTES = [
    ("/3.0/ping", ["GET"], ping),
    ("/3.0/lists", ["GET"], get_lists),
    ("/3.0/lists/{list_id}", ["GET"], get_list),
    ("/3.0/lists/{list_id}", ["POST"], batch_subscribe),
    ("/3.0/lists/{list_id}/merge-fields", ["GET"], get_merge_fields),
    ("/3.0/lists/{list_id}/members", ["GET"], get_members),
    ("/3.0/lists/{list_id}/members", ["POST"], write_member),
    ("/3.0/lists/{list_id}/members/{subscriber_hash}", ["GET"], get_member),
    ("/3.0/lists/{list_id}/members/{subscriber_hash}", ["PUT", "PATCH"], write_member),
    ("/3.0/lists/{list_id}/members/{subscriber_hash}", ["DELETE"], archive_member),
    ("/3.0/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent", ["POST"], delete_permanent),
    ("/3.0/lists/{list_id}/members/{subscriber_hash}/tags", ["GET"], get_tags),
    ("/3.0/lists/{list_id}/members/{subscriber_hash}/tags", ["POST"], post_tags),
]
