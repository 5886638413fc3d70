"""Sensors that wait for partner files."""

from __future__ import annotations

from datetime import date
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout


class LoyaltyFileSensor(BaseSensorOperator):
    """Wait for the night's loyalty file (its done-marker) on the partner's SFTP server.

    Runs in reschedule mode: between pokes it frees its worker slot. How long it waits and
    what happens then come from the run's params, so on-call can change them per run:
    `loyalty_wait_minutes`, and `loyalty_required` (true: fail; false: go on without the file,
    tiers stay as last known). The file of a run is the one of the business day its data
    interval starts on. Returns {"day": ..., "found": bool}, and a `reason` when it could not
    look: a server whose host key is not the connection's does not change by waiting, so that
    is said at once (extract_loyalty reports it as a rejected file), or fails the task at once
    with `loyalty_required`.
    """

    template_fields = ("day",)
    ui_color = "#e8f4ea"

    def __init__(
        self, *, day: str = "{{ data_interval_start | ds }}", sftp_conn_id: str = "loyalty_sftp", **kwargs
    ):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 300)
        super().__init__(**kwargs)
        self.day = day
        self.sftp_conn_id = sftp_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        params = context["params"]
        self.timeout = float(params.get("loyalty_wait_minutes", 120)) * 60
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            if params.get("loyalty_required", False):
                raise
            self.log.warning(
                "No complete loyalty file for %s after %s min: going on without it",
                self.day,
                self.timeout / 60,
            )
            return {"day": self.day, "found": False}

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from mailsync.hooks.sftp import HostKeyMismatch, LoyaltySftpHook

        try:
            status = LoyaltySftpHook(self.sftp_conn_id).status(date.fromisoformat(self.day))
        except HostKeyMismatch as exc:
            if context["params"].get("loyalty_required", False):
                raise AirflowFailException(
                    f"Loyalty file for {self.day} not looked for and loyalty_required: {exc}"
                ) from None
            self.log.warning("Loyalty file for %s not looked for: %s", self.day, exc)
            return PokeReturnValue(
                is_done=True, xcom_value={"day": self.day, "found": False, "reason": str(exc)}
            )
        self.log.info("Loyalty file for %s: %s", self.day, status)
        if status != "ready":
            return False
        return PokeReturnValue(is_done=True, xcom_value={"day": self.day, "found": True})
