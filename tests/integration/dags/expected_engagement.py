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


def _per_email(sandbox, start: datetime, end: datetime) -> dict[str, list]:
    per: dict[str, list] = defaultdict(list)
    for e in events(sandbox, start, end):
        per[e[0]].append(e)
    return per


def expected_crm(sandbox, start: datetime, end: datetime, before: dict[str, dict]) -> dict[str, dict]:
    """email -> expected engagement properties for every CRM contact (untouched ones unchanged)."""
    out = {email: {k: props.get(k) for k in PROPS} for email, props in before.items()}
    for email, evs in _per_email(sandbox, start, end).items():
        if email in out:  # unknown to the CRM: reported, never created
            _apply(out[email], evs)
    return out


def expected_records(sandbox, start: datetime, end: datetime, before: dict[str, dict]) -> dict[str, dict]:
    """contact id -> expected properties of every CRM record (`crm_records`): the mapping's
    write-back rule is "every record with that email", so each record of a person entered twice
    gets the person's values (what each record held before stays where nothing is written)."""
    per = _per_email(sandbox, start, end)
    out = {}
    for contact_id, record in before.items():
        out[contact_id] = dict(record)
        if record["email"] in per:
            _apply(out[contact_id], per[record["email"]])
    return out


def _apply(props: dict, evs: list) -> None:
    """The engagement values a contact's events give, written over `props`."""
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


def crm_state(sandbox) -> dict[str, dict]:
    """email -> engagement properties of every live CRM contact (first contact of an email;
    `crm_records` has every record)."""
    state: dict[str, dict] = {}
    for c in sandbox.crm_contacts():
        email = (c["properties"].get("email") or "").strip().lower()
        if email and email not in state:
            state[email] = {k: c["properties"].get(k) for k in PROPS}
    return state


def crm_records(sandbox) -> dict[str, dict]:
    """contact id -> normalised email and engagement properties of every live CRM record with an
    email, duplicates of one email included."""
    records: dict[str, dict] = {}
    for c in sandbox.crm_contacts():
        email = (c["properties"].get("email") or "").strip().lower()
        if email:
            records[c["id"]] = {"email": email, **{k: c["properties"].get(k) for k in PROPS}}
    return records


def duplicated_emails(sandbox) -> set[str]:
    """Emails more than one live CRM record shares (the generator's duplicates)."""
    seen: dict[str, int] = defaultdict(int)
    for record in crm_records(sandbox).values():
        seen[record["email"]] += 1
    return {email for email, n in seen.items() if n > 1}
