"""Attribution and money of the shop integration (mailsync.shop), pure functions on small frames:
which rule finds an order's campaign, and what an order is worth in EUR."""

from __future__ import annotations

import csv
from datetime import timedelta
from types import SimpleNamespace

import pandas as pd
import pytest

from mailsync.mapping.spec import load_mapping
from mailsync.settings import INCLUDE_DIR
from mailsync.shop.attribution import attribute, squash
from mailsync.shop.buyers import buyer_totals
from mailsync.shop.currency import amounts, net_amounts, with_rates

WEEK = timedelta(days=7)
CAMPAIGNS = pd.DataFrame(
    {"campaign_id": ["c1", "c2"], "title": ["Black Friday 2026", "Winter Sale"], "emails_sent": [100, 50]}
)


def orders(*rows: dict) -> pd.DataFrame:
    """Orders as the snapshot holds them (only the columns the functions read)."""
    base = {
        "id": "1",
        "email": "a@x.de",
        "created_at": "2026-11-19T12:00:00Z",
        "landing_site": None,
        "referring_site": None,
        "cancelled_at": None,
        "financial_status": "paid",
        "currency": "EUR",
        "total_price": 100.0,
        "refunded": 0.0,
    }
    frame = pd.DataFrame([{**base, "id": str(i + 1), **r} for i, r in enumerate(rows)])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    frame["cancelled_at"] = pd.to_datetime(frame["cancelled_at"], utc=True)
    return frame.astype({"email": "string", "landing_site": "string", "referring_site": "string"})


def clicks(*rows: tuple[str, str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["email", "campaign_id", "clicked_at"])
    return frame.astype({"email": "string", "campaign_id": "string"}).assign(
        clicked_at=pd.to_datetime(frame["clicked_at"], utc=True)
    )


def test_squash_keeps_letters_and_digits_only():
    assert squash(pd.Series(["Black-Friday_2026!", None])).tolist() == ["blackfriday2026", ""]


def test_the_first_rule_that_applies_finds_the_campaign():
    got = attribute(
        orders(
            {"landing_site": "/p?mc_cid=c2&utm_campaign=black-friday-2026"},  # mc_cid beats utm
            {"landing_site": "/p?mc_cid=nope&utm_campaign=black_friday_2026"},  # unknown mc_cid: utm
            {"referring_site": "https://mail/?utm_campaign=WINTER-SALE"},  # the referrer counts too
            {"email": "b@x.de"},  # no URL: b's last click
            {"email": "c@x.de"},  # nothing at all
        ),
        CAMPAIGNS,
        clicks(("b@x.de", "c1", "2026-11-15T00:00:00Z"), ("b@x.de", "c2", "2026-11-18T00:00:00Z")),
        WEEK,
    )
    assert got["campaign_id"].tolist() == ["c2", "c1", "c2", "c2", pd.NA]
    assert got["rule"].tolist() == ["mc_cid", "utm_campaign", "utm_campaign", "last_click", "unattributed"]


def test_a_click_counts_only_before_the_order_and_within_the_window():
    got = attribute(
        orders({"email": "b@x.de"}, {"email": "c@x.de"}, {"email": "d@x.de"}),
        CAMPAIGNS,
        clicks(
            ("b@x.de", "c1", "2026-11-19T12:00:01Z"),  # a second after the order
            ("c@x.de", "c1", "2026-11-12T11:59:59Z"),  # a second more than 7 days before
            ("d@x.de", "c1", "2026-11-12T12:00:00Z"),  # exactly 7 days before: in
        ),
        WEEK,
    )
    assert got["rule"].tolist() == ["unattributed", "unattributed", "last_click"]


def test_an_order_keeps_the_campaign_it_was_first_attributed_to():
    before = orders({"landing_site": "/p?mc_cid=c1"}, {}).assign(
        campaign_id=pd.array(["c1", pd.NA], dtype="string"),
        rule=pd.array(["mc_cid", "unattributed"], dtype="string"),
    )
    later = before.assign(landing_site=pd.array(["/p?mc_cid=c2", "/p?mc_cid=c2"], dtype="string"))
    got = attribute(later, CAMPAIGNS, clicks(), WEEK)
    assert got["campaign_id"].tolist() == ["c1", "c2"]  # found once, kept; the unattributed looked at again


def test_net_is_total_minus_refunds_and_cancelled_or_voided_orders_count_zero():
    got = net_amounts(
        orders(
            {"total_price": 100.0, "refunded": 30.0},
            {"total_price": 20.0, "refunded": 25.0},  # refunded more than paid: zero, not negative
            {"cancelled_at": "2026-11-19T13:00:00Z"},
            {"financial_status": "voided"},
        )
    )
    assert got["net_total"].tolist() == [70.0, 0.0, 0.0, 0.0]
    assert got["counted"].tolist() == [True, False, False, False]


def test_eur_at_the_rate_of_the_order_creation_day():
    with (INCLUDE_DIR / "rates" / "eur_daily.csv").open(encoding="utf-8") as f:
        table = {(r["date"], r["currency"]): float(r["eur_per_unit"]) for r in csv.DictReader(f)}
    got = amounts(
        orders(
            {"currency": "USD", "total_price": 80.0, "created_at": "2026-11-18T23:59:59Z"},
            {"currency": "GBP", "total_price": 80.0, "created_at": "2026-11-19T00:00:00Z"},
            {"currency": "EUR", "total_price": 80.0},
        ),
        load_mapping("shop_orders_to_esp"),
    )
    want = [round(80 * table[("2026-11-18", "USD")], 2), round(80 * table[("2026-11-19", "GBP")], 2), 80.0]
    assert got["net_reporting"].tolist() == pytest.approx(want)


def test_a_counted_order_without_a_recent_rate_fails_naming_the_rates_file():
    mapping = SimpleNamespace(reporting=SimpleNamespace(currency="EUR", rates_file="rates/x.csv"))
    rates = pd.DataFrame(
        {
            "day": pd.to_datetime(["2026-11-10", "2026-11-16"]).astype("datetime64[us]"),
            "currency": ["CHF", "USD"],
            "rate": [1.05, 0.9],
        }
    )
    fresh = with_rates(net_amounts(orders({"currency": "USD"})), rates, mapping)  # 3 days old: used
    assert fresh["net_reporting"].tolist() == [90.0]
    with pytest.raises(ValueError, match=r"no EUR rate for 1 order\(s\): extend rates/x.csv"):
        with_rates(net_amounts(orders({"currency": "CHF"})), rates, mapping)  # 9 days old: none
    cancelled = orders({"currency": "CHF", "cancelled_at": "2026-11-19T13:00:00Z"})
    assert with_rates(net_amounts(cancelled), rates, mapping)["counted"].tolist() == [False]


def test_buyer_totals_cover_counted_orders_and_keep_buyers_whose_orders_count_zero():
    got = buyer_totals(
        amounts(
            orders(
                {"email": "a@x.de", "total_price": 10.0, "created_at": "2026-11-17T10:00:00Z"},
                {"email": "a@x.de", "total_price": 5.5},
                {"email": "b@x.de", "cancelled_at": "2026-11-19T13:00:00Z"},
            ),
            load_mapping("shop_orders_to_esp"),
        )
    )
    a, b = got.to_dict("records")
    assert a == {"email": "a@x.de", "total_spent": 15.5, "order_count": 2, "last_order": "2026-11-19"}
    assert (b["email"], b["total_spent"], b["order_count"]) == ("b@x.de", 0.0, 0) and pd.isna(b["last_order"])
