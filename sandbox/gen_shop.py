"""The shop side of the world: Shopify orders over the window, as the Admin REST API returns them.

Prices include VAT (``taxes_included``), as in EU shops; amounts are strings with two decimals.
Refunds are dated after their order and reduce ``current_total_price``; cancelled orders are
voided; some orders carry a campaign's ``mc_cid`` in ``landing_site`` (Mailchimp's attribution).
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass

import numpy as np

from sandbox import vocab
from sandbox.people import People
from sandbox.store import dumps
from sandbox.timefmt import DAY_MS, iso_day, shop_time
from sandbox.world import World

HOUR_MS = 3_600_000
ORDER_BASE = 5_100_000_000_000
LINE_BASE = 14_000_000_000_000
CUSTOMER_BASE = 6_000_000_000_000
GUEST_BASE = 6_900_000_000_000
_CUR_P = np.array([c[3] for c in vocab.CURRENCIES]) / sum(c[3] for c in vocab.CURRENCIES)


def catalogue() -> list[dict]:
    """Products with Shopify-style ids; prices in EUR (converted per order currency)."""
    out = []
    for k, (title, handle, price, variants) in enumerate(vocab.PRODUCTS):
        out.append(
            {
                "id": 8_100_000_000 + k,
                "title": title,
                "handle": handle,
                "price": price,
                "variants": [
                    (44_000_000_000 + k * 10 + v, name, f"{handle}-{name}".upper().replace(" ", ""))
                    for v, name in enumerate(variants)
                ],
            }
        )
    return out


def money(value: float) -> str:
    return f"{value:.2f}"


@dataclass
class ShopChunk:
    rows: list[tuple]
    ltv: list[str | None]  # per person, for the CRM
    last_order: list[str | None]  # per person, for the CRM


def _landing(
    r_u: float, k: int, created: int, campaigns: list[dict], ueid: str | None, rates: dict
) -> tuple[str | None, str | None]:
    sent = [c for c in campaigns if c["send_ms"] < created]
    if sent and r_u < rates["mc_cid"]:
        camp = sent[-1] if k % 4 else sent[k % len(sent)]
        eid = ueid or hashlib.md5(str(k).encode()).hexdigest()[:10]
        return (
            f"/products/{vocab.PRODUCTS[k % len(vocab.PRODUCTS)][1]}?utm_source=mailchimp&utm_medium=email"
            f"&utm_campaign={camp['slug']}&mc_cid={camp['id']}&mc_eid={eid}"
        ), "android-app://com.google.android.gm/"
    if r_u < rates["mc_cid"] + rates["utm_only"]:
        slug = sent[-1]["slug"] if sent and k % 3 else "spring_sale_2026"
        return f"/collections/sale?utm_source=newsletter&utm_medium=email&utm_campaign={slug}", ""
    options = [
        "/",
        f"/products/{vocab.PRODUCTS[k % len(vocab.PRODUCTS)][1]}",
        "/collections/sale?gclid=Cj0KCQ",
        None,
    ]
    return options[k % 4], ["https://www.google.com/", "", "https://www.instagram.com/"][k % 3]


_LINES_CDF = [0.5, 0.8, 0.95, 1.0]
_QTY_CDF = [0.8, 0.95, 1.0]
_WEIGHTS = [1 / rank**1.2 for rank in range(1, len(vocab.PRODUCTS) + 1)]
_POPULARITY = [sum(_WEIGHTS[: i + 1]) / sum(_WEIGHTS) for i in range(len(_WEIGHTS))]
N_UNIFORMS = 20


def _pick(cdf: list[float], u: float) -> int:
    return min(len(cdf) - 1, bisect.bisect_right(cdf, u))


def _order(
    world: World,
    u: list[float],
    seq: int,
    created: int,
    customer: dict,
    currency: int,
    campaigns: list[dict],
    ueid: str | None,
    products: list[dict],
) -> tuple[tuple, float]:
    """One order document from 20 uniforms ``u``; returns (shop_orders row, its EUR net value)."""
    rates = world.rates
    code, fx, vat, _ = vocab.CURRENCIES[currency]
    order_id = ORDER_BASE + seq
    k = int(u[13] * (1 << 30))
    lines, subtotal = [], 0.0
    for j in range(1 + _pick(_LINES_CDF, u[0])):
        product = products[_pick(_POPULARITY, u[1 + j])]
        variant = product["variants"][int(u[5 + j] * len(product["variants"]))]
        qty = 1 + _pick(_QTY_CDF, u[9 + j])
        price = round(product["price"] * fx, 2)
        subtotal += price * qty
        lines.append(
            {
                "id": LINE_BASE + seq * 8 + j,
                "product_id": product["id"],
                "variant_id": variant[0],
                "title": product["title"],
                "variant_title": variant[1],
                "name": f"{product['title']} - {variant[1]}",
                "quantity": qty,
                "price": money(price),
                "sku": variant[2],
                "total_discount": "0.00",
                "fulfillable_quantity": 0,
                "taxable": True,
            }
        )
    discount = round(subtotal * 0.1, 2) if k % 7 == 0 else 0.0
    sub = round(subtotal - discount, 2)
    shipping = 0.0 if sub >= 50 else round(4.90 * fx, 2)
    total = round(sub + shipping, 2)
    tax = round(total - total / (1 + vat), 2)
    cancelled_at = refund = closed_at = None
    financial = "paid"
    updated = created + int(60_000 + u[15] * HOUR_MS)
    if u[14] < rates["cancel"]:
        cancelled_at = created + int(u[15] * min(2 * DAY_MS, world.now_ms - 1 - created))
        financial = "voided"
    elif u[14] < rates["cancel"] + rates["refund"]:
        # a refund comes after the order (up to 10 days, and before "now": history is complete)
        refund_at = created + int(HOUR_MS + u[16] * min(9 * DAY_MS, world.now_ms - created - 2 * HOUR_MS))
        if refund_at < world.now_ms - 1:
            full = k % 2 == 0
            refund = _refund(seq, order_id, refund_at, lines if full else lines[:1], full, total, code)
            financial = "refunded" if full else "partially_refunded"
            updated = refund_at
    elif u[14] < rates["cancel"] + rates["refund"] + rates["pending"]:
        financial = "pending"
    if u[17] < rates["updated_later"]:
        updated = max(updated, created + int(DAY_MS // 2 + u[18] * 4.5 * DAY_MS))
    if cancelled_at is None and financial != "pending" and created + 3 * DAY_MS < world.now_ms:
        closed_at = created + 3 * DAY_MS
        updated = max(updated, closed_at)
    updated = min(max(updated, cancelled_at or 0), world.now_ms - 1)
    refunded = sum(float(t["amount"]) for t in (refund or {}).get("transactions", []))
    landing, referrer = _landing(u[19], k, created, campaigns, ueid, rates)
    email = customer["email"]
    doc = {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#{1001 + seq}",
        "order_number": 1001 + seq,
        "number": 1 + seq,
        "email": email,
        "contact_email": email,
        "created_at": shop_time(created),
        "updated_at": shop_time(updated),
        "processed_at": shop_time(created),
        "closed_at": shop_time(closed_at),
        "cancelled_at": shop_time(cancelled_at),
        "cancel_reason": "customer" if cancelled_at else None,
        "currency": code,
        "presentment_currency": code,
        "total_price": money(total),
        "subtotal_price": money(sub),
        "total_line_items_price": money(subtotal),
        "total_tax": money(tax),
        "total_discounts": money(discount),
        "taxes_included": True,
        "current_total_price": money(0 if cancelled_at else total - refunded),
        "financial_status": financial,
        "fulfillment_status": "fulfilled" if closed_at else None,
        "confirmed": True,
        "test": False,
        "buyer_accepts_marketing": customer["accepts_marketing"],
        "landing_site": landing,
        "referring_site": referrer,
        "source_name": "web",
        "tags": "",
        "note": None,
        "discount_codes": [{"code": "WELCOME10", "amount": money(discount), "type": "percentage"}]
        if discount
        else [],
        "shipping_lines": [
            {"id": LINE_BASE + seq * 8 + 7, "title": "Standard", "price": money(shipping), "code": "STANDARD"}
        ],
        "customer": {
            "id": customer["id"],
            "email": email,
            "first_name": customer["first_name"],
            "last_name": customer["last_name"],
            "accepts_marketing": customer["accepts_marketing"],
            "currency": code,
        },
        "line_items": lines,
        "refunds": [refund] if refund else [],
    }
    state = "cancelled" if cancelled_at else "closed" if closed_at else "open"
    value = 0.0 if cancelled_at else (total - refunded) / fx
    return (order_id, created, updated, state, financial, dumps(doc)), value


def _refund(
    seq: int, order_id: int, at: int, lines: list[dict], full: bool, total: float, currency: str
) -> dict:
    amount = total if full else float(lines[0]["price"])
    return {
        "id": 9_000_000_000_000 + seq,
        "order_id": order_id,
        "created_at": shop_time(at),
        "processed_at": shop_time(at),
        "note": "Returned",
        "restock": True,
        "transactions": [
            {
                "id": 7_000_000_000_000 + seq,
                "order_id": order_id,
                "kind": "refund",
                "status": "success",
                "amount": money(amount),
                "currency": currency,
                "gateway": "shopify_payments",
                "created_at": shop_time(at),
            }
        ],
        "refund_line_items": [
            {
                "id": 8_800_000_000_000 + seq * 8 + j,
                "line_item_id": li["id"],
                "quantity": li["quantity"] if full else 1,
                "subtotal": money(float(li["price"]) * (li["quantity"] if full else 1)),
                "total_tax": "0.00",
            }
            for j, li in enumerate(lines)
        ],
    }


@dataclass
class OrderPlan:
    """The first draws of a chunk's shop stream: who buys, in which currency, how many orders.

    Cheap to compute, so the generator can number all orders (``#1001`` …) before building any.
    """

    rng: np.random.Generator
    is_customer: np.ndarray
    currency: np.ndarray
    n_orders: np.ndarray
    n_guest: int

    @property
    def total(self) -> int:
        return int(self.n_orders.sum()) + self.n_guest


def plan_orders(world: World, chunk: int, n: int) -> OrderPlan:
    r = world.rng(chunk, "shop")
    is_customer = r.random(n) < world.rates["shop_customer"]
    currency = r.choice(len(vocab.CURRENCIES), size=n, p=_CUR_P)
    n_orders = r.poisson(world.rates["orders_per_week"] * world.days / 7, size=n) * is_customer
    n_guest = int(
        world.rng(chunk, "guests").binomial(max(1, int(n_orders.sum())), world.rates["guest_order"])
    )
    return OrderPlan(r, is_customer, currency, n_orders, n_guest)


def make_orders(
    world: World,
    chunk: int,
    people: People,
    ueid: dict[int, str],
    campaigns: list[dict],
    first_seq: int,
    products: list[dict],
) -> ShopChunk:
    rates = world.rates
    n = len(people)
    plan = plan_orders(world, chunk, n)
    r, is_customer, currency, n_orders = plan.rng, plan.is_customer, plan.currency, plan.n_orders
    span = world.now_ms - world.start_ms
    history = np.round(r.lognormal(5.0, 0.9, size=n), 2)
    last_before = world.start_ms - (r.random(n) * 700 * DAY_MS).astype(np.int64)
    ltv_u = r.random(n)
    case_u = r.random(n)
    total_orders = int(n_orders.sum())
    owner = np.repeat(np.arange(n), n_orders)
    created_all = world.start_ms + (r.random(total_orders) * span).astype(np.int64)
    created_all = created_all[np.lexsort((created_all, owner))].tolist()
    uniforms = r.random((total_orders, N_UNIFORMS)).tolist()
    rows, ltv, last_order, seq, o = [], [], [], first_seq, 0
    for i in range(n):
        if not is_customer[i]:
            ltv.append(None if ltv_u[i] > 0.1 else "0")
            last_order.append(None)
            continue
        email = people.email[i]
        customer = {
            "id": CUSTOMER_BASE + int(people.idx[i]),
            "first_name": people.first[i],
            "last_name": people.last[i],
            "accepts_marketing": bool(people.consent[i] == 0),
            "email": email.capitalize() if case_u[i] < rates["shop_email_case"] else email,
        }
        total = float(history[i])
        latest = int(last_before[i])
        for _ in range(n_orders[i]):
            row, value = _order(
                world,
                uniforms[o],
                seq,
                created_all[o],
                customer,
                int(currency[i]),
                campaigns,
                ueid.get(i),
                products,
            )
            rows.append(row)
            total += value
            latest = created_all[o]
            seq, o = seq + 1, o + 1
        ltv.append(_ltv_text(total, ltv_u[i], rates))
        last_order.append(iso_day(latest))
    n_guest = plan.n_guest
    guest_times = (world.start_ms + r.random(n_guest) * span).astype(np.int64).tolist()
    guest_uniforms = r.random((n_guest, N_UNIFORMS)).tolist()
    for g in range(n_guest):
        first = vocab.FIRST_ASCII[(seq + g) % len(vocab.FIRST_ASCII)]
        last = vocab.LAST_ASCII[(seq * 7 + g) % len(vocab.LAST_ASCII)]
        customer = {
            "id": GUEST_BASE + seq,
            "first_name": first,
            "last_name": last,
            "accepts_marketing": False,
            "email": f"guest.{vocab.ascii_fold(first)}{seq}@example.org",
        }
        row, _ = _order(world, guest_uniforms[g], seq, guest_times[g], customer, 0, campaigns, None, products)
        rows.append(row)
        seq += 1
    return ShopChunk(rows, ltv, last_order)


def _ltv_text(total: float, u: float, rates: dict) -> str:
    if u < rates["ltv_negative"]:
        return money(-abs(total) / 10)
    if u < rates["ltv_negative"] + rates["ltv_garbage"]:
        return vocab.LTV_GARBAGE[int(total) % len(vocab.LTV_GARBAGE)]
    return money(total)
