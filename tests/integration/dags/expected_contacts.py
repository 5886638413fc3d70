"""What include/mappings/crm_to_esp_contacts.yaml prescribes, computed the slow, obvious way.

An independent reference for the DAG tests: plain Python per contact, no pandas, no mapping
engine. If the engine and this disagree, one of them misreads the mapping.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from datetime import datetime

EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
TIERS = {"B": "Bronze", "S": "Silver", "G": "Gold", "P": "Platinum"}
LANGUAGES = {
    "de-de": "de",
    "de-at": "de",
    "de-ch": "de",
    "en-gb": "en",
    "en-us": "en",
    "fr-fr": "fr",
    "fr-ch": "fr",
}
TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


def _text(value, *, collapse=False, nfc=False, case=None):
    if value is None:
        return None
    value = str(value).strip()
    if collapse:
        value = re.sub(r"\s+", " ", value)
    if nfc:
        value = unicodedata.normalize("NFC", value)
    if case:
        value = getattr(value, case)()
    return value or None


def _date(value, formats):
    value = _text(value)
    if value is None:
        return None, True
    for fmt in formats:
        try:
            if fmt == "ISO8601":
                return datetime.fromisoformat(value.replace("Z", "+00:00")).date(), True
            return datetime.strptime(value, fmt).date(), True
        except ValueError:
            continue
    return None, False


def _number(value):
    value = _text(value)
    if value is None:
        return None, True
    try:
        return float(value), True
    except ValueError:
        return None, False


def _bool(value):
    value = _text(value)
    if value is None:
        return None, True
    if value.lower() in TRUE:
        return True, True
    if value.lower() in FALSE:
        return False, True
    return None, False


def countries(include_dir) -> dict[str, str]:
    with (include_dir / "lookups" / "countries.csv").open(encoding="utf-8") as f:
        return {r["name"].strip(): r["iso2"] for r in csv.DictReader(f)}


def loyalty_tiers(raw: bytes) -> dict[str, str]:
    """customer_id -> tier name from a cp1252 loyalty file (rows with unknown codes skipped)."""
    tiers = {}
    for row in csv.DictReader(io.StringIO(raw.decode("cp1252")), delimiter=";"):
        code = (row.get("tier_code") or "").strip().upper()
        cid = (row.get("customer_id") or "").strip().upper()
        if cid and code in TIERS:
            tiers[cid] = TIERS[code]
    return tiers


def valid_record(p: dict):
    """The contact's parsed values, or None when the quality gate must quarantine it."""
    email = _text(p.get("email"), case="lower")
    dob, ok_dob = _date(p.get("date_of_birth"), ["%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y"])
    ltv, ok_ltv = _number(p.get("lifetime_value"))
    consent, ok_consent = _bool(p.get("marketing_consent"))
    last_order, ok_last = _date(p.get("last_order_date"), ["%Y-%m-%d", "ISO8601"])
    if not email or not EMAIL.match(email) or not (ok_dob and ok_ltv and ok_consent and ok_last):
        return None
    if ltv is not None and ltv < 0:
        return None
    return {
        "email": email,
        "dob": dob,
        "ltv": ltv,
        "consent": consent,
        "last_order": last_order,
        "modified": datetime.fromisoformat(p["lastmodifieddate"].replace("Z", "+00:00")),
    }


def expected_members(
    crm_contacts: list[dict], esp_before: dict[str, dict], tiers: dict[str, str], country_map
):
    """email -> expected member (status and merge fields) after one full sync."""
    winners: dict[str, tuple] = {}
    for c in crm_contacts:
        p = c["properties"]
        rec = valid_record(p)
        if rec is None:
            continue
        current = winners.get(rec["email"])
        if current is None or rec["modified"] > current[0]["modified"]:  # latest wins
            winners[rec["email"]] = (rec, p)
    out = {}
    for email, (rec, p) in winners.items():
        cid = _text(p.get("customer_id"), case="upper")
        country = _text(p.get("country"), collapse=True, case="upper")
        language = _text(p.get("hs_language"), case="lower")
        merge = {
            "FNAME": (_text(p.get("firstname"), collapse=True, nfc=True) or "")[:100],
            "LNAME": (_text(p.get("lastname"), collapse=True, nfc=True) or "")[:100],
            "BIRTHDAY": rec["dob"].strftime("%m/%d") if rec["dob"] else "",
            "CITY": (_text(p.get("city"), collapse=True, nfc=True) or "")[:100],
            "COUNTRY": country_map.get(country, "") if country else "",
            "CLIENTID": f"CL-{cid}" if cid else "",
            "TIER": tiers.get(cid, "") if cid else "",
            "LTV": round(rec["ltv"], 2) if rec["ltv"] is not None else "",
            "LASTORDER": rec["last_order"].isoformat() if rec["last_order"] else "",
        }
        before = esp_before.get(email)
        out[email] = {
            "status": _status(before["status"] if before else None, rec["consent"]),
            "merge_fields": merge,
            "language": LANGUAGES.get(language, language)[:5] if language else "",
        }
    return out


def _status(previous, consent):
    """Consent only narrows: see the mapping's description."""
    if previous is None:
        return "subscribed" if consent else "unsubscribed"
    if consent is False:  # "unsubscribed" narrows anything but cleaned (an archived member comes back)
        return "cleaned" if previous == "cleaned" else "unsubscribed"
    return previous
