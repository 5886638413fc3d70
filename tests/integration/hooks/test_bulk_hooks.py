"""The bulk paths of the hooks against the sandbox: HubSpot exports (CrmHook.export_contacts) and
Mailchimp batch operations (EspHook.run_batch), with the faults an async job can have: an export
that fails, a batch that refuses half its operations, polls that never end, 429s while polling.
Poll intervals are 20-50 ms here, so every test takes well under a second of waiting."""

from __future__ import annotations

import pytest

from mailsync.hooks.base import JobFailed, JobTimeout, VendorError
from mailsync.hooks.crm import CrmHook
from mailsync.hooks.esp import EspHook, subscriber_hash

PROPS = ["email", "firstname", "lastname", "city", "country", "marketing_consent"]
FAST = {"poll_interval_s": 0.02, "timeout_s": 10}


def _plain(record: dict) -> dict:
    """A record with "" read as None: the list API tells them apart, a CSV cannot."""
    return {k: (None if v == "" else v) for k, v in record.items()}


# --- CRM exports ---------------------------------------------------------------------------------


def test_export_yields_every_contact_as_the_list_api_does(vendors):
    hook = CrmHook()
    pages = list(hook.export_contacts(PROPS, page_size=400, **FAST))
    exported = {r["hs_object_id"]: r for page in pages for r in page}
    listed = {r["hs_object_id"]: _plain(r) for page in CrmHook().iter_contacts(PROPS) for r in page}
    assert [len(p) for p in pages] == [400, 400, len(listed) - 800]
    assert exported == listed  # same keys, same values, archived contacts left out as the list does
    log = vendors.requests("crm")
    reads = [r for r in log if r["path"].startswith("/crm/v3/exports/export/async/tasks/")]
    download = [r for r in log if r["path"].startswith("/hubspot-exports/")]
    assert (
        len(reads) >= 2
    )  # the sandbox's default: done at the 2nd read (later if the file is not written yet)
    assert hook.stats.as_dict() == {"api_calls": 2 + len(reads), "write_calls": 0, "retries": 0}
    assert len(download) == 1 and download[0]["path"].endswith(".csv")
    assert "Signature=" in download[0]["query"]


def test_a_zipped_export_is_read_member_by_member(vendors):
    vendors.set_faults("crm", jobs={"zip_over": 0})  # HubSpot zips CSVs over 2 MB; here every one
    rows = [r for page in CrmHook().export_contacts(["email"], **FAST) for r in page]
    assert len(rows) == len(vendors.crm_contacts())
    assert [r["path"][-4:] for r in vendors.requests("crm") if r["path"].startswith("/hubspot-exports/")] == [
        ".zip"
    ]


def test_an_export_that_ends_canceled_raises_naming_the_export_and_its_status(vendors):
    vendors.set_faults("crm", jobs={"fail": True})
    with pytest.raises(JobFailed) as err:
        list(CrmHook().export_contacts(PROPS, **FAST))
    message = str(err.value)
    assert message.startswith("CRM export 4784") and " ended CANCELED with 1 error(s): " in message
    assert "rerun the task" in message
    token = vendors.info["credentials"]["crm_token"]
    assert token not in message and "@" not in message


def test_an_export_that_never_completes_times_out(vendors):
    vendors.set_faults("crm", jobs={"stall": True})
    with pytest.raises(JobTimeout) as err:
        list(CrmHook().export_contacts(PROPS, poll_interval_s=0.05, timeout_s=0.3))
    assert "CRM export 4784" in str(err.value)
    assert "not finished after 0.3s" in str(err.value) and "last: PROCESSING" in str(err.value)


def test_429_while_polling_an_export_is_retried(vendors):
    vendors.set_faults(
        "crm", rate_limit={"next": 2, "retry_after": 0.1, "path": "/crm/v3/exports/export/async/tasks/*"}
    )
    hook = CrmHook()
    rows = [r for page in hook.export_contacts(["email"], **FAST) for r in page]
    assert len(rows) == len(vendors.crm_contacts())
    assert hook.stats.retries == 2


def test_a_download_cut_short_is_fetched_again(vendors):
    vendors.set_faults("crm", drop={"count": 1, "path": "/hubspot-exports/*"})
    hook = CrmHook()
    rows = [r for page in hook.export_contacts(["email"], **FAST) for r in page]
    assert len(rows) == len(vendors.crm_contacts()) and hook.stats.retries == 1


def test_an_unknown_property_is_a_clear_4xx_not_retried(vendors):
    hook = CrmHook()
    with pytest.raises(VendorError) as err:
        list(hook.export_contacts(["no_such_property"], **FAST))
    assert "HTTP 400" in str(err.value) and "no_such_property" in str(err.value)
    assert hook.stats.calls == 1


# --- ESP batch operations ------------------------------------------------------------------------


def _member_ops(list_id: str, n: int, prefix: str = "bulk") -> list[dict]:
    return [
        {
            "operation_id": f"{prefix}{i}@example.com",
            "method": "PUT",
            "path": f"/lists/{list_id}/members/{subscriber_hash(f'{prefix}{i}@example.com')}",
            "body": {"email_address": f"{prefix}{i}@example.com", "status_if_new": "subscribed"},
        }
        for i in range(n)
    ]


