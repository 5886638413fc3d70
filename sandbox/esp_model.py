"""Mailchimp audience rules, free of HTTP and SQL so they can be read (and tested) on their own.

The member rules are the ones that protect people and that the sync must respect: an unsubscribed
or cleaned contact is never set back to subscribed, ``status_if_new`` never changes an existing
member, a permanently deleted ("forgotten") contact cannot be re-imported, merge fields are merged
key by key and validated by type.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date

from sandbox import store
from sandbox.timefmt import mc_time

# (merge_id, tag, name, type) — the audience's merge fields.
MERGE_FIELDS = [
    (1, "FNAME", "First Name", "text"),
    (2, "LNAME", "Last Name", "text"),
    (3, "BIRTHDAY", "Birthday", "birthday"),
    (4, "CITY", "City", "text"),
    (5, "COUNTRY", "Country", "text"),
    (6, "CLIENTID", "Client ID", "text"),
    (7, "TIER", "Loyalty Tier", "text"),
    (8, "LTV", "Lifetime Value", "number"),
    (9, "LASTORDER", "Last Order", "date"),
    (10, "TOTAL_SPENT", "Total Spent", "number"),
    (11, "ORDER_COUNT", "Order Count", "number"),
    (12, "LAST_ORDER", "Last Order Date", "date"),
    (13, "CLUB", "Club Level", "text"),
    (14, "CLUBPOINTS", "Club Points", "number"),
    (15, "MEMBERNO", "Club Member No", "text"),
]
MERGE_TYPES = {tag: kind for _, tag, _, kind in MERGE_FIELDS}
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
LOCKED = ("unsubscribed", "cleaned")  # compliance states: never back to subscribed/pending

# Mailchimp's own check is stricter than RFC 5322 and rejects e.g. "a@b" or a missing domain.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
)
_BIRTHDAY = re.compile(r"^(\d{2})/(\d{2})$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

MEMBER_COLUMNS = (
    "rid, hash, email, unique_email_id, status, prev_status, merge_fields, language, "
    "tags, signup_ms, opt_ms, changed_ms, source, unsubscribe_reason"
)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_valid(email: str) -> bool:
    return bool(_EMAIL.match(email)) and ".." not in email


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: md5 of the lower-cased address."""
    return hashlib.md5(normalise_email(email).encode()).hexdigest()


def unique_email_id(email_hash: str) -> str:
    return hashlib.sha1(email_hash.encode()).hexdigest()[:10]


@dataclass
class MemberError(Exception):
    """One member refused: the batch ``errors`` entry, or a 400 problem for single-member calls."""

    error: str
    code: str = "ERROR_GENERIC"
    field: str = ""
    field_message: str = ""
    title: str = "Invalid Resource"

    def entry(self, email: str) -> dict:
        return {
            "email_address": email,
            "error": self.error,
            "error_code": self.code,
            "field": self.field,
            "field_message": self.field_message,
        }


def _check_value(tag: str, kind: str, value: object) -> object:
    """Validate one merge field value; returns the stored form or raises MemberError."""
    if value is None or value == "":
        return ""
    bad = None
    if kind == "text":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            bad = "Please enter a text value"
        elif len(str(value)) > 255:
            bad = "Please enter a value of 255 characters or fewer"
        else:
            return str(value)
    elif kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value) if "." in value else int(value)
        bad = "Please enter a number"
    elif kind == "date":
        text = str(value)
        try:
            if len(text) == 10:
                return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
        bad = "Please enter the date in the format YYYY-MM-DD"
    elif kind == "birthday":
        match = _BIRTHDAY.match(str(value))
        if match and _valid_birthday(int(match[1]), int(match[2])):
            return str(value)
        bad = "Please enter a birthday in the format MM/DD"
    raise MemberError("Your merge fields were invalid.", field=tag, field_message=bad)


def _valid_birthday(month: int, day: int) -> bool:
    try:
        date(2000, month, day)  # a leap year, so 02/29 is allowed
    except ValueError:
        return False
    return True


def validate_merge_fields(values: object) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise MemberError(
            "Your merge fields were invalid.",
            field="merge_fields",
            field_message="merge_fields must be an object",
        )
    clean = {}
    for tag, value in values.items():
        kind = MERGE_TYPES.get(tag)
        if kind is None:
            raise MemberError(
                "Your merge fields were invalid.",
                field=tag,
                field_message=f"Merge field {tag} does not exist on this audience",
            )
        clean[tag] = _check_value(tag, kind, value)
    return clean


@dataclass
class MemberRow:
    """An esp_members row in Python; ``new`` rows have no rid yet."""

    rid: int | None
    hash: str
    email: str
    unique_email_id: str
    status: str
    prev_status: str | None
    merge_fields: dict
    language: str
    tags: list
    signup_ms: int | None
    opt_ms: int | None
    changed_ms: int
    source: str
    unsubscribe_reason: str | None

    @classmethod
    def from_db(cls, row: tuple) -> MemberRow:
        values = list(row)
        values[6] = store.loads(values[6], {})
        values[8] = store.loads(values[8], [])
        return cls(*values)

    def db_values(self) -> tuple:
        return (
            self.rid,
            self.hash,
            self.email,
            self.unique_email_id,
            self.status,
            self.prev_status,
            store.dumps(self.merge_fields),
            self.language,
            store.dumps(self.tags),
            self.signup_ms,
            self.opt_ms,
            self.changed_ms,
            self.source,
            self.unsubscribe_reason,
        )


