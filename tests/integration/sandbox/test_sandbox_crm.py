"""Contract tests of the HubSpot stand-in (list, search, batch endpoints, limits)."""

from __future__ import annotations

import uuid

from sandbox.timefmt import parse_instant

RATE_HEADERS = (
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
)
CONTACTS = "/crm/v3/objects/contacts"
WINDOW_START_MS = parse_instant("2026-11-13T00:00:00Z")


def search_all(crm, body: dict) -> tuple[list[dict], int]:
    results, after = [], None
    while True:
        page = crm.post(f"{CONTACTS}/search", json=body | ({"after": after} if after else {})).json()
        results += page["results"]
        after = page.get("paging", {}).get("next", {}).get("after")
        if not after:
            return results, page["total"]


def test_auth_failure_shape(crm):
    for header in (None, "Bearer nope"):
        crm.session.headers.pop("Authorization", None)
        if header:
            crm.session.headers["Authorization"] = header
        response = crm.get(CONTACTS)
        body = response.json()
        assert response.status_code == 401
        assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found.")
        uuid.UUID(body["correlationId"])


def test_list_paging_properties_and_rate_headers(fresh_sandbox, crm):
    ids, url, remaining = [], f"{CONTACTS}?limit=100&properties=email,city", []
    while url:
        response = crm.get(url)
        assert response.status_code == 200
        assert all(h in response.headers for h in RATE_HEADERS)
        assert response.headers["X-HubSpot-RateLimit-Max"] == "190"
        remaining.append(int(response.headers["X-HubSpot-RateLimit-Remaining"]))
        body = response.json()
        for contact in body["results"]:
            assert set(contact["properties"]) == {
                "email",
                "city",
                "hs_object_id",
                "createdate",
                "lastmodifieddate",
            }
            assert contact["archived"] is False and contact["id"] == contact["properties"]["hs_object_id"]
        ids += [c["id"] for c in body["results"]]
        url = body.get("paging", {}).get("next", {}).get("link")
    live = [c["id"] for c in fresh_sandbox.crm_contacts()]
    assert ids == live and len(set(ids)) == len(ids)  # ordered by id, none missed or repeated
    assert remaining == sorted(remaining, reverse=True)
    assert crm.get(CONTACTS, params={"limit": 101}).status_code == 400
    archived = crm.get(CONTACTS, params={"archived": "true", "limit": 100}).json()["results"]
    assert {c["id"] for c in archived} == {c["id"] for c in fresh_sandbox.crm_contacts(archived=True)}
    assert all(c["archived"] and c["archivedAt"] for c in archived)
    assert crm.get(f"{CONTACTS}/999999").json()["category"] == "OBJECT_NOT_FOUND"


def test_search_by_lastmodifieddate_and_email(fresh_sandbox, crm):
    in_window = [
        c
        for c in fresh_sandbox.crm_contacts()
        if parse_instant(c["properties"]["lastmodifieddate"]) >= WINDOW_START_MS
    ]
    assert 0.05 * 1000 < len(in_window) < 0.25 * 1000  # ~2% a day over 7 days
    for value in (str(WINDOW_START_MS), "2026-11-13T00:00:00Z"):
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": value}]}
            ],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["email", "firstname"],
            "limit": 7,
        }
        results, total = search_all(crm, body)
        assert total == len(results) == len(in_window)
        stamps = [r["properties"]["lastmodifieddate"] for r in results]
        assert stamps == sorted(stamps)
        assert {r["id"] for r in results} == {c["id"] for c in in_window}
    contact = next(
        c
        for c in fresh_sandbox.crm_contacts()
        if c["properties"]["email"] == c["properties"]["email"].strip()
    )
    body = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "email",
                        "operator": "EQ",
                        "value": contact["properties"]["email"].upper(),
                    }
                ]
            }
        ]
    }
    assert contact["id"] in {r["id"] for r in crm.post(f"{CONTACTS}/search", json=body).json()["results"]}


def test_search_limits(crm):
    beyond = crm.post(f"{CONTACTS}/search", json={"after": "10000", "limit": 10})
    assert beyond.status_code == 400 and beyond.json()["category"] == "VALIDATION_ERROR"
    assert crm.post(f"{CONTACTS}/search", json={"limit": 201}).status_code == 400
    assert crm.post(f"{CONTACTS}/search", json={"limit": 200}).json()["total"] > 0
    unknown = {"filterGroups": [{"filters": [{"propertyName": "shoe_size", "operator": "EQ", "value": "1"}]}]}
    assert crm.post(f"{CONTACTS}/search", json=unknown).status_code == 400