def _shop_ops(store_id: str) -> list[dict]:
    product = {"id": "P1", "title": "Mug", "variants": [{"id": "P1-V", "title": "Mug", "price": 9.5}]}

    def order(order_id: str, product_id: str) -> dict:
        return {
            "id": order_id,
            "customer": {"id": f"C-{order_id}", "email_address": f"{order_id.lower()}@example.com"},
            "currency_code": "EUR",
            "order_total": 9.5,
            "lines": [
                {
                    "id": "L1",
                    "product_id": product_id,
                    "product_variant_id": f"{product_id}-V",
                    "quantity": 1,
                    "price": 9.5,
                }
            ],
        }

    base = f"/ecommerce/stores/{store_id}"
    return [
        {"operation_id": "product:P1", "method": "POST", "path": f"{base}/products", "body": product},
        {"operation_id": "order:O1", "method": "POST", "path": f"{base}/orders", "body": order("O1", "P1")},
        {"operation_id": "order:O2", "method": "POST", "path": f"{base}/orders", "body": order("O2", "P404")},
    ]


def test_a_batch_of_orders_and_products_with_one_refused_order(vendors):
    hook = EspHook()
    results = list(hook.run_batch(_shop_ops(vendors.info["store_id"]), **FAST))
    assert len(results) == 1
    assert [a["key"] for a in results[0].accepted] == ["product:P1", "order:O1"]
    assert results[0].accepted[1]["response"]["id"] == "O1"
    [refused] = results[0].rejected
    assert refused["key"] == "order:O2" and refused["status_code"] == 400
    assert refused["reason"].startswith(
        "HTTP 400 Invalid Resource: A product with the provided ID does not exist"
    )
    assert "lines[0].product_id" in refused["reason"]
    assert [o["id"] for o in vendors.esp_orders()] == ["O1"]  # the refused one wrote nothing
    # one POST, two status reads, one archive: not one call per record
    assert hook.stats.as_dict() == {"api_calls": 4, "write_calls": 1, "retries": 0}


def test_a_batch_that_fails_half_its_operations(vendors):
    vendors.set_faults("esp", jobs={"fail_every": 2})
    ops = _member_ops(vendors.info["list_id"], 40)
    [result] = list(EspHook().run_batch(ops, **FAST))
    assert sorted(a["key"] for a in result.accepted) == sorted(op["operation_id"] for op in ops[0::2])
    assert sorted(r["key"] for r in result.rejected) == sorted(op["operation_id"] for op in ops[1::2])
    assert {r["status_code"] for r in result.rejected} == {400}
    assert all("HTTP 400 Invalid Resource: The operation was refused" in r["reason"] for r in result.rejected)
    assert all(a["response"]["status"] == "subscribed" for a in result.accepted)
    assert vendors.esp_member("bulk0@example.com") is not None
    assert vendors.esp_member("bulk1@example.com") is None  # a refused operation wrote nothing


def test_operations_go_1000_per_batch_call(vendors):
    hook = EspHook()
    results = list(hook.run_batch(_member_ops(vendors.info["list_id"], 2100, "many"), **FAST))
    assert sorted(len(r.accepted) for r in results) == [100, 1000, 1000]
    posts = [r for r in vendors.requests("esp") if r["method"] == "POST" and r["path"] == "/3.0/batches"]
    assert sorted(p["n_records"] for p in posts) == [100, 1000, 1000]
    assert hook.stats.writes == 3


def test_a_batch_that_never_finishes_times_out_and_is_stopped(vendors):
    vendors.set_faults("esp", jobs={"stall": True})
    with pytest.raises(JobTimeout) as err:
        list(
            EspHook().run_batch(_member_ops(vendors.info["list_id"], 5), poll_interval_s=0.05, timeout_s=0.3)
        )
    message = str(err.value)
    assert message.startswith("ESP batch operations: 1 batch(es) not finished after 0.3s (")
    assert " started 0/5); stopped 1 of them" in message
    deletes = [r for r in vendors.requests("esp") if r["method"] == "DELETE"]
    assert len(deletes) == 1 and deletes[0]["path"].startswith("/3.0/batches/")


def test_429_while_polling_a_batch_is_retried(vendors):
    vendors.set_faults(
        "esp", rate_limit={"next": 2, "retry_after": 0.1, "method": "GET", "path": "/3.0/batches/*"}
    )
    hook = EspHook()
    [result] = list(hook.run_batch(_member_ops(vendors.info["list_id"], 3, "polled"), **FAST))
    assert len(result.accepted) == 3 and hook.stats.retries == 2


def test_batches_already_sent_are_awaited_before_a_refused_one_raises(vendors):
    ops = _member_ops(vendors.info["list_id"], 1001, "sent")
    ops.append({**ops[0], "operation_id": "twice", "method": "FETCH"})  # Mailchimp refuses the 2nd batch
    results = []
    with pytest.raises(VendorError, match="HTTP 400"):
        for result in EspHook().run_batch(ops, **FAST):
            results.append(result)
    assert [len(r.accepted) for r in results] == [1000]


def test_operation_ids_must_be_given_and_unique(vendors):
    ops = _member_ops(vendors.info["list_id"], 2)
    with pytest.raises(ValueError, match="appears twice"):
        list(EspHook().run_batch([ops[0], ops[0]], **FAST))
    with pytest.raises(ValueError, match="needs an operation_id"):
        list(EspHook().run_batch([{**ops[0], "operation_id": None}], **FAST))
