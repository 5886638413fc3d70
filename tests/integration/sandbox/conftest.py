"""Plain-requests clients for the three vendor apps (not the project's hooks: these are contract tests)."""

from __future__ import annotations

import pytest
import requests


class Api:
    """A requests session bound to one vendor's base URL and credentials."""

    def __init__(self, base: str, **session_attrs) -> None:
        self.base = base
        self.session = requests.Session()
        for name, value in session_attrs.items():
            setattr(self.session, name, value)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        url = path if path.startswith("http") else self.base + path
        return self.session.request(method, url, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)


def esp_api(sb) -> Api:
    creds = sb.info["credentials"]
    return Api(sb.url("esp"), auth=("anyuser", creds["esp_api_key"]))


def crm_api(sb) -> Api:
    api = Api(sb.url("crm"))
    api.session.headers["Authorization"] = f"Bearer {sb.info['credentials']['crm_token']}"
    return api


def shop_api(sb) -> Api:
    api = Api(f"{sb.url('shop')}/admin/api/2024-10")
    api.session.headers["X-Shopify-Access-Token"] = sb.info["credentials"]["shop_token"]
    return api


@pytest.fixture
def esp(sandbox) -> Api:
    return esp_api(sandbox)


@pytest.fixture
def crm(sandbox) -> Api:
    return crm_api(sandbox)


@pytest.fixture
def shop(sandbox) -> Api:
    return shop_api(sandbox)


@pytest.fixture
def list_path(sandbox) -> str:
    return f"/lists/{sandbox.info['list_id']}"
