"""Contract tests of the Mailchimp stand-in (lists, members, batch rules, reports, e-commerce)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from sandbox.timefmt import parse_instant

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def md5(email: str) -> str:
    """Mailchimp's subscriber hash (an identifier, not security)."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()  # noqa: S324


def by_status(sb, status: str) -> list[dict]:
    return [m for m in sb.esp_members() if m["status"] == status]


def test_auth_failures_answer_mailchimp_problem_json(esp):
    for auth in (None, ("user", "0" * 32 + "-us21")):
        esp.session.auth = auth
        response = esp.get("/ping")
        body = response.json()
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert set(body) == PROBLEM_KEYS
        assert body["title"] == "API Key Invalid"
        assert body["type"] == "https://mailchimp.com/developer/marketing/docs/errors/"
        uuid.UUID(body["instance"])


def test_ping_list_and_merge_fields(esp, list_path):
    assert esp.get("/ping").json() == {"health_status": "Everything's Chimpy!"}
    lists = esp.get("/lists").json()
    assert lists["total_items"] == 1 and lists["lists"][0]["id"] == list_path.rsplit("/", 1)[1]
    fields = esp.get(f"{list_path}/merge-fields", params={"count": 100}).json()
    types = {f["tag"]: f["type"] for f in fields["merge_fields"]}
    assert types == {
        "FNAME": "text",
        "LNAME": "text",
        "BIRTHDAY": "birthday",
        "CITY": "text",
        "COUNTRY": "text",
        "CLIENTID": "text",
        "TIER": "text",
        "LTV": "number",
        "LASTORDER": "date",
        "TOTAL_SPENT": "number",
        "ORDER_COUNT": "number",
        "LAST_ORDER": "date",
        "CLUB": "text",
        "CLUBPOINTS": "number",
        "MEMBERNO": "text",
    }
    page = esp.get(f"{list_path}/merge-fields", params={"count": 5, "offset": 10}).json()
    tags = [f["tag"] for f in page["merge_fields"]]
    assert tags == ["ORDER_COUNT", "LAST_ORDER", "CLUB", "CLUBPOINTS", "MEMBERNO"]
    assert esp.get("/lists/nope").status_code == 404


def test_members_paging_returns_every_member_once(fresh_sandbox, esp, list_path):
    seen, offset, total = [], 0, None
    while True:
        page = esp.get(f"{list_path}/members", params={"count": 97, "offset": offset}).json()
        total = page["total_items"]
        seen += [m["id"] for m in page["members"]]
        if not page["members"]:
            break
        offset += 97
    expected = [m["id"] for m in fresh_sandbox.esp_members()]
    assert len(seen) == len(set(seen)) == total == len(expected)
    assert set(seen) == set(expected)
    assert esp.get(f"{list_path}/members", params={"count": 1001}).status_code == 400


def test_member_filters(fresh_sandbox, esp, list_path):
    members = fresh_sandbox.esp_members()
    page = esp.get(f"{list_path}/members", params={"status": "unsubscribed", "count": 1000}).json()
    assert page["total_items"] == sum(m["status"] == "unsubscribed" for m in members) > 0
    assert {m["status"] for m in page["members"]} == {"unsubscribed"}
    since = "2026-11-15T00:00:00+00:00"
    page = esp.get(f"{list_path}/members", params={"since_last_changed": since, "count": 1000}).json()
    expected = {m["id"] for m in members if parse_instant(m["last_changed"]) >= parse_instant(since)}
    assert {m["id"] for m in page["members"]} == expected and expected
    member = page["members"][0]
    assert member["id"] == md5(member["email_address"]) and member["list_id"] == list_path.rsplit("/", 1)[1]
    for key in ("unique_email_id", "merge_fields", "language", "tags", "last_changed", "timestamp_signup"):
        assert key in member


