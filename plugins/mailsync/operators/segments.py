"""The operator of esp_buyer_segments: a static ESP segment (a member tag) of buyers over N EUR.

Runs when both the contacts sync and the shop conversions have updated their Assets: it needs
the audience (members exist) and every order so far (exact totals after refunds). A member is
tagged when their total reaches the threshold and untagged when refunds take them below it.
The logic is `mailsync.shop.segments`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from mailsync.operators.run import Run

STATE = "segment:{tag}"  # the segment's sync state; {tag} is the threshold's tag (buyers_over_100_eur)


class RefreshBuyerSegmentOperator(BaseOperator):
    """Add the tag `buyers_over_<N>_eur` to audience members (of `audience_state`) whose total
    over the shop DAG `shop_dag_id`'s orders snapshot reaches `threshold_eur`, remove it from
    those who no longer do, through the ESP behind `esp_conn_id`. `state` names the segment's
    sync state, `{tag}` standing for the tag (each threshold is its own segment); `threshold_eur`
    empty means the run's param of that name."""

    template_fields: Sequence[str] = (
        "esp_conn_id",
        "shop_dag_id",
        "state",
        "audience_state",
        "orders_mapping",
        "threshold_eur",
    )
    ui_color = "#e3f4f4"

    def __init__(
        self,
        *,
        esp_conn_id: str = "esp_default",
        shop_dag_id: str = "shop_conversions_to_esp",
        state: str = STATE,
        audience_state: str = "crm_to_esp_contacts",
        orders_mapping: str = "shop_orders_to_esp",
        threshold_eur: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.esp_conn_id = esp_conn_id
        self.shop_dag_id = shop_dag_id
        self.state = state
        self.audience_state = audience_state
        self.orders_mapping = orders_mapping
        self.threshold_eur = threshold_eur

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.hooks.esp import EspHook
        from mailsync.mapping.spec import load_mapping
        from mailsync.shop.segments import refresh, tag_name

        run = Run.from_context(context)
        given = self.threshold_eur
        threshold = float(run.params.get("threshold_eur", 100) if given in (None, "") else given)
        return refresh(
            EspHook(self.esp_conn_id),
            shop_dag_id=self.shop_dag_id,
            orders_mapping=load_mapping(self.orders_mapping),
            threshold=threshold,
            state=self.state.format(tag=tag_name(threshold)),
            audience_state=self.audience_state,
            run_id=run.run_id,
            dry_run=bool(run.params.get("dry_run")),
        )
