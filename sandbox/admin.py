"""Admin routes under ``/_sandbox/``: reset, fault switches, clock, inspection, mail, world events.

They need no vendor auth, are not logged, and see no faults. Every app serves the same set, so a
client can use whichever port it knows. The world events (``crm/mutate``, ``esp/status``,
``esp/activity``, ...) stand for what users and staff do in the vendors' UIs between two runs.
"""

from __future__ import annotations

import sqlite3

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import generator, loyalty, store
from sandbox.config import GenParams, write_ready
from sandbox.esp_model import STATUSES, subscriber_hash
from sandbox.faults import SYSTEMS, unit_hash
from sandbox.timefmt import parse_instant
from sandbox.vocab import COUNTRIES
from sandbox.web import AppState
from sandbox.world import World

_encode = msgspec.json.Encoder().encode


class AdminError(ValueError):
    """A bad admin request; answered with 400 and the message."""


def reset(state: AppState, body: dict) -> dict:
    """Regenerate all data in place (the server keeps running); clears faults, log, limiters, clock, mail."""
    current = state.params
    params = GenParams(
        seed=int(body.get("seed", current.seed)),
        contacts=int(body.get("contacts", current.contacts)),
        days=int(body.get("days", current.days)),
        now=body.get("now") or current.now,
        options=dict(body.get("options") or {}),
    )
    World.from_params(params)  # validates before anything is dropped
    counts = generator.generate(state.db, state.sftp_root, params)
    state.params = params
    state.faults.clear()
    state.faults.reset_limiters()
    state.clock.frozen_ms = None
    state.mail.clear()
    write_ready(state.settings, state.ports, state.host_key, params)
    return counts


def set_faults(state: AppState, system: str, body: dict) -> dict:
    state.faults.set(system, body)
    return state.faults.state()


def clear_faults(state: AppState, system: str | None) -> dict:
    if system is not None and system not in SYSTEMS:
        raise AdminError(f"unknown system {system!r}")
    state.faults.clear(system)
    return state.faults.state()


def set_clock(state: AppState, body: dict) -> dict:
    at = body.get("at")
    state.clock.frozen_ms = None if at is None else parse_instant(at)
    return {"frozen_ms": state.clock.frozen_ms}


def mutate_crm(state: AppState, body: dict) -> list[str]:
    """Change a deterministic share of live contacts, as users editing the CRM would."""
    fraction, seed = float(body.get("fraction", 0.01)), body.get("seed", 1)
    at = parse_instant(body.get("at", "2026-11-20T03:00:00Z"))
    rows = state.db.execute(
        "SELECT id, city, country, lastname, marketing_consent FROM crm_contacts "
        "WHERE archived = 0 ORDER BY id"
    ).fetchall()
    changed = []
    for contact_id, city, country, lastname, consent in rows:
        score = unit_hash(seed, contact_id)
        if score >= fraction:
            continue
        kind = int(score / max(fraction, 1e-12) * 4)
        if kind == 0:
            cities = COUNTRIES[contact_id % len(COUNTRIES)][2]
            sql, value = "city", next(c for c in cities if c != city)
        elif kind == 1:
            sql, value = "lastname", f"{lastname or 'Neu'}-Berg"
        elif kind == 2:
            sql, value = "marketing_consent", "false" if consent == "true" else "true"
        else:
            sql, value = "country", COUNTRIES[(contact_id + 1) % len(COUNTRIES)][0] if country else "DE"
        state.db.execute(
            f"UPDATE crm_contacts SET {sql} = ?, modified_ms = ? WHERE id = ?", (value, at, contact_id)
        )
        changed.append(str(contact_id))
    return changed


def crm_archive(state: AppState, body: dict) -> dict:
    cur = state.db.execute(
        "UPDATE crm_contacts SET archived = 1, archived_ms = ? WHERE id = ? AND archived = 0",
        (state.clock.now_ms(), int(body["id"])),
    )
    return {"archived": cur.rowcount}


def crm_gdpr_delete(state: AppState, body: dict) -> dict:
    cur = state.db.execute("DELETE FROM crm_contacts WHERE id = ?", (int(body["id"]),))
    return {"deleted": cur.rowcount}


def esp_set_status(state: AppState, body: dict) -> dict:
    """A member changes status on the ESP side (unsubscribe link, bounce, staff action)."""
    status = body.get("status")
    if status not in (*STATUSES, "archived"):
        raise AdminError(f"unknown status {status!r}")
    email_hash = subscriber_hash(str(body.get("email", "")))
    row = state.db.execute("SELECT status FROM esp_members WHERE hash = ?", (email_hash,)).fetchone()
    if row is None:
        raise AdminError("no such member")
    prev = row[0] if status == "archived" and row[0] != "archived" else None
    reason = "N/A (Unsubscribed via preference center)" if status == "unsubscribed" else None
    state.db.execute(
        "UPDATE esp_members SET status = ?, prev_status = ?, changed_ms = ?, unsubscribe_reason = ? "
        "WHERE hash = ?",
        (status, prev, state.clock.now_ms(), reason, email_hash),
    )
    return {"id": email_hash, "status": status}