def test_batch_subscribe_per_member_rules(fresh_sandbox, esp, list_path):
    sb = fresh_sandbox
    subscribed, unsubscribed, cleaned = (
        by_status(sb, s)[0] for s in ("subscribed", "unsubscribed", "cleaned")
    )
    merged = by_status(sb, "subscribed")[1]
    quiet = by_status(sb, "unsubscribed")[1]
    members = [
        {
            "email_address": "New.Person@Example.com ",
            "status_if_new": "subscribed",
            "merge_fields": {"FNAME": "Neo"},
        },
        {"email_address": "no-status@example.com", "merge_fields": {"FNAME": "X"}},
        {"email_address": "jane.doe@", "status_if_new": "subscribed"},
        {"email_address": "a@b", "status_if_new": "subscribed"},
        {
            "email_address": "unknown-field@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"SHOE": "42"},
        },
        {
            "email_address": "bad-number@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"LTV": "12,50"},
        },
        {
            "email_address": "bad-date@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"LASTORDER": "19.11.2026"},
        },
        {
            "email_address": "bad-bday@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"BIRTHDAY": "1985-03-02"},
        },
        {
            "email_address": "long@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"CITY": "x" * 256},
        },
        {"email_address": unsubscribed["email_address"], "status": "subscribed"},
        {"email_address": quiet["email_address"].upper(), "status_if_new": "subscribed"},
        {"email_address": cleaned["email_address"], "status": "unsubscribed"},
        {"email_address": subscribed["email_address"], "status": "unsubscribed"},
        {"email_address": merged["email_address"], "merge_fields": {"CITY": "Bremen", "LTV": 12.5}},
    ]
    response = esp.post(list_path, json={"members": members, "update_existing": True})
    assert response.status_code == 200
    body = response.json()
    errors = {e["email_address"]: e for e in body["errors"]}
    assert set(body) >= {
        "new_members",
        "updated_members",
        "errors",
        "total_created",
        "total_updated",
        "error_count",
    }
    assert body["total_created"] == 1 and body["new_members"][0]["id"] == md5("new.person@example.com")
    assert errors["no-status@example.com"]["error"] == "Required fields were not provided: status_if_new"
    assert "looks fake or invalid" in errors["jane.doe@"]["error"] and "a@b" in errors
    assert errors["jane.doe@"]["error_code"] == "ERROR_GENERIC"
    for email, field in (
        ("unknown-field@example.com", "SHOE"),
        ("bad-number@example.com", "LTV"),
        ("bad-date@example.com", "LASTORDER"),
        ("bad-bday@example.com", "BIRTHDAY"),
        ("long@example.com", "CITY"),
    ):
        assert errors[email]["field"] == field, email
    assert "compliance state" in errors[unsubscribed["email_address"]]["error"]
    assert body["error_count"] == len(body["errors"]) == 9
    updated = {m["id"]: m for m in body["updated_members"]}
    assert updated[quiet["id"]]["status"] == "unsubscribed"  # status_if_new never changes a member
    after = {m["email_address"].lower(): m for m in sb.esp_members()}
    assert after[unsubscribed["email_address"].lower()]["status"] == "unsubscribed"  # never re-subscribed
    assert (
        after[cleaned["email_address"].lower()]["status"] == "cleaned"
    )  # unsubscribing a cleaned member: no-op
    assert after[subscribed["email_address"].lower()]["status"] == "unsubscribed"
    fields = after[merged["email_address"].lower()]["merge_fields"]
    assert fields["CITY"] == "Bremen" and fields["LTV"] == 12.5
    assert fields["FNAME"] == merged["merge_fields"]["FNAME"]  # not given: kept
    assert "no-status@example.com" not in after


