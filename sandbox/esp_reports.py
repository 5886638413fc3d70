"""Mailchimp campaigns and their reports (email activity, unsubscribes)."""

from __future__ import annotations

from sandbox.config import LIST_ID
from sandbox.esp_http import fail, invalid, paging
from sandbox.timefmt import mc_time, parse_instant
from sandbox.web import Call, Reply

_CAMPAIGN_COLUMNS = "id, web_id, send_ms, subject, title, emails_sent"


def campaign_json(row: tuple) -> dict:
    campaign_id, web_id, send_ms, subject, title, sent = row
    return {
        "id": campaign_id,
        "web_id": web_id,
        "type": "regular",
        "create_time": mc_time(send_ms - 86_400_000),
        "archive_url": f"https://eepurl.com/{campaign_id[:6]}",
        "status": "sent",
        "emails_sent": sent,
        "send_time": mc_time(send_ms),
        "content_type": "template",
        "recipients": {
            "list_id": LIST_ID,
            "list_is_active": True,
            "list_name": "Mailsync Customers",
            "segment_text": "",
            "recipient_count": sent,
        },
        "settings": {
            "subject_line": subject,
            "title": title,
            "from_name": "Mailsync Shop",
            "reply_to": "news@example.com",
            "use_conversation": False,
            "authenticate": True,
        },
        "tracking": {"opens": True, "html_clicks": True, "text_clicks": False, "ecomm360": True},
        "_links": [],
    }


def _time_arg(call: Call, name: str) -> int | None:
    raw = call.query.get(name)
    if not raw:
        return None
    try:
        return parse_instant(raw)
    except ValueError:
        raise invalid([{"field": name, "message": "Please enter a valid ISO 8601 date"}]) from None


def get_campaigns(call: Call) -> Reply:
    count, offset = paging(call)
    where, args = [], []
    status = call.query.get("status")
    if status and status != "sent":
        where.append("0")  # every campaign of the sandbox has been sent
    for name, op in (("since_send_time", ">="), ("before_send_time", "<")):
        value = _time_arg(call, name)
        if value is not None:
            where.append(f"send_ms {op} ?")
            args.append(value)
    if call.query.get("list_id") not in (None, LIST_ID):
        where.append("0")
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    total = call.db.execute(f"SELECT COUNT(*) FROM esp_campaigns{sql_where}", args).fetchone()[0]
    rows = call.db.execute(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM esp_campaigns{sql_where} ORDER BY send_ms, id LIMIT ? OFFSET ?",
        [*args, count, offset],
    ).fetchall()
    return Reply(
        body={"campaigns": [campaign_json(r) for r in rows], "total_items": total, "_links": []},
        n_returned=len(rows),
    )


def _campaign(call: Call) -> tuple:
    row = call.db.execute(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM esp_campaigns WHERE id = ?", (call.params["campaign_id"],)
    ).fetchone()
    if row is None:
        raise fail(404)
    return row


def get_campaign(call: Call) -> Reply:
    return Reply(body=campaign_json(_campaign(call)), n_returned=1)


def email_activity(call: Call) -> Reply:
    """One entry per member with activity at or after ``since``; paged by member (email_id)."""
    campaign_id = _campaign(call)[0]
    count, offset = paging(call)
    since = _time_arg(call, "since") or 0
    base = "FROM esp_activity WHERE campaign_id = ? AND ts_ms >= ?"
    total = call.db.execute(f"SELECT COUNT(DISTINCT hash) {base}", (campaign_id, since)).fetchone()[0]
    hashes = [
        h
        for (h,) in call.db.execute(
            f"SELECT hash {base} GROUP BY hash ORDER BY hash LIMIT ? OFFSET ?",
            (campaign_id, since, count, offset),
        )
    ]
    emails: dict[str, dict] = {}
    if hashes:
        marks = ",".join("?" * len(hashes))
        rows = call.db.execute(
            f"SELECT hash, email, action, type, ts_ms, url, ip {base} AND hash IN ({marks}) "
            "ORDER BY hash, ts_ms",
            (campaign_id, since, *hashes),
        )
        for email_hash, email, action, kind, ts_ms, url, ip in rows:
            entry = emails.setdefault(
                email_hash,
                {
                    "campaign_id": campaign_id,
                    "list_id": LIST_ID,
                    "list_is_active": True,
                    "email_id": email_hash,
                    "email_address": email,
                    "activity": [],
                    "_links": [],
                },
            )
            event = {"action": action, "timestamp": mc_time(ts_ms), "ip": ip}
            if action == "bounce":
                event["type"] = kind
            if action == "click":
                event["url"] = url
            entry["activity"].append(event)
    body = {
        "emails": [emails[h] for h in hashes],
        "campaign_id": campaign_id,
        "total_items": total,
        "_links": [],
    }
    return Reply(body=body, n_returned=len(hashes))


def unsubscribed(call: Call) -> Reply:
    campaign_id = _campaign(call)[0]
    count, offset = paging(call)
    total = call.db.execute(
        "SELECT COUNT(*) FROM esp_unsubscribes WHERE campaign_id = ?", (campaign_id,)
    ).fetchone()[0]
    rows = call.db.execute(
        "SELECT hash, email, ts_ms, reason FROM esp_unsubscribes WHERE campaign_id = ? "
        "ORDER BY ts_ms, hash LIMIT ? OFFSET ?",
        (campaign_id, count, offset),
    ).fetchall()
    items = [
        {
            "email_id": h,
            "email_address": e,
            "timestamp": mc_time(ts),
            "reason": reason,
            "campaign_id": campaign_id,
            "list_id": LIST_ID,
            "list_is_active": True,
            "vip": False,
            "_links": [],
        }
        for h, e, ts, reason in rows
    ]
    return Reply(
        body={"unsubscribes": items, "campaign_id": campaign_id, "total_items": total, "_links": []},
        n_returned=len(items),
    )


ROUTES = [
    ("/3.0/campaigns", ["GET"], get_campaigns),
    ("/3.0/campaigns/{campaign_id}", ["GET"], get_campaign),
    ("/3.0/reports/{campaign_id}/email-activity", ["GET"], email_activity),
    ("/3.0/reports/{campaign_id}/unsubscribed", ["GET"], unsubscribed),
]