def add_esp_activity(state: AppState, body: dict) -> dict:
    """Record one campaign event; a hard bounce cleans the member, an unsubscribe unsubscribes it."""
    action = body.get("action")
    if action not in ("open", "click", "bounce", "unsubscribe"):
        raise AdminError("action must be open, click, bounce or unsubscribe")
    campaign = (
        body.get("campaign_id")
        or state.db.execute("SELECT id FROM esp_campaigns ORDER BY send_ms DESC LIMIT 1").fetchone()[0]
    )
    email = str(body["email"]).strip()
    email_hash = subscriber_hash(email)
    ts = parse_instant(body.get("timestamp") or state.clock.now_ms())
    if action == "unsubscribe":
        state.db.execute(
            "INSERT INTO esp_unsubscribes VALUES (?,?,?,?,?)",
            (campaign, email_hash, email, ts, body.get("reason", "Other")),
        )
        new_status = "unsubscribed"
    else:
        kind = body.get("type", "hard") if action == "bounce" else None
        state.db.execute(
            "INSERT INTO esp_activity VALUES (?,?,?,?,?,?,?,?)",
            (campaign, email_hash, email, action, kind, ts, body.get("url"), body.get("ip", "198.51.100.7")),
        )
        new_status = "cleaned" if kind == "hard" else None
    if new_status:
        state.db.execute(
            "UPDATE esp_members SET status = ?, changed_ms = MAX(changed_ms, ?) WHERE hash = ? "
            "AND status IN ('subscribed', 'pending', 'transactional', 'unsubscribed')",
            (new_status, ts, email_hash),
        )
    return {"campaign_id": campaign, "email_id": email_hash, "action": action}


def write_loyalty(state: AppState, body: dict) -> dict:
    return loyalty.write_day(
        state.db,
        state.sftp_root,
        World.from_params(state.params),
        body.get("day", state.params.now[:10]),
        body.get("fault"),
    )


def requests_log(state: AppState, system: str | None) -> list[dict]:
    sql = "SELECT * FROM requests" + (" WHERE system = ?" if system else "") + " ORDER BY id"
    out = []
    for row in state.db.execute(sql, (system,) if system else ()):
        entry = dict(zip(store.REQUEST_COLUMNS, row, strict=True))
        entry["record_keys"] = store.loads(entry["record_keys"], [])
        out.append(entry)
    return out


def clear_mail(state: AppState) -> dict:
    deleted = len(state.mail)
    state.mail.clear()
    return {"deleted": deleted}


def _route(state: AppState, path: str, method: str, action, *, write: bool = True) -> Route:
    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = msgspec.json.decode(raw) if raw else {}
            args = [state, *request.path_params.values()]
            if method in ("POST", "PUT"):
                args.append(body)
            if write:
                with store.transaction(state.db):
                    result = action(*args)
            else:
                result = action(*args)
        except (
            AdminError,
            ValueError,
            KeyError,
            TypeError,
            msgspec.DecodeError,
            sqlite3.IntegrityError,
        ) as exc:
            return Response(_encode({"error": str(exc)}), status_code=400, media_type="application/json")
        return Response(_encode(result), media_type="application/json")

    return Route(path, endpoint, methods=[method])


def routes(state: AppState) -> list[Route]:
    return [
        _route(
            state,
            "/_sandbox/info",
            "GET",
            lambda s: {"ports": s.ports, "generated": s.params.to_dict(), "host_key": s.host_key},
            write=False,
        ),
        _route(state, "/_sandbox/reset", "POST", reset, write=False),
        _route(state, "/_sandbox/faults", "GET", lambda s: s.faults.state(), write=False),
        _route(state, "/_sandbox/faults", "DELETE", lambda s: clear_faults(s, None), write=False),
        _route(state, "/_sandbox/faults/{system}", "PUT", set_faults, write=False),
        _route(state, "/_sandbox/faults/{system}", "DELETE", clear_faults, write=False),
        _route(state, "/_sandbox/clock", "PUT", set_clock, write=False),
        _route(state, "/_sandbox/requests", "GET", lambda s: requests_log(s, None), write=False),
        _route(state, "/_sandbox/requests/{system}", "GET", requests_log, write=False),
        _route(
            state,
            "/_sandbox/requests",
            "DELETE",
            lambda s: {"deleted": s.db.execute("DELETE FROM requests").rowcount},
        ),
        _route(state, "/_sandbox/mail", "GET", lambda s: s.mail, write=False),
        _route(state, "/_sandbox/mail", "DELETE", clear_mail, write=False),
        _route(state, "/_sandbox/crm/mutate", "POST", mutate_crm),
        _route(state, "/_sandbox/crm/archive", "POST", crm_archive),
        _route(state, "/_sandbox/crm/gdpr-delete", "POST", crm_gdpr_delete),
        _route(state, "/_sandbox/esp/status", "POST", esp_set_status),
        _route(state, "/_sandbox/esp/activity", "POST", add_esp_activity),
        _route(state, "/_sandbox/loyalty", "POST", write_loyalty, write=False),
    ]