def test_batch_duplicates_contact_exists_archived_and_size(fresh_sandbox, esp, list_path):
    sb = fresh_sandbox
    first, second = by_status(sb, "subscribed")[:2]
    # archived after unsubscribing: stays locked; archived while subscribed: comes back
    sb.esp_set_status(first["email_address"], "unsubscribed")
    for member in (first, second):
        assert esp.request("DELETE", f"{list_path}/members/{member['id']}").status_code == 204
    body = esp.post(
        list_path,
        json={
            "update_existing": True,
            "members": [
                {"email_address": first["email_address"], "status": "subscribed"},
                {"email_address": second["email_address"], "status": "subscribed"},
                {"email_address": "twice@example.com", "status": "subscribed"},
                {"email_address": "TWICE@example.com", "status": "subscribed"},
            ],
        },
    ).json()
    assert [e["email_address"] for e in body["errors"]] == [first["email_address"], "TWICE@example.com"]
    assert sb.esp_member(second["email_address"])["status"] == "subscribed"
    assert sb.esp_member(first["email_address"])["status"] == "archived"
    body = esp.post(
        list_path, json={"members": [{"email_address": second["email_address"], "status": "subscribed"}]}
    )
    assert body.json()["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS"
    too_many = [{"email_address": f"p{i}@example.com", "status": "subscribed"} for i in range(501)]
    response = esp.post(list_path, json={"members": too_many})
    assert response.status_code == 400 and response.json()["title"] == "Invalid Resource"


def test_single_member_endpoints_and_forgotten_contacts(fresh_sandbox, esp, list_path):
    sb = fresh_sandbox
    email = "Solo.Member@example.com"
    path = f"{list_path}/members/{md5(email)}"
    assert esp.get(path).status_code == 404
    response = esp.request("PUT", path, json={"email_address": email})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "status_if_new"
    member = esp.request(
        "PUT",
        path,
        json={"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Solo"}},
    ).json()
    assert member["status"] == "subscribed" and member["merge_fields"]["FNAME"] == "Solo"
    member = esp.request("PATCH", path, json={"merge_fields": {"LNAME": "Member"}, "language": "de"}).json()
    assert member["merge_fields"]["FNAME"] == "Solo" and member["merge_fields"]["LNAME"] == "Member"
    assert esp.post(f"{path}/tags", json={"tags": [{"name": "vip", "status": "active"}]}).status_code == 204
    assert [t["name"] for t in esp.get(f"{path}/tags").json()["tags"]] == ["vip"]
    assert esp.request("DELETE", path).status_code == 204
    assert esp.get(path).json()["status"] == "archived"
    assert esp.post(f"{path}/actions/delete-permanent").status_code == 204
    assert esp.get(path).status_code == 404 and md5(email) in sb.esp_forgotten()
    response = esp.request("PUT", path, json={"email_address": email, "status_if_new": "subscribed"})
    assert response.status_code == 400 and response.json()["title"] == "Forgotten Email Not Subscribed"
    locked = by_status(sb, "cleaned")[0]
    response = esp.request("PATCH", f"{list_path}/members/{locked['id']}", json={"status": "subscribed"})
    assert response.status_code == 400 and response.json()["title"] == "Member In Compliance State"


def test_campaigns_and_email_activity_paging(fresh_sandbox, esp):
    campaigns = esp.get("/campaigns", params={"count": 1000}).json()
    assert campaigns["total_items"] == len(fresh_sandbox.esp_campaigns()) >= 2
    campaign = campaigns["campaigns"][0]
    assert campaign["type"] == "regular" and campaign["status"] == "sent" and campaign["emails_sent"] > 0
    assert {"subject_line", "title"} <= set(campaign["settings"]) and campaign["recipients"]["list_id"]
    later = esp.get("/campaigns", params={"since_send_time": campaigns["campaigns"][1]["send_time"]}).json()
    assert later["total_items"] == campaigns["total_items"] - 1
    events = fresh_sandbox.esp_activity(campaign["id"])
    path = f"/reports/{campaign['id']}/email-activity"
    seen, offset = [], 0
    while page := esp.get(path, params={"count": 37, "offset": offset}).json()["emails"]:
        seen += page
        offset += 37
    assert len({e["email_id"] for e in seen}) == len(seen) == len({e["email_id"] for e in events})
    assert sum(len(e["activity"]) for e in seen) == len(events)
    since = "2026-11-17T00:00:00+00:00"
    filtered = esp.get(path, params={"since": since, "count": 1000}).json()
    stamps = [parse_instant(a["timestamp"]) for e in filtered["emails"] for a in e["activity"]]
    assert stamps and min(stamps) >= parse_instant(since)
    assert all(e["activity"] for e in filtered["emails"])
    assert filtered["total_items"] == len(
        {e["email_id"] for e in events if e["ts_ms"] >= parse_instant(since)}
    )
    actions = {a["action"] for e in seen for a in e["activity"]}
    assert actions <= {"open", "click", "bounce"} and "open" in actions


def test_activity_is_consistent_with_member_status(fresh_sandbox, esp):
    sb = fresh_sandbox
    status = {m["id"]: m["status"] for m in sb.esp_members()}
    hard = [e for e in sb.esp_activity() if e["action"] == "bounce" and e["type"] == "hard"]
    unsubscribed = sb.esp_unsubscribes()
    assert unsubscribed or hard
    assert all(status[e["email_id"]] == "cleaned" for e in hard)
    assert all(
        status[u["email_id"]] == "unsubscribed"
        for u in unsubscribed
        if u["email_id"] not in {e["email_id"] for e in hard}
    )
    for campaign in sb.esp_campaigns():
        report = esp.get(f"/reports/{campaign['id']}/unsubscribed", params={"count": 1000}).json()
        assert report["total_items"] == sum(u["campaign_id"] == campaign["id"] for u in unsubscribed)
        assert all(
            set(u) >= {"email_id", "email_address", "timestamp", "reason", "campaign_id", "list_id"}
            for u in report["unsubscribes"]
        )
    assert esp.get("/reports/nope/email-activity").status_code == 404