def apply_member(
    data: dict,
    existing: MemberRow | None,
    *,
    forgotten: bool,
    update_existing: bool,
    now_ms: int,
    source: str = "API - Generic",
) -> tuple[str, MemberRow]:
    """Apply one member input; returns ("new"|"updated", row) or raises MemberError.

    ``data`` has been schema-checked (email_address a string, statuses known).
    """
    email = data["email_address"].strip()
    if not email_valid(email):
        raise MemberError(
            f"{email} looks fake or invalid, please enter a real email address.",
            field="email_address",
            field_message="Invalid email address",
        )
    merge = validate_merge_fields(data.get("merge_fields"))
    status, status_if_new = data.get("status"), data.get("status_if_new")
    language = data.get("language")
    if existing is None:
        if forgotten:
            raise MemberError(
                f"{email} was permanently deleted and cannot be re-imported. The contact must "
                "re-subscribe to get back on the list.",
                title="Forgotten Email Not Subscribed",
            )
        new_status = status or status_if_new
        if not new_status:
            raise MemberError(
                "Required fields were not provided: status_if_new",
                field="status_if_new",
                field_message="This value should not be blank.",
            )
        email_hash = subscriber_hash(email)
        row = MemberRow(
            None,
            email_hash,
            email,
            unique_email_id(email_hash),
            new_status,
            None,
            {k: v for k, v in merge.items() if v != ""},
            language or "",
            [],
            now_ms,
            now_ms if new_status == "subscribed" else None,
            now_ms,
            source,
            None,
        )
        return "new", row
    if not update_existing:
        raise MemberError(
            f"{email} is already a list member. Use PUT to insert or update list members.",
            code="ERROR_CONTACT_EXISTS",
            title="Member Exists",
        )
    row = existing
    before = (row.status, dict(row.merge_fields), row.language)
    if status:
        current = row.prev_status if row.status == "archived" else row.status
        if status in ("subscribed", "pending") and current in LOCKED:
            raise MemberError(
                f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review "
                "and cannot be subscribed.",
                title="Member In Compliance State",
            )
        target = "cleaned" if (status == "unsubscribed" and current == "cleaned") else status
        if row.status == "archived":
            row.prev_status = None
        if target != row.status:
            row.status = target
            if target == "subscribed":
                row.opt_ms = now_ms
            row.unsubscribe_reason = "N/A (Unsubscribed by admin)" if target == "unsubscribed" else None
    for tag, value in merge.items():
        if value == "":
            row.merge_fields.pop(tag, None)
        else:
            row.merge_fields[tag] = value
    if language is not None:
        row.language = language
    if (row.status, row.merge_fields, row.language) != before:
        row.changed_ms = now_ms  # Mailchimp's last_changed moves only when something changed
    return "updated", row


_MERGE_TAGS = [tag for _, tag, _, _ in MERGE_FIELDS]
_EMPTY_MERGE = dict.fromkeys(_MERGE_TAGS, "")
_STATS = {"avg_open_rate": 0, "avg_click_rate": 0}
_LOCATION = {
    "latitude": 0,
    "longitude": 0,
    "gmtoff": 0,
    "dstoff": 0,
    "country_code": "",
    "timezone": "",
    "region": "",
}


def member_json(row: MemberRow, list_id: str) -> dict:
    merge = _EMPTY_MERGE | row.merge_fields
    full_name = f"{merge['FNAME']} {merge['LNAME']}".strip()
    out = {
        "id": row.hash,
        "email_address": row.email,
        "unique_email_id": row.unique_email_id,
        "contact_id": row.unique_email_id,
        "full_name": full_name,
        "web_id": row.rid,
        "email_type": "html",
        "status": row.status,
        "consents_to_one_to_one_messaging": True,
        "merge_fields": merge,
        "stats": _STATS,
        "ip_signup": "",
        "timestamp_signup": mc_time(row.signup_ms),
        "ip_opt": "",
        "timestamp_opt": mc_time(row.opt_ms),
        "member_rating": 2,
        "last_changed": mc_time(row.changed_ms),
        "language": row.language,
        "vip": False,
        "email_client": "",
        "location": _LOCATION,
        "source": row.source or "",
        "tags_count": len(row.tags),
        "tags": [{"id": tag_id(name), "name": name} for name in row.tags],
        "list_id": list_id,
        "_links": [],
    }
    if row.status == "unsubscribed":
        out["unsubscribe_reason"] = row.unsubscribe_reason or "N/A (Unsubscribed by admin)"
    return out


def tag_id(name: str) -> int:
    return int(hashlib.md5(name.encode()).hexdigest()[:6], 16)
