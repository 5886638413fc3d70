"""The end-state invariants every fault-and-abuse case asserts, and the result row it records.

One checker for the contact sync (CRM → ESP members) and one for the engagement write-back
(ESP → CRM), both against the independent reference computations of the DAG tests
(tests/integration/dags/expected_*.py), and against the sandbox's request log for duplicates:

- lost: a record the mapping prescribes that the destination does not hold (or holds wrong);
- duplicates: a record written with success more than once (counted per key from the request
  log; writes the vendor refused, and re-sends of a batch whose answer was lost to a client
  timeout, are counted apart);
- wrongful subscriptions: a member the ESP had as unsubscribed or cleaned now subscribed, or a
  member subscribed by us whose CRM contact has no consent.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailsync.pii import mask_email as mask
from mailsync.settings import INCLUDE_DIR
from tests.integration.dags.expected_contacts import countries, expected_members, valid_record

TAGS = ("FNAME", "LNAME", "BIRTHDAY", "CITY", "COUNTRY", "CLIENTID", "TIER", "LTV", "LASTORDER")
COMPLIANCE = ("unsubscribed", "cleaned")


def norm(email: str | None) -> str:
    return (email or "").strip().lower()


def members(sandbox) -> dict[str, dict]:
    return {norm(m["email_address"]): m for m in sandbox.esp_members()}


def member_view(member: dict | None) -> dict | None:
    """What the mapping prescribes of a member: status, the mapped merge fields, language."""
    if member is None:
        return None
    return {
        "status": member["status"],
        "merge_fields": {t: member["merge_fields"].get(t, "") for t in TAGS},
        "language": member["language"],
    }


def expected_contacts(sandbox, before: dict[str, dict], tiers: dict[str, str]) -> dict[str, dict]:
    """email -> the member the mapping prescribes after a sync of the CRM as it is now."""
    return expected_members(sandbox.crm_contacts(), before, tiers, countries(INCLUDE_DIR))


def consent_by_email(sandbox) -> dict[str, bool | None]:
    """The consent of the contact that wins each email (latest valid version, as the mapping says)."""
    winners: dict[str, dict] = {}
    for c in sandbox.crm_contacts():
        rec = valid_record(c["properties"])
        if rec and (rec["email"] not in winners or rec["modified"] > winners[rec["email"]]["modified"]):
            winners[rec["email"]] = rec
    return {e: r["consent"] for e, r in winners.items()}


def member_writes(requests: list[dict]) -> list[dict]:
    """ESP requests that change members (batch upserts, PUT/PATCH/DELETE of one member)."""
    return [
        r
        for r in requests
        if r["system"] == "esp"
        and r["method"] in ("POST", "PUT", "PATCH", "DELETE")
        and "/lists/" in r["path"]
        and "/tags" not in r["path"]
    ]


@dataclass
class Outcome:
    """What one case found; becomes one row of RELIABILITY.md."""

    case: str
    group: str
    inputs: str = ""
    runs: int = 0
    expected: int = 0
    found: int = 0
    lost: int = 0
    duplicates: int = 0
    resent_after_timeout: int = 0
    wrongful_subscriptions: int = 0
    outcome: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # masked: never an email in clear
    passed: bool | None = None
    seconds: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{self.lost} of {self.expected} records lost or wrong")
        if self.duplicates:
            out.append(f"{self.duplicates} records written twice")
        if self.wrongful_subscriptions:
            out.append(f"{self.wrongful_subscriptions} wrongful subscriptions")
        return out


def check_contacts(
    sandbox,
    outcome: Outcome,
    *,
    before: dict[str, dict],
    expected: dict[str, dict],
    requests: list[dict],
    refused_keys: set[str] = frozenset(),
    excused: set[str] = frozenset(),
) -> Outcome:
    """Compare the ESP audience with the prescription; count duplicate and wrongful writes.

    `before`: members before the case's first run; `expected`: the prescribed end state;
    `requests`: the ESP request log of the case's runs; `refused_keys`: records the vendor was
    told (by a fault) to refuse — their refused writes do not count as writes; `excused`: keys
    the case expects to differ (e.g. rejected and not yet resent), reported apart.
    """
    after = members(sandbox)
    wrong = [e for e, want in expected.items() if e not in excused and member_view(after.get(e)) != want]
    outcome.expected = len(expected) - len(set(expected) & set(excused))
    outcome.found = outcome.expected - len(wrong)
    outcome.lost = len(wrong)
    outcome.examples = [
        f"{mask(e)}: want {expected[e]['status']}, got {(after.get(e) or {}).get('status', 'absent')}"
        + (
            ""
            if not after.get(e) or member_view(after[e])["status"] != expected[e]["status"]
            else " (fields differ: "
            + ",".join(
                t for t in TAGS if member_view(after[e])["merge_fields"][t] != expected[e]["merge_fields"][t]
            )
            + ")"
        )
        for e in wrong[:3]
    ]
    written, timed_out = Counter(), set()
    for r in member_writes(requests):
        if not (200 <= r["status"] < 300):
            continue  # refused, throttled, dropped: nothing was written
        fault = r.get("fault") or ""
        keys = [k for k in r["record_keys"] if not ("record_errors" in fault and k in refused_keys)]
        written.update(keys)
        if fault.startswith("slow"):
            timed_out.update(keys)
    twice = {k for k, n in written.items() if n > 1}
    outcome.resent_after_timeout = len(twice & timed_out)
    outcome.duplicates = len(twice - timed_out)
    consent = consent_by_email(sandbox)
    wrongful = [
        e
        for e, m in after.items()
        if m["status"] == "subscribed"
        and (
            (before.get(e) or {}).get("status") in COMPLIANCE
            or ((before.get(e) or {}).get("status") != "subscribed" and consent.get(e) is not True)
            or consent.get(e) is False
        )
    ]
    outcome.wrongful_subscriptions = len(wrongful)
    outcome.details["writes"] = sum(written.values())
    return outcome


def check_engagement(
    sandbox, outcome: Outcome, *, expected: dict[str, dict], requests: list[dict]
) -> Outcome:
    """Compare the CRM engagement properties with the prescription; count CRM writes per id."""
    from tests.integration.dags.expected_engagement import crm_state

    after = crm_state(sandbox)
    wrong = [e for e, want in expected.items() if after.get(e) != want]
    outcome.expected, outcome.lost = len(expected), len(wrong)
    outcome.found = len(expected) - len(wrong)
    outcome.examples = [
        f"{mask(e)}: " + ",".join(k for k in want if (after.get(e) or {}).get(k) != want[k])
        for e, want in ((e, expected[e]) for e in wrong[:3])
    ]
    written = Counter()
    for r in requests:
        crm_update = r["system"] == "crm" and r["method"] == "POST" and "/batch/update" in r["path"]
        if crm_update and 200 <= r["status"] < 300:
            written.update(r["record_keys"])
    # the engagement write-back sends absolute values: a rerun of a day re-sends them by design;
    # a duplicate here is a record written twice within one run
    outcome.details["crm_writes"] = sum(written.values())
    # wrongful subscriptions: the write-back may only ever narrow consent
    outcome.wrongful_subscriptions = sum(
        1
        for e, want in expected.items()
        if want.get("marketing_consent") == "false"
        and (after.get(e) or {}).get("marketing_consent") == "true"
    )
    return outcome


class Recorder:
    """Appends one JSON line per case to the session's results file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, outcome: Outcome, started: float | None = None) -> Outcome:
        if started is not None:
            outcome.seconds = round(time.monotonic() - started, 1)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(outcome), default=str) + "\n")
        return outcome
