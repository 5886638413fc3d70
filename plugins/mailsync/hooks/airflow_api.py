"""Airflow's own REST API and a chat webhook: where a run's summary and alerts are posted.

A task cannot write its DAG run's note (the execution API is read-only there), so the note goes
through the api-server's public REST API, as any client would, with the `airflow_api`
connection (HTTP: host = the api-server's URL, login and password of a user allowed to edit
runs). Both the simple and the FAB auth manager hand out a JWT at `/auth/token`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from mailsync.hooks.base import BearerAuth, VendorError, VendorHttpHook


class AirflowApiHook(VendorHttpHook):
    """Airflow REST API v2, for the one write a task cannot make itself: the DAG run's note."""

    default_conn_name = "airflow_api"
    hook_name = "Airflow REST API (run notes)"
    vendor = "Airflow API"
    default_max_connections = 1

    def _auth(self, connection) -> BearerAuth:
        url = self.url("/auth/token")
        try:
            response = requests.post(
                url, json={"username": connection.login, "password": connection.password}, timeout=30
            )
        except requests.exceptions.RequestException as exc:
            raise VendorError(
                f"Airflow API: no answer at /auth/token ({type(exc).__name__}); check the host of "
                f"connection {self.http_conn_id!r}"
            ) from exc
        if response.status_code not in (200, 201):
            raise self._error("POST", "/auth/token", response)
        return BearerAuth(response.json()["access_token"])

    def set_run_note(self, dag_id: str, run_id: str, note: str) -> None:
        self.call(
            "PATCH",
            f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
            params={"update_mask": "note"},
            json={"note": note},
            write=True,
        )


class WebhookHook(VendorHttpHook):
    """A Slack-compatible incoming webhook: POST {"text": ...}. The connection's host is the
    service (https://hooks.slack.com) and its password the secret path (/services/T…/B…/…),
    so the secret is kept as one and masked in logs."""

    default_conn_name = "mailsync_webhook"
    hook_name = "Chat webhook (Slack-compatible)"
    vendor = "Webhook"
    default_max_connections = 1

    def _auth(self, connection) -> None:
        return None

    def url(self, endpoint: str) -> str:
        """The secret path is added here only, so no message ever shows it."""
        path = (self.connection.password or "").lstrip("/")
        return self.url_from_endpoint(path)

    def post_text(self, text: str) -> None:
        self.call("POST", "(webhook)", json={"text": text}, write=True)

    def _describe_error(self, response: Any) -> str:
        return response.text[:200]
