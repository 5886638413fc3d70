"""Contract of the sandbox's bulk endpoints: HubSpot's CRM exports and Mailchimp's batch operations.

Shapes, statuses and errors as the vendors document them (sandbox/crm_exports.py and
sandbox/esp_batches.py cite the pages), auth and faults applying to them, and the pre-signed result
links (no credentials, a signature that is checked and expires)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from urllib.parse import urlsplit

import pytest
import requests

from sandbox.esp_batches import sign

EXPORTS = "/crm/v3/exports/export/async"


def export_body(**changes) -> dict:
    body = {
        "exportType": "VIEW",
        "format": "CSV",
        "exportName": "All contacts",
        "objectType": "CONTACT",
        "objectProperties": ["email", "firstname", "lastmodifieddate"],
        "language": "EN",
        "exportInternalValuesOptions": ["NAMES", "VALUES"],
    }
    return {k: v for k, v in (body | changes).items() if v is not None}


def read_status(crm, export_id: str) -> dict:
    response = crm.get(f"{EXPORTS}/tasks/{export_id}/status")
    assert response.status_code == 200, response.text
    return response.json()


def finish_export(crm, body: dict | None = None) -> tuple[str, dict]:
    started = crm.post(EXPORTS, json=body or export_body())
    assert started.status_code == 202, started.text
    export_id = started.json()["id"]
    for _ in range(50):
        status = read_status(crm, export_id)
        if status["status"] == "COMPLETE":
            return export_id, status
    raise AssertionError(f"export {export_id} did not complete: {status}")


def csv_rows(content: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


# --- CRM exports ---------------------------------------------------------------------------------


def test_export_start_status_and_file(fresh_sandbox, crm):
    fresh_sandbox.set_faults("crm", jobs={"polls": 3})
    started = crm.post(EXPORTS, json=export_body())
    assert started.status_code == 202
    export_id = started.json()["id"]
    assert export_id.isdigit()
    assert started.json()["links"] == {"status": f"{crm.base}{EXPORTS}/tasks/{export_id}/status"}
    assert "X-HubSpot-RateLimit-Remaining" in started.headers
    statuses = [read_status(crm, export_id) for _ in range(4)]
    assert [s["status"] for s in statuses] == ["PROCESSING", "PROCESSING", "COMPLETE", "COMPLETE"]
    assert "result" not in statuses[0] and "completedAt" not in statuses[0]
    done = statuses[2]
    assert {"requestedAt", "startedAt", "completedAt", "links", "result"} <= set(done)
    url = urlsplit(done["result"])
    assert url.path == f"/hubspot-exports/{export_id}/All-contacts.csv"
    assert "Expires=" in url.query and "Signature=" in url.query
    file = requests.get(done["result"], timeout=10)  # no credentials: the link is pre-signed
    assert file.status_code == 200 and file.headers["content-type"].startswith("text/csv")
    assert 'filename="All-contacts.csv"' in file.headers["content-disposition"]
    assert "X-HubSpot-RateLimit-Remaining" not in file.headers  # a file download, not an API call
    rows = csv_rows(file.content)
    assert list(rows[0]) == ["hs_object_id", "email", "firstname", "lastmodifieddate"]
    contacts = {c["id"]: c for c in fresh_sandbox.crm_contacts()}  # archived ones are not exported
    assert [r["hs_object_id"] for r in rows] == sorted(contacts, key=int)
    sample = contacts[rows[7]["hs_object_id"]]["properties"]
    assert rows[7]["email"] == sample["email"] and rows[7]["lastmodifieddate"] == sample["lastmodifieddate"]


def test_export_headers_are_labels_without_names_and_filters_narrow_it(crm, fresh_sandbox):
    contact = fresh_sandbox.crm_contacts()[3]
    body = export_body(
        exportInternalValuesOptions=None,
        publicCrmSearchRequest={
            "filters": [{"propertyName": "email", "operator": "EQ", "value": contact["properties"]["email"]}]
        },
    )
    _, status = finish_export(crm, body)
    rows = csv_rows(requests.get(status["result"], timeout=10).content)
    assert list(rows[0]) == ["Record ID", "Email", "First Name", "Last Modified Date"]
    assert [r["Record ID"] for r in rows] == [contact["id"]]


def test_export_zipped_when_large(fresh_sandbox, crm):
    fresh_sandbox.set_faults("crm", jobs={"zip_over": 1000})  # HubSpot: over 2 MB
    _, status = finish_export(crm)
    assert status["result"].split("?")[0].endswith(".zip")
    file = requests.get(status["result"], timeout=10)
    assert file.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(file.content)) as archive:
        assert archive.namelist() == ["All-contacts.csv"]
        assert len(csv_rows(archive.read("All-contacts.csv"))) == len(fresh_sandbox.crm_contacts())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exportType": None}, "Required field 'exportType' is missing"),
        ({"exportType": "REPORT"}, "Invalid exportType 'REPORT': one of VIEW, LIST"),
        ({"format": "XLSX"}, "format XLSX: the sandbox writes CSV exports only"),
        ({"language": "XX"}, "Invalid language 'XX'"),
        ({"objectType": "DEAL"}, "Invalid objectType 'DEAL'"),
        ({"objectProperties": ["email", "nope"]}, "Property nope does not exist"),
        ({"objectProperties": []}, "Required field 'objectProperties' is missing"),
        ({"exportName": ""}, "Required field 'exportName' is missing"),
        (
            {"exportInternalValuesOptions": ["LABELS"]},
            "exportInternalValuesOptions takes NAMES and/or VALUES",
        ),
        (
            {"publicCrmSearchRequest": {"filterGroups": [{"filters": []}] * 4}},
            "An export takes at most 3 filterGroups of at most 3 filters each",
        ),
    ],
)
def test_export_validation_errors(crm, changes, message):
    response = crm.post(EXPORTS, json=export_body(**changes))
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith(message) and body["correlationId"]


def test_export_errors_for_lists_and_unknown_tasks(crm):
    listed = crm.post(EXPORTS, json=export_body(exportType="LIST", listId=123))
    assert listed.status_code == 404 and listed.json()["category"] == "OBJECT_NOT_FOUND"
    assert crm.get(f"{EXPORTS}/tasks/999/status").status_code == 404
    bad = crm.get(f"{EXPORTS}/tasks/abc/status")
    assert bad.status_code == 400 and bad.json()["errors"][0]["subCategory"] == "INVALID_ID"


def test_export_auth_and_signed_links(fresh_sandbox, crm):
    anonymous = requests.post(crm.base + EXPORTS, json=export_body(), timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["category"] == "INVALID_AUTHENTICATION"
    export_id, status = finish_export(crm)
    assert requests.get(f"{crm.base}{EXPORTS}/tasks/{export_id}/status", timeout=10).status_code == 401
    url = status["result"]
    tampered = url.replace("Signature=", "Signature=0")
    assert requests.get(tampered, timeout=10).status_code == 401
    other = url.replace(f"/hubspot-exports/{export_id}/", "/hubspot-exports/1/")
    assert requests.get(other, timeout=10).status_code == 401  # the signature covers the path
    path = urlsplit(url).path
    stale = crm.base + sign(fresh_sandbox.info["credentials"]["crm_token"], path, -1)
    expired = requests.get(stale, timeout=10)
    assert expired.status_code == 403 and b"Request has expired" in expired.content


def test_export_faults_fail_stall_and_rate_limit(fresh_sandbox, crm):
    fresh_sandbox.set_faults("crm", jobs={"fail": True, "polls": 1, "count": 1})
    failed_id = crm.post(EXPORTS, json=export_body()).json()["id"]
    for _ in range(50):
        failed = read_status(crm, failed_id)
        if failed["status"] != "PROCESSING":
            break
    assert failed["status"] == "CANCELED" and failed["numErrors"] == 1 and "result" not in failed
    assert failed["errors"][0]["category"] == "INTERNAL_ERROR"
    assert failed["errors"][0]["context"] == {"exportId": [failed_id]}
    assert fresh_sandbox.faults()["crm"]["jobs"]["remaining"] == 0  # the next export is normal
    finish_export(crm)

    fresh_sandbox.set_faults("crm", jobs={"stall": True})
    stalled_id = crm.post(EXPORTS, json=export_body()).json()["id"]
    assert {read_status(crm, stalled_id)["status"] for _ in range(6)} == {"PROCESSING"}

    fresh_sandbox.set_faults("crm", rate_limit={"next": 1, "retry_after": 1, "path": f"{EXPORTS}/tasks/*"})
    limited = crm.get(f"{EXPORTS}/tasks/{stalled_id}/status")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"


# --- ESP batch operations ------------------------------------------------------------------------


def member_op(list_id: str, email: str, **body) -> dict:
    from sandbox.esp_model import subscriber_hash

    payload = {"email_address": email, "status_if_new": "subscribed"} | body
    return {
        "method": "PUT",
        "path": f"/lists/{list_id}/members/{subscriber_hash(email)}",
        "operation_id": email,
        "body": json.dumps(payload),
    }


def archive_results(url: str) -> list[dict]:
    file = requests.get(url, timeout=10)  # pre-signed: no API key
    assert file.status_code == 200 and file.headers["content-type"] == "application/x-gzip"
    out = []
    with tarfile.open(fileobj=io.BytesIO(file.content), mode="r:gz") as archive:
        for member in archive.getmembers():
            assert member.name.endswith(".json")
            out.extend(json.load(archive.extractfile(member)))
    return out


def test_batch_runs_operations_and_serves_results(fresh_sandbox, esp):
    list_id, store = fresh_sandbox.info["list_id"], fresh_sandbox.info["store_id"]
    product = {"id": "P1", "title": "Mug", "variants": [{"id": "V1", "title": "Mug", "price": 9}]}
    order = {
        "id": "O1",
        "customer": {"id": "C1", "email_address": "buyer@example.com"},
        "currency_code": "EUR",
        "order_total": 9,
        "lines": [{"id": "L1", "product_id": "P1", "product_variant_id": "V1", "quantity": 1, "price": 9}],
    }
    ops = [
        member_op(list_id, "batch1@example.com"),
        member_op(list_id, "batch2@example.com", merge_fields={"NOPE": 1}),  # refused alone
        {
            "method": "POST",
            "path": f"/ecommerce/stores/{store}/products",
            "operation_id": "p",
            "body": json.dumps(product),
        },
        {
            "method": "POST",
            "path": f"/ecommerce/stores/{store}/orders",
            "operation_id": "o",
            "body": json.dumps(order),
        },
        {
            "method": "GET",
            "path": f"/ecommerce/stores/{store}/orders",
            "operation_id": "list",
            "params": {"count": 5},
        },
        {"method": "GET", "path": "/no/such/path", "operation_id": "missing"},
    ]
    started = esp.post("/batches", json={"operations": ops})
    assert started.status_code == 200
    batch = started.json()
    assert batch["status"] == "pending" and batch["total_operations"] == 6
    assert (
        batch["finished_operations"] == batch["errored_operations"] == 0 and batch["response_body_url"] == ""
    )
    assert set(batch) == {
        "id",
        "status",
        "total_operations",
        "finished_operations",
        "errored_operations",
        "submitted_at",
        "completed_at",
        "response_body_url",
        "_links",
    }
    first = esp.get(f"/batches/{batch['id']}").json()
    assert (first["status"], first["finished_operations"]) == ("started", 3)
    assert fresh_sandbox.esp_orders() == []  # not yet: the order is the 4th operation
    done = esp.get(f"/batches/{batch['id']}").json()
    assert (done["status"], done["finished_operations"], done["errored_operations"]) == ("finished", 6, 2)
    assert done["completed_at"] and done["response_body_url"].startswith(
        f"{esp.base.removesuffix('/3.0')}/mailchimp-api-batch/"
    )
    results = {r["operation_id"]: r for r in archive_results(done["response_body_url"])}
    assert {k: r["status_code"] for k, r in results.items()} == {
        "batch1@example.com": 200,
        "batch2@example.com": 400,
        "p": 200,
        "o": 200,
        "list": 200,
        "missing": 404,
    }
    assert all(isinstance(r["response"], str) for r in results.values())  # JSON as a string
    refused = json.loads(results["batch2@example.com"]["response"])
    assert refused["title"] == "Invalid Resource" and "merge fields were invalid" in refused["detail"]
    assert json.loads(results["list"]["response"])["total_items"] == 1
    assert [o["id"] for o in fresh_sandbox.esp_orders()] == ["O1"]
    assert fresh_sandbox.esp_member("batch1@example.com")["status"] == "subscribed"
    assert fresh_sandbox.esp_member("batch2@example.com") is None
    listing = esp.get("/batches").json()
    assert listing["total_items"] == 1 and listing["batches"][0]["id"] == batch["id"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({}, 400, "The resource submitted could not be validated"),
        ({"operations": []}, 400, "The resource submitted could not be validated"),
        (
            {"operations": [{"method": "GET", "path": "/ping"}] * 1001},
            400,
            "A batch may hold at most 1000 operations",
        ),
        (
            {"operations": [{"method": "FETCH", "path": "/ping"}]},
            400,
            "The resource submitted could not be validated",
        ),
        (
            {"operations": [{"method": "POST", "path": "/lists", "body": {"a": 1}}]},
            400,
            "The resource submitted",
        ),
    ],
)
def test_batch_validation(esp, body, status, detail):
    response = esp.post("/batches", json=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith(detail)


def test_batch_auth_not_found_delete_and_signed_results(fresh_sandbox, esp):
    assert requests.post(esp.base + "/batches", json={"operations": []}, timeout=10).status_code == 401
    assert esp.get("/batches/nope").status_code == 404
    batch_id = esp.post("/batches", json={"operations": [{"method": "GET", "path": "/ping"}]}).json()["id"]
    url = [esp.get(f"/batches/{batch_id}").json() for _ in range(2)][-1]["response_body_url"]
    assert archive_results(url)[0] == {
        "status_code": 200,
        "operation_id": None,
        "response": json.dumps({"health_status": "Everything's Chimpy!"}, separators=(",", ":")),
    }
    assert requests.get(url.replace("Signature=", "Signature=0"), timeout=10).status_code == 401
    assert esp.request("DELETE", f"/batches/{batch_id}").status_code == 204
    assert esp.get(f"/batches/{batch_id}").status_code == 404
    assert requests.get(url, timeout=10).status_code == 404  # its results are gone with it


def test_batch_faults_half_refused_and_stalled(fresh_sandbox, esp):
    list_id = fresh_sandbox.info["list_id"]
    fresh_sandbox.set_faults("esp", jobs={"fail_every": 2, "polls": 1, "count": 1})
    ops = [member_op(list_id, f"half{i}@example.com") for i in range(10)]
    batch_id = esp.post("/batches", json={"operations": ops}).json()["id"]
    done = esp.get(f"/batches/{batch_id}").json()
    assert (done["status"], done["finished_operations"], done["errored_operations"]) == ("finished", 10, 5)
    by_id = {r["operation_id"]: r for r in archive_results(done["response_body_url"])}
    assert [by_id[op["operation_id"]]["status_code"] for op in ops] == [200, 400] * 5
    assert fresh_sandbox.esp_member("half1@example.com") is None  # refused: nothing written

    fresh_sandbox.set_faults("esp", jobs={"stall": True})
    stalled = esp.post("/batches", json={"operations": ops[:2]}).json()["id"]
    reads = [esp.get(f"/batches/{stalled}").json() for _ in range(5)]
    assert {(r["status"], r["finished_operations"]) for r in reads} == {("started", 0)}