def test_ecommerce_products_customers_orders(fresh_sandbox, esp):
    sb = fresh_sandbox
    store_id = sb.info["store_id"]
    base = f"/ecommerce/stores/{store_id}"
    assert esp.get("/ecommerce/stores").json()["total_items"] == 1
    product = {"id": "p1", "title": "Socks", "variants": [{"id": "v1", "title": "M", "price": 9.9}]}
    assert esp.post(f"{base}/products", json=product).status_code == 200
    assert esp.post(f"{base}/products", json=product).status_code == 400  # the id exists
    assert esp.request("PUT", f"{base}/products/p1", json=product).status_code == 405  # Mailchimp has no PUT
    more = {"variants": [{"id": "v2", "title": "L", "price": 9.9}]}
    assert [v["id"] for v in esp.request("PATCH", f"{base}/products/p1", json=more).json()["variants"]] == [
        "v1",
        "v2",
    ]
    assert esp.request("PATCH", f"{base}/products/nope", json=more).status_code == 404
    unsub = by_status(sb, "unsubscribed")[0]
    order = {
        "id": "o1",
        "currency_code": "EUR",
        "order_total": 9.9,
        "campaign_id": "c1",
        "processed_at_foreign": "2026-11-19T10:00:00+01:00",
        "customer": {"id": "cu1", "email_address": unsub["email_address"], "opt_in_status": True},
        "lines": [{"id": "l1", "product_id": "p1", "product_variant_id": "v1", "quantity": 1, "price": 9.9}],
    }
    bad = dict(order, id="o0", lines=[dict(order["lines"][0], product_variant_id="nope")])
    assert esp.post(f"{base}/orders", json=bad).status_code == 400
    response = esp.post(f"{base}/orders", json=order)
    assert response.status_code == 200, response.text
    assert response.json()["processed_at_foreign"] == "2026-11-19T09:00:00+00:00"
    assert esp.post(f"{base}/orders", json=order).status_code == 400  # the id exists
    assert sb.esp_member(unsub["email_address"])["status"] == "unsubscribed"  # opt-in never overrides
    guest = {"id": "cu2", "email_address": "shopper@example.net", "opt_in_status": False}
    assert esp.request("PUT", f"{base}/customers/cu2", json=guest).status_code == 200
    assert sb.esp_member("shopper@example.net")["status"] == "transactional"
    assert [o["id"] for o in esp.get(f"{base}/orders", params={"campaign_id": "c1"}).json()["orders"]] == [
        "o1"
    ]
    assert (
        esp.request("PATCH", f"{base}/orders/o1", json={"financial_status": "refunded"}).json()[
            "financial_status"
        ]
        == "refunded"
    )
    assert esp.request("DELETE", f"{base}/orders/o1").status_code == 204
    assert esp.get(f"{base}/orders/o1").status_code == 404
    assert [c["id"] for c in sb.esp_customers()] == ["cu1", "cu2"] and sb.esp_products()[0]["id"] == "p1"


@pytest.mark.parametrize("status", ["subscribed", "pending"])
def test_put_never_resubscribes_unsubscribed_members(fresh_sandbox, esp, list_path, status):
    member = by_status(fresh_sandbox, "unsubscribed")[0]
    response = esp.request(
        "PUT",
        f"{list_path}/members/{member['id']}",
        json={"email_address": member["email_address"], "status": status},
    )
    assert response.status_code == 400
    assert fresh_sandbox.esp_member(member["email_address"])["status"] == "unsubscribed"


def test_fields_and_exclude_fields_shape_the_answer(fresh_sandbox, esp, list_path):
    members = [{"email_address": f"shape{i}@example.com", "status_if_new": "subscribed"} for i in range(3)]
    full = esp.post(list_path, json={"members": members}).json()
    assert "merge_fields" in full["new_members"][0]
    slim = esp.post(
        list_path,
        params={"fields": "updated_members.email_address,total_updated"},
        json={"members": members, "update_existing": True},
    ).json()
    assert slim == {
        "updated_members": [{"email_address": m["email_address"]} for m in members],
        "total_updated": 3,
    }
    page = esp.get(
        f"{list_path}/members", params={"count": 2, "exclude_fields": "members.merge_fields,_links"}
    ).json()
    assert (
        "merge_fields" not in page["members"][0]
        and "_links" not in page
        and page["members"][0]["email_address"]
    )
