"""The generator: deterministic by seed, and the dirt rates documented in sandbox/README.md."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from sandbox import generator, store
from sandbox.config import GenParams
from sandbox.esp_model import email_valid
from sandbox.generator import generate
from sandbox.timefmt import parse_instant

TABLES = [
    "crm_contacts",
    "esp_members",
    "esp_campaigns",
    "esp_activity",
    "esp_unsubscribes",
    "shop_orders",
    "loyalty_members",
]


def build(path: Path, **params) -> store.sqlite3.Connection:
    path.mkdir(parents=True)
    conn = store.connect(path / "sandbox.db")
    generate(conn, path / "sftp", GenParams(**params))
    return conn


def fingerprint(conn, root: Path) -> str:
    digest = hashlib.sha256()
    for table in TABLES:
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
            digest.update(repr(row).encode())
    for path in sorted(root.rglob("*.csv*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    first = fingerprint(build(tmp_path / "a", seed=7, contacts=1500, days=5), tmp_path / "a" / "sftp")
    again = fingerprint(build(tmp_path / "b", seed=7, contacts=1500, days=5), tmp_path / "b" / "sftp")
    other = fingerprint(build(tmp_path / "c", seed=8, contacts=1500, days=5), tmp_path / "c" / "sftp")
    assert first == again != other


def test_parallel_generation_gives_the_same_data(tmp_path, monkeypatch):
    monkeypatch.setattr(generator, "CHUNK", 400)  # 5 chunks: two worker processes
    parallel = fingerprint(build(tmp_path / "p", seed=9, contacts=2000, days=3), tmp_path / "p" / "sftp")
    monkeypatch.setattr(generator, "PARALLEL_FROM_CHUNKS", 100)
    inline = fingerprint(build(tmp_path / "i", seed=9, contacts=2000, days=3), tmp_path / "i" / "sftp")
    assert parallel == inline


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("rates")
    conn = build(path / "w", seed=3, contacts=20_000, days=7)
    return conn, path / "w" / "sftp"


def share(rows, predicate) -> float:
    return sum(1 for r in rows if predicate(r)) / len(rows)


def test_crm_dirt_rates(world):
    conn, _ = world
    rows = conn.execute(
        "SELECT email, firstname, lastname, date_of_birth, country, marketing_consent, customer_id, "
        "lifetime_value, modified_ms, archived FROM crm_contacts"
    ).fetchall()
    people = 20_000
    assert len(rows) == pytest.approx(people * 1.01, rel=0.005)  # ~1% duplicates
    keys = Counter(r[0].strip().lower() for r in rows)
    assert sum(n - 1 for n in keys.values() if n > 1) / people == pytest.approx(0.01, abs=0.003)
    assert share(rows, lambda r: r[0] != r[0].strip().lower() and email_valid(r[0].strip())) == pytest.approx(
        0.06, abs=0.015
    )  # 5% messy plus the duplicates' variants
    assert share(rows, lambda r: not email_valid(r[0].strip())) == pytest.approx(0.01, abs=0.004)
    names = [f"{r[1] or ''}{r[2] or ''}" for r in rows]
    assert share(names, lambda n: not n.isascii()) == pytest.approx(0.21, abs=0.03)
    assert share(names, lambda n: re.search("[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]", n)) == pytest.approx(
        0.01, abs=0.004
    )
    assert share(rows, lambda r: r[1] is None or r[2] is None) == pytest.approx(0.03, abs=0.008)
    dob = Counter(
        "empty"
        if not r[3]
        else "iso"
        if re.fullmatch(r"\d{4}-\d\d-\d\d", r[3])
        else "de"
        if re.fullmatch(r"\d\d\.\d\d\.\d{4}", r[3])
        else "us"
        if re.fullmatch(r"\d\d/\d\d/\d{4}", r[3])
        else "garbage"
        for r in rows
    )
    assert dob["empty"] / len(rows) == pytest.approx(0.10, abs=0.02)
    assert dob["de"] / len(rows) == pytest.approx(0.20, abs=0.03)  # incl. a few impossible ones
    assert dob["us"] / len(rows) == pytest.approx(0.10, abs=0.02)
    assert dob["garbage"] / len(rows) == pytest.approx(0.015, abs=0.006)
    assert share(rows, lambda r: r[4] and len(r[4]) == 2) == pytest.approx(0.60, abs=0.03)
    assert share(rows, lambda r: r[4] and r[4].endswith(" ")) == pytest.approx(0.10, abs=0.02)
    assert share(rows, lambda r: r[5] == "true") == pytest.approx(0.75, abs=0.03)
    assert share(rows, lambda r: r[6] is None) == pytest.approx(0.03, abs=0.01)  # 2% + duplicates
    assert share(rows, lambda r: r[7] and r[7].startswith("-")) == pytest.approx(0.004, abs=0.003)
    window_start = (
        conn.execute("SELECT MIN(send_ms) FROM esp_campaigns").fetchone()[0] // 86_400_000 * 86_400_000
    )
    changed = share(rows, lambda r: r[8] >= window_start - 86_400_000)
    assert 0.08 < changed < 0.20  # ~2% of contacts per day of the window
    assert share(rows, lambda r: r[9]) == pytest.approx(0.005, abs=0.003)


def test_esp_shop_and_loyalty_rates(world):
    conn, sftp = world
    people = 20_000
    status = Counter(s for (s,) in conn.execute("SELECT status FROM esp_members"))
    members = sum(status.values())
    assert members / people == pytest.approx(0.62, abs=0.02)  # 60% of people + 2% ESP-only
    assert status["unsubscribed"] / members == pytest.approx(0.085, abs=0.015)
    assert status["cleaned"] / members == pytest.approx(0.035, abs=0.01)
    assert status["archived"] / members == pytest.approx(0.02, abs=0.006)
    campaigns = conn.execute("SELECT id, emails_sent FROM esp_campaigns").fetchall()
    assert 2 <= len(campaigns) <= 4
    sent = sum(n for _, n in campaigns)
    assert all(status["subscribed"] < n <= members for _, n in campaigns[:1])  # sent to the subscribed
    actions = Counter(conn.execute("SELECT action || coalesce(type, '') FROM esp_activity").fetchall())
    openers = conn.execute(
        "SELECT COUNT(DISTINCT campaign_id || hash) FROM esp_activity WHERE action = 'open'"
    )
    assert openers.fetchone()[0] / sent == pytest.approx(0.25, abs=0.03)
    assert actions[("bouncehard",)] / sent == pytest.approx(0.004, abs=0.002)
    assert actions[("bouncesoft",)] / sent == pytest.approx(0.01, abs=0.004)
    unsubscribed = conn.execute("SELECT COUNT(*) FROM esp_unsubscribes").fetchone()[0]
    assert unsubscribed / sent == pytest.approx(0.003, abs=0.0015)
    orders = [store.loads(d) for (d,) in conn.execute("SELECT doc FROM shop_orders")]
    customers = {o["customer"]["id"] for o in orders}
    assert len(orders) / (people * 0.4) == pytest.approx(0.5, abs=0.08)
    currencies = Counter(o["currency"] for o in orders)
    assert currencies["EUR"] / len(orders) == pytest.approx(0.70, abs=0.04)
    assert set(currencies) == {"EUR", "USD", "GBP", "CHF"}
    assert share(orders, lambda o: o["refunds"]) == pytest.approx(0.05, abs=0.015)
    assert share(orders, lambda o: o["financial_status"] == "voided") == pytest.approx(0.02, abs=0.008)
    first_send = min(conn.execute("SELECT send_ms FROM esp_campaigns").fetchall())[0]
    after_campaign = [o for o in orders if parse_instant(o["created_at"]) > first_send]
    assert share(after_campaign, lambda o: "mc_cid=" in (o["landing_site"] or "")) == pytest.approx(
        0.25, abs=0.03
    )
    campaign_ids = {c for c, _ in campaigns}
    cids = {
        re.search(r"mc_cid=(\w+)", o["landing_site"])[1]
        for o in orders
        if "mc_cid=" in (o["landing_site"] or "")
    }
    assert cids <= campaign_ids
    assert all(1 <= len(o["line_items"]) <= 4 for o in orders) and len(customers) > 1000
    crm_emails = {e.strip().lower() for (e,) in conn.execute("SELECT email FROM crm_contacts")}
    assert share(orders, lambda o: o["email"].lower() not in crm_emails) == pytest.approx(0.025, abs=0.01)
    loyalty = conn.execute("SELECT COUNT(*) FROM loyalty_members").fetchone()[0]
    assert loyalty / (people * 0.98) == pytest.approx(0.40, abs=0.02)
    assert len(list(sftp.rglob("loyalty_tiers.csv"))) == 7


def test_rates_can_be_overridden(tmp_path):
    conn = build(
        tmp_path / "dup", seed=1, contacts=2000, days=3, options={"duplicate": 0.2, "shop_customer": 0}
    )
    assert conn.execute("SELECT COUNT(*) FROM crm_contacts").fetchone()[0] == pytest.approx(2400, rel=0.05)
    assert conn.execute("SELECT COUNT(*) FROM shop_orders").fetchone()[0] < 10  # guests only
    with pytest.raises(ValueError, match="unknown generator option"):
        build(tmp_path / "bad", options={"nonsense": 1})
