"""The ESP app: a subset of the Mailchimp Marketing API v3 under ``/3.0``.

Auth is HTTP Basic with any user name and the API key as password. Every error is Mailchimp's
problem JSON. The vendor limiter (switched on with ``rate_limit: {"vendor": true}``) is Mailchimp's
"10 simultaneous connections per API key". Batch operations (sandbox/esp_batches.py) hand out their
results as pre-signed links: a call to such a link needs its signature, not the API key.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs

from starlette.requests import Request

from sandbox import esp_batches, esp_ecommerce, esp_members, esp_reports
from sandbox.esp_http import problem
from sandbox.web import AppState, Reply, Vendor


class Mailchimp(Vendor):
    system = "esp"

    def routes(self):
        return [*esp_members.ROUTES, *esp_reports.ROUTES, *esp_ecommerce.ROUTES, *esp_batches.ROUTES]

    def credential(self, request: Request) -> str | None:
        if request.url.path.startswith(esp_batches.RESULTS_PREFIX):
            return f"presigned:{request.url.path}?{request.url.query}"
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None

    def authorized(self, state: AppState, credential: str | None) -> bool:
        if credential and credential.startswith("presigned:"):
            path, _, query = credential.removeprefix("presigned:").partition("?")
            args = {k: v[-1] for k, v in parse_qs(query).items()}
            return esp_batches.signed(state.settings.esp_api_key, path, args)
        return credential == state.settings.esp_api_key

    def unauthorized(self) -> Reply:
        return problem(401)

    def too_many_requests(self, retry_after: str, *, vendor_limit: bool) -> Reply:
        detail = (
            "You have exceeded the limit of 10 simultaneous connections."
            if vendor_limit
            else "You have made too many requests recently. Please slow down."
        )
        return problem(429, detail, headers={"Retry-After": retry_after})

    def server_error(self, status: int) -> Reply:
        return problem(status)

    def bad_request(self, message: str) -> Reply:
        return problem(
            400, message, title="Invalid Resource" if "JSON" not in message else "JSON Parse Error"
        )

    def not_found(self) -> Reply:
        return problem(404)

    def method_not_allowed(self) -> Reply:
        return problem(405)

    def limit(self, state: AppState, credential, method, path):
        cfg = state.faults.vendor_limit(self.system, method, path)
        if cfg is not None and state.faults.in_flight.get(credential, 0) > int(cfg.get("max_concurrent", 10)):
            return {}, self.too_many_requests("1", vendor_limit=True)
        return {}, None
