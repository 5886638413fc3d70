"""The shop's load of orders and products into the ESP: ESP calls and seconds per 10k orders.

    python -m bench.bench_shop_load [--contacts 90000] [--days 7] [--label batch] [--no-limits]

One run of the shop's steps (extract, quality gate, transform, load: the operators' `execute`
called in this process, as the operator tests do) over the whole generated week as one data
interval, so one load sends ~10k members' orders at the default size, against the sandbox with the
vendors' limiters and a per-call latency on (bench/limits.py). The audience state holds the
ESP's members (as the contacts sync would have acknowledged them), so members' orders are sent.

The result of each `--label` (the path measured: `per_call` was taken before the load moved to
batch operations, `batch` after) is kept in bench/results/shop_load.json beside the others, so
one file compares them; each is reported against the floor (bench/limits.floor_shop) of the same
order count.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from bench import limits
from bench.common import RESULTS, add_limit_args, sandbox, write_result

DAG = "shop_load_bench"
END = datetime(2026, 11, 20, tzinfo=UTC)  # the sandbox's generated world ends here
STATES = {
    "orders_state": "bench_orders",
    "buyers_state": "bench_buyer_totals",
    "products_state": "bench_products",
    "audience_state": "bench_audience",
}


class _TaskInstance:
    def __init__(self, context: dict) -> None:
        self.context = context

    def get_template_context(self) -> dict:
        return self.context


def _context(start: datetime, end: datetime) -> dict:
    context = {
        "dag": SimpleNamespace(dag_id=DAG),
        "run_id": "manual__shop_load_bench",
        "data_interval_start": start,
        "data_interval_end": end,
        "params": {},
    }
    context["ti"] = _TaskInstance(context)
    return context


def _esp_calls(sb) -> dict[str, int]:
    log = sb.requests("esp")
    return {
        "calls": len(log),
        "writes": sum(1 for r in log if r["method"] in ("POST", "PUT", "PATCH", "DELETE")),
    }


def run(contacts: int, days: int, *, no_limits: bool, latency_ms: int) -> dict:
    from mailsync.operators.shop import (
        ExtractShopOrdersOperator,
        LoadShopOrdersOperator,
        TransformShopOrdersOperator,
    )
    from mailsync.operators.steps import QualityGateOperator
    from mailsync.shop import ecommerce  # noqa: F401  (imported now: the path measured is the one at start)
    from mailsync.state import SyncState

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAILSYNC_STAGING_URL"] = (Path(tmp) / "staging").as_uri()
        os.environ["AIRFLOW_CONN_MAILSYNC_STATE"] = json.dumps(
            {"conn_type": "sqlite", "host": str(Path(tmp) / "state.db")}
        )
        with sandbox(
            Path(tmp), contacts=contacts, days=days, limits=not no_limits, latency_ms=latency_ms
        ) as sb:
            members = sorted(
                {m["email_address"].strip().lower() for m in sb.esp_members() if m["status"] != "archived"}
            )
            SyncState(STATES["audience_state"]).acknowledge(
                [{"key": e, "fingerprint": "seed", "bucket": 0, "status": "subscribed"} for e in members],
                "seed",
            )
            context = _context(END - timedelta(days=days), END)
            staged = ExtractShopOrdersOperator(task_id="extract").execute(context)
            QualityGateOperator(
                task_id="validate", mapping="shop_orders_to_esp", source=["orders", "lines"]
            ).execute(context)
            sb.clear_requests()
            started = time.perf_counter()
            transform = TransformShopOrdersOperator(
                task_id="transform", orders_state=STATES["orders_state"], engagement_dag_id="no_clicks_here"
            ).execute(context)
            transform_s = time.perf_counter() - started
            transform_calls = _esp_calls(sb)
            sb.clear_requests()
            started = time.perf_counter()
            loaded = LoadShopOrdersOperator(task_id="load", **STATES).execute(context)
            load_s = time.perf_counter() - started
            load_calls = _esp_calls(sb)
            esp_orders = len(sb.esp_orders())

    orders_sent, products_sent = loaded["orders"]["sent"], loaded["products"]["sent"]
    per_10k = 10_000 / max(orders_sent, 1)
    floor = limits.floor_shop(orders_sent + products_sent, latency_ms)
    return {
        "orders_extracted": staged["orders"],
        "orders_touched": transform["orders_touched"],
        "orders_sent": orders_sent,
        "orders_rejected": loaded["orders"].get("rejected", 0),
        "orders_in_esp": esp_orders,
        "unknown_customer_orders": loaded["unknown_customer_orders"],
        "products_sent": products_sent,
        "buyers_sent": loaded["buyers"]["sent"],
        "transform_seconds": round(transform_s, 2),
        "transform_esp_calls": transform_calls["calls"],
        "load_seconds": round(load_s, 2),
        "load_esp_calls": load_calls["calls"],
        "load_esp_write_calls": load_calls["writes"],
        "load_esp_calls_per_10k_orders": round(load_calls["calls"] * per_10k),
        "load_esp_write_calls_per_10k_orders": round(load_calls["writes"] * per_10k),
        "transform_and_load_esp_calls_per_10k_orders": round(
            (load_calls["calls"] + transform_calls["calls"]) * per_10k
        ),
        "load_hook_stats": {k: loaded.get(k) for k in ("api_calls", "write_calls", "retries")},
        "floor_orders_and_products": floor,
        "load_ratio_to_floor": limits.ratio(load_s, floor["seconds"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=90_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--label", default="batch", help="the path measured (per_call, batch)")
    args = add_limit_args(parser).parse_args()
    result = run(args.contacts, args.days, no_limits=args.no_limits, latency_ms=args.latency_ms)
    path = RESULTS / "shop_load.json"
    runs = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    runs[args.label] = {"contacts": args.contacts, "days": args.days, "latency_ms": args.latency_ms} | result
    summary = {}
    if {"per_call", "batch"} <= set(runs):
        before, after = runs["per_call"], runs["batch"]
        summary = {
            "esp_calls_per_10k_orders": {
                "per_call": before["load_esp_calls_per_10k_orders"],
                "batch": after["load_esp_calls_per_10k_orders"],
                "goal": 100,
            },
            "fewer_calls_x": round(
                before["load_esp_calls_per_10k_orders"] / max(after["load_esp_calls_per_10k_orders"], 1), 1
            ),
            "load_seconds": {"per_call": before["load_seconds"], "batch": after["load_seconds"]},
        }
    write_result("shop_load", {"summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