def test_batch_read(fresh_sandbox, crm):
    contacts = fresh_sandbox.crm_contacts()[:3]
    ids = [c["id"] for c in contacts]
    ok = crm.post(f"{CONTACTS}/batch/read", json={"inputs": [{"id": i} for i in ids], "properties": ["city"]})
    assert ok.status_code == 200 and ok.json()["status"] == "COMPLETE"
    assert [r["id"] for r in ok.json()["results"]] == ids
    partial = crm.post(f"{CONTACTS}/batch/read", json={"inputs": [{"id": ids[0]}, {"id": "424242"}]})
    body = partial.json()
    assert partial.status_code == 207 and body["numErrors"] == 1
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND" and body["errors"][0]["context"]["ids"] == [
        "424242"
    ]
    clean = next(c for c in contacts if c["properties"]["email"] == c["properties"]["email"].strip().lower())
    by_email = crm.post(
        f"{CONTACTS}/batch/read",
        json={"idProperty": "email", "inputs": [{"id": clean["properties"]["email"].upper()}]},
    ).json()
    assert by_email["results"][0]["id"] == clean["id"]


def test_batch_update_rules(fresh_sandbox, crm):
    sb = fresh_sandbox
    sb.set_clock("2026-11-21T02:00:00Z")
    ids = [c["id"] for c in sb.crm_contacts()[:2]]
    unknown = crm.post(
        f"{CONTACTS}/batch/update", json={"inputs": [{"id": ids[0], "properties": {"shoe_size": "42"}}]}
    )
    body = unknown.json()
    assert unknown.status_code == 400 and body["category"] == "VALIDATION_ERROR"
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST" and "shoe_size" in body["message"]
    bad_number = {"inputs": [{"id": ids[0], "properties": {"esp_opens_total": "many"}}]}
    assert crm.post(f"{CONTACTS}/batch/update", json=bad_number).status_code == 400
    read_only = {"inputs": [{"id": ids[0], "properties": {"lastmodifieddate": "2020-01-01T00:00:00Z"}}]}
    assert crm.post(f"{CONTACTS}/batch/update", json=read_only).status_code == 400
    too_many = {"inputs": [{"id": str(i), "properties": {"city": "x"}} for i in range(101)]}
    assert crm.post(f"{CONTACTS}/batch/update", json=too_many).status_code == 400
    dup = {"inputs": [{"id": ids[0], "properties": {"city": "x"}}] * 2}
    assert crm.post(f"{CONTACTS}/batch/update", json=dup).status_code == 400
    assert sb.crm_contact(ids[0])["properties"]["city"] != "x"  # nothing applied
    update = {
        "inputs": [
            {
                "id": ids[0],
                "properties": {
                    "email_invalid": True,
                    "email_invalid_date": "2026-11-18",
                    "esp_last_open_at": 1795000000000,
                    "esp_opens_total": 3,
                },
            },
            {"id": ids[1], "properties": {"marketing_consent": "false"}},
            {"id": "999999", "properties": {"city": "Nowhere"}},
        ]
    }
    response = crm.post(f"{CONTACTS}/batch/update", json=update)
    body = response.json()
    assert response.status_code == 207 and body["errors"][0]["context"]["ids"] == ["999999"]
    props = sb.crm_contact(ids[0])["properties"]
    assert props["email_invalid"] == "true" and props["email_invalid_date"] == "2026-11-18"
    assert props["esp_last_open_at"] == "2026-11-18T11:06:40.000Z" and props["esp_opens_total"] == "3"
    assert props["lastmodifieddate"] == "2026-11-21T02:00:00.000Z"
    assert sb.crm_contact(ids[1])["properties"]["marketing_consent"] == "false"


