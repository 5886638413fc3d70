"""ShopHook (Shopify orders, Link paging, leaky bucket) and LoyaltySftpHook (host key, marker)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pytest

from mailsync.hooks import shop
from mailsync.hooks.base import VendorError
from mailsync.hooks.sftp import LoyaltySftpHook, UnsafePath
from mailsync.hooks.shop import ShopHook
from tests.connections import variant

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)


def test_orders_page_through_the_link_header(vendors, monkeypatch):
    monkeypatch.setattr(shop, "PAGE", 40)
    hook = ShopHook()
    pages = list(hook.iter_orders(START, END))
    ids = [o["id"] for page in pages for o in page]
    expected = {
        o["id"] for o in vendors.shop_orders() if START <= datetime.fromisoformat(o["updated_at"]) <= END
    }
    assert len(pages) >= 3 and len(ids) == len(set(ids)) and set(ids) == expected
    paged = [r for r in vendors.requests("shop") if "page_info" in (r["query"] or "")]
    assert len(paged) == len(pages) - 1  # later pages carry only the cursor


def test_leaky_bucket_429_is_waited_out(vendors, monkeypatch):
    monkeypatch.setattr(shop, "PAGE", 10)
    vendors.set_faults("shop", rate_limit={"next": 2, "retry_after": 0.1})
    hook = ShopHook()
    ids = [o["id"] for page in hook.iter_orders(START, END) for o in page]
    assert len(ids) == len(set(ids)) > 20 and hook.stats.retries == 2


def test_shop_auth_failure_is_clear(vendors, connections):
    conn = variant(connections, "shop_default", "shop_bad", password="shpat_wrong")
    ok, message = ShopHook(conn).test_connection()
    assert not ok and "HTTP 401" in message and "shpat_wrong" not in message


def test_sftp_verifies_the_host_key_and_downloads_a_checked_file(vendors):
    hook = LoyaltySftpHook(conn_retry_attempts=1)
    assert hook.test_connection()[0]
    day = date(2026, 11, 19)
    assert hook.status(day) == "ready"
    into = io.BytesIO()
    download = hook.download(day, into)
    data = into.getvalue()
    assert data == vendors.loyalty_path("2026-11-19").read_bytes() and download.size == len(data)
    text = data.decode("cp1252")
    assert text.startswith("customer_id;tier_code;") and any(ord(ch) > 127 for ch in text)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # a legacy file indeed: reading it as UTF-8 would be wrong


def test_sftp_with_a_wrong_host_key_is_refused(vendors, connections):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other_key = Ed25519PrivateKey.generate().public_key()
    fake = other_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    conn = variant(connections, "loyalty_sftp", "sftp_wrong_key", extra={"host_key": fake})
    ok, message = LoyaltySftpHook(conn, conn_retry_attempts=1).test_connection()
    assert not ok and "HostKeyMismatch: host key mismatch" in message and "host_key extra" in message


def test_half_written_and_missing_files_are_never_read_as_complete(vendors):
    hook = LoyaltySftpHook(conn_retry_attempts=1)
    vendors.write_loyalty_file(day="2026-11-21", fault="half_written")
    assert hook.status(date(2026, 11, 21)) == "incomplete"
    vendors.write_loyalty_file(day="2026-11-22", fault="half_written_marker")
    with pytest.raises(VendorError, match="does not match its done-marker"):
        hook.download(date(2026, 11, 22), io.BytesIO())
    assert hook.status(date(2026, 11, 23)) == "missing"


def test_paths_that_leave_the_partner_folder_are_refused():
    with pytest.raises(UnsafePath):
        LoyaltySftpHook.safe_path(_Base(), "../../etc/passwd")
    with pytest.raises(UnsafePath):
        LoyaltySftpHook.safe_path(_Base(), "/etc/passwd")
    assert (
        LoyaltySftpHook.safe_path(_Base(), "2026-11-19/loyalty_tiers.csv")
        == "loyalty/2026-11-19/loyalty_tiers.csv"
    )


class _Base:
    base_dir = "loyalty"
