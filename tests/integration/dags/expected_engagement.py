"""What the CRM must hold after the engagement write-back, computed directly from the ESP's
raw activity (plain Python, independent of the DAG's pandas aggregation)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

PROPS = (
    "esp_opens_total",
    "esp_clicks_total",
    "esp_soft_bounces_total",
    "esp_campaigns_engaged",
    "esp_last_open_at",
    "esp_last_click_at",
    "email_invalid",
    "email_invalid_date",
    "email_invalid_reason",
    "marketing_consent",
    "marketing_opt_out_date",
    "marketing_opt_out_campaign",
)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC)  # the ESP reports whole seconds


def events(sandbox, start: datetime, end: datetime) -> list[tuple]:
    """(email, campaign, action, type, moment) of every event in [start, end)."""
    rows = [
        (e["email_address"].strip().lower(), e["campaign_id"], e["action"], e["type"], _at(e["ts_ms"]))
        for e in sandbox.esp_activity()
    ]
    rows += [
        (u["email_address"].strip().lower(), u["campaign_id"], "unsubscribe", None, _at(u["ts_ms"]))
        for u in sandbox.esp_unsubscribes()
    ]
    return [r for r in rows if start <= r[4] < end]


def expected_crm(sandbox, start: datetime, end: datetime, before: dict[str, dict]) -> dict[str, dict]:
    """email -> expected engagement properties for every CRM contact (untouched ones unchanged)."""
    per: dict[str, list] = defaultdict(list)
    for e in events(sandbox, start, end):
        per[e[0]].append(e)
    out = {email: {k: props.get(k) for k in PROPS} for email, props in before.items()}
    for email, evs in per.items():
        if email not in out:
            continue  # unknown to the CRM: reported, never created
        props = out[email]
        opens = [e for e in evs if e[2] == "open"]
        clicks = [e for e in evs if e[2] == "click"]
        props["esp_opens_total"] = str(len(opens))
        props["esp_clicks_total"] = str(len(clicks))
        props["esp_soft_bounces_total"] = str(sum(1 for e in evs if e[2] == "bounce" and e[3] != "hard"))
        props["esp_campaigns_engaged"] = str(len({e[1] for e in opens + clicks}))
        if opens:
            props["esp_last_open_at"] = max(e[4] for e in opens).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if clicks:
            props["esp_last_click_at"] = max(e[4] for e in clicks).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        hard = sorted((e[4], e[1]) for e in evs if e[2] == "bounce" and e[3] == "hard")
        if hard:
            props["email_invalid"] = "true"
            props["email_invalid_date"] = hard[0][0].strftime("%Y-%m-%d")
            props["email_invalid_reason"] = f"hard bounce (campaign {hard[0][1]})"
        unsub = sorted((e[4], e[1]) for e in evs if e[2] == "unsubscribe")
        if unsub:
            props["marketing_consent"] = "false"
            props["marketing_opt_out_date"] = unsub[0][0].strftime("%Y-%m-%d")
            props["marketing_opt_out_campaign"] = unsub[0][1]
    return out


def crm_state(sandbox) -> dict[str, dict]:
    """email -> engagement properties of every live CRM contact (first contact of an email)."""
    state: dict[str, dict] = {}
    for c in sandbox.crm_contacts():
        email = (c["properties"].get("email") or "").strip().lower()
        if email and email not in state:
            state[email] = {k: c["properties"].get(k) for k in PROPS}
    return state
