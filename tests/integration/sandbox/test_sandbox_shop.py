"""Contract tests of the Shopify stand-in (orders, Link-header paging, page_info rules, bucket)."""

from __future__ import annotations

from sandbox.timefmt import parse_instant


def follow(shop, path: str, params: dict) -> tuple[list[dict], list[str]]:
    """Every page via rel="next"; returns the orders and the Link headers seen."""
    orders, links, response = [], [], shop.get(path, params=params)
    while True:
        assert response.status_code == 200, response.text
        orders += response.json()["orders"]
        links.append(response.headers.get("Link", ""))
        nxt = response.links.get("next", {}).get("url")
        if not nxt:
            return orders, links
        response = shop.get(nxt)


def test_auth_failure(shop):
    shop.session.headers["X-Shopify-Access-Token"] = "shpat_wrong"
    response = shop.get("/orders.json")
    assert response.status_code == 401
    assert response.json() == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }


def test_link_paging_returns_every_order_once(fresh_sandbox, shop):
    orders, links = follow(shop, "/orders.json", {"status": "any", "limit": 7})
    ids = [o["id"] for o in orders]
    assert ids == sorted(ids) == [o["id"] for o in fresh_sandbox.shop_orders()]
    assert shop.get("/orders/count.json", params={"status": "any"}).json()["count"] == len(ids)
    assert 'rel="next"' in links[0] and 'rel="previous"' not in links[0]
    assert 'rel="previous"' in links[1] and 'rel="next"' not in links[-1]
    second = shop.get("/orders.json", params={"status": "any", "limit": 7})
    page2 = shop.get(second.links["next"]["url"])
    back = shop.get(page2.links["previous"]["url"]).json()["orders"]
    assert [o["id"] for o in back] == ids[:7]


def test_default_status_is_open(fresh_sandbox, shop):
    every = fresh_sandbox.shop_orders()
    open_orders, _ = follow(shop, "/orders.json", {"limit": 250})
    expected = [o["id"] for o in every if o["cancelled_at"] is None and o["closed_at"] is None]
    assert [o["id"] for o in open_orders] == expected and 0 < len(expected) < len(every)
    assert shop.get("/orders/count.json").json()["count"] == len(expected)


def test_page_info_rules(shop):
    first = shop.get("/orders.json", params={"status": "any", "limit": 5})
    cursor_url = first.links["next"]["url"]
    with_filter = shop.get(cursor_url + "&status=any")
    assert with_filter.status_code == 400 and "page_info" in with_filter.json()["errors"]
    assert shop.get(cursor_url.replace("limit=5", "limit=3")).status_code == 200  # limit may change
    assert shop.get("/orders.json", params={"page_info": "garbage", "limit": 5}).status_code == 400


def test_updated_at_filter_fields_and_single_order(fresh_sandbox, shop):
    since = "2026-11-17T00:00:00+01:00"
    orders, _ = follow(
        shop,
        "/orders.json",
        {"status": "any", "updated_at_min": since, "limit": 250, "fields": "id,updated_at,total_price"},
    )
    expected = [
        o["id"] for o in fresh_sandbox.shop_orders() if parse_instant(o["updated_at"]) >= parse_instant(since)
    ]
    assert [o["id"] for o in orders] == expected and expected
    assert set(orders[0]) == {"id", "updated_at", "total_price"}
    full = shop.get(f"/orders/{expected[0]}.json").json()["order"]
    for key in (
        "name",
        "email",
        "currency",
        "financial_status",
        "line_items",
        "refunds",
        "customer",
        "landing_site",
    ):
        assert key in full
    assert full["created_at"].endswith(("+01:00", "+02:00"))  # shop time zone, with its offset
    assert shop.get("/orders/1.json").status_code == 404


def test_call_limit_header_and_leaky_bucket(fresh_sandbox, shop):
    response = shop.get("/orders/count.json")
    used, size = response.headers["X-Shopify-Shop-Api-Call-Limit"].split("/")
    assert size == "40" and 1 <= int(used) <= 40
    fresh_sandbox.set_faults("shop", rate_limit={"vendor": True, "bucket": 3, "leak_per_s": 0.5})
    statuses = [shop.get("/orders/count.json") for _ in range(5)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and limited[0].headers["Retry-After"] == "2.0"
    assert limited[0].json()["errors"].startswith("Exceeded 2 calls per second")