def test_batch_upsert_archive_and_gdpr_delete(fresh_sandbox, crm):
    sb = fresh_sandbox
    existing = next(
        c
        for c in sb.crm_contacts()
        if c["properties"]["email"] == c["properties"]["email"].strip().lower()
        and "@" in c["properties"]["email"]
    )
    body = {
        "inputs": [
            {"idProperty": "email", "id": "Brand.New@Example.com", "properties": {"firstname": "Brand"}},
            {
                "idProperty": "email",
                "id": existing["properties"]["email"].upper(),
                "properties": {"city": "Bremen"},
            },
        ]
    }
    results = crm.post(f"{CONTACTS}/batch/upsert", json=body).json()["results"]
    assert [r["new"] for r in results] == [True, False] and results[1]["id"] == existing["id"]
    created = sb.crm_contact(results[0]["id"])["properties"]
    assert created["email"] == "brand.new@example.com" and created["firstname"] == "Brand"
    assert sb.crm_contact(existing["id"])["properties"]["city"] == "Bremen"
    victims = [c["id"] for c in sb.crm_contacts()[:3]]
    assert crm.post(f"{CONTACTS}/batch/archive", json={"inputs": [{"id": victims[0]}]}).status_code == 204
    assert crm.request("DELETE", f"{CONTACTS}/{victims[1]}").status_code == 204
    archived = {c["id"] for c in sb.crm_contacts(archived=True)}
    assert {victims[0], victims[1]} <= archived and victims[0] not in {c["id"] for c in sb.crm_contacts()}
    assert crm.post(f"{CONTACTS}/gdpr-delete", json={"objectId": victims[0]}).status_code == 204
    assert crm.post(f"{CONTACTS}/gdpr-delete", json={"objectId": victims[2]}).status_code == 204
    assert sb.crm_contact(victims[0]) is None and sb.crm_contact(victims[2]) is None
    assert crm.post(f"{CONTACTS}/gdpr-delete", json={"objectId": victims[2]}).status_code == 404


def test_vendor_rate_limiter(fresh_sandbox, crm):
    fresh_sandbox.set_faults("crm", rate_limit={"vendor": True, "max": 5, "interval_ms": 1000})
    responses = [crm.get(CONTACTS, params={"limit": 1}) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["X-HubSpot-RateLimit-Remaining"] for r in responses[:5]] == ["4", "3", "2", "1", "0"]
    body = responses[5].json()
    assert body["errorType"] == "RATE_LIMIT" and body["status"] == "error" and "policyName" in body
    assert responses[5].headers["Retry-After"] == "1"


def test_search_has_a_per_second_limit_of_its_own(fresh_sandbox, crm):
    """HubSpot: 5 search requests per second per token, apart from the burst limit; the list API
    next to it is not held up."""
    fresh_sandbox.set_faults("crm", rate_limit={"vendor": True, "search_per_s": 5})
    searches = [crm.post(f"{CONTACTS}/search", json={"limit": 1}) for _ in range(6)]
    assert [r.status_code for r in searches] == [200] * 5 + [429]
    body = searches[5].json()
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "SECONDLY")
    assert body["message"] == "You have reached your secondly limit."
    assert searches[5].headers["Retry-After"] == "1"
    assert crm.get(CONTACTS, params={"limit": 1}).status_code == 200


def test_daily_limit_refuses_until_midnight(fresh_sandbox, crm):
    from datetime import UTC, datetime, timedelta

    fresh_sandbox.set_faults("crm", rate_limit={"vendor": True, "daily": 3})
    responses = [crm.get(CONTACTS, params={"limit": 1}) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["X-HubSpot-RateLimit-Daily-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["X-HubSpot-RateLimit-Daily"] == "3"
    body = responses[3].json()
    assert (body["policyName"], body["message"]) == ("DAILY", "You have reached your daily limit.")
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert abs(int(responses[3].headers["Retry-After"]) - (midnight - now).total_seconds()) < 5


def test_properties_endpoint(crm):
    results = crm.get("/crm/v3/properties/contacts").json()["results"]
    names = {p["name"]: p for p in results}
    assert {"email", "lastmodifieddate", "marketing_consent", "esp_opens_total", "email_invalid"} <= set(
        names
    )
    assert names["esp_last_open_at"]["type"] == "datetime" and names["marketing_consent"]["type"] == "bool"


def test_batch_update_by_email_is_refused_as_hubspot_does(fresh_sandbox, crm):
    email = next(c["properties"]["email"] for c in fresh_sandbox.crm_contacts() if c["properties"]["email"])
    body = {"inputs": [{"id": email, "idProperty": "email", "properties": {"city": "Kiel"}}]}
    response = crm.post(f"{CONTACTS}/batch/update", json=body)
    assert response.status_code == 400 and "non-unique 0-1 property email" in response.json()["message"]
