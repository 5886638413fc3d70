"""The shop: Shopify Admin REST API (orders) over an ordinary `http` connection.

Connection `shop_default`: host = https://<shop>.myshopify.com, password = Admin API access
token (sent as X-Shopify-Access-Token); extra: `api_version` (e.g. 2024-10).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import requests

from mailsync.hooks.base import VendorError, VendorHttpHook

PAGE = 250  # Shopify's largest `limit`
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


class ShopifyAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["X-Shopify-Access-Token"] = self.token
        return request


class ShopHook(VendorHttpHook):
    """Shopify Admin REST: orders updated in an interval, cursor-paged through the Link header."""

    default_conn_name = "shop_default"
    hook_name = "Shop (Shopify Admin REST)"
    vendor = "SHOP"
    option_keys = ("api_version",)
    default_max_connections = 2

    def _auth(self, connection) -> ShopifyAuth:
        if not connection.password:
            raise VendorError(f"connection {self.http_conn_id!r} has no access token (password field)")
        return ShopifyAuth(connection.password)

    def api(self, path: str) -> str:
        return f"admin/api/{self.options.get('api_version', '2024-10')}/{path}"

    def test_connection(self) -> tuple[bool, str]:
        try:
            count = self.call("GET", self.api("orders/count.json"), params={"status": "any"}).json()
        except VendorError as exc:
            return False, str(exc)
        return True, f"Shopify answered ({count.get('count', '?')} orders)"

    def iter_orders(self, updated_min: datetime, updated_max: datetime) -> Iterator[list[dict[str, Any]]]:
        """Orders of any status updated in [updated_min, updated_max], 250 per page.

        Shopify filters with inclusive bounds; callers drop the orders updated exactly at the
        interval end (they belong to the next interval).
        """
        params: dict[str, Any] | None = {
            "status": "any",
            "limit": PAGE,
            "updated_at_min": updated_min.isoformat(),
            "updated_at_max": updated_max.isoformat(),
            "order": "id asc",
        }
        url = self.api("orders.json")
        while url:
            response = self.call("GET", url, params=params)
            self._respect_bucket(response)
            orders = response.json().get("orders", [])
            if orders:
                yield orders
            match = _NEXT.search(response.headers.get("Link", ""))
            url, params = (match.group(1), None) if match else (None, None)  # the cursor carries the filters

    def _respect_bucket(self, response: requests.Response) -> None:
        """Slow down before the leaky bucket overflows instead of collecting 429s."""
        used, _, size = response.headers.get("X-Shopify-Shop-Api-Call-Limit", "0/40").partition("/")
        if size and int(used) >= int(size) - 2:
            time.sleep(1.0)
