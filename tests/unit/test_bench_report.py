"""The benchmark report builder: a few result files in, RESULTS.md with its tables and shortfalls out.

No benchmark runs here: the result files are written by the test in the shape `bench.common.
write_result` gives them, with floors from `bench.limits`, so the report is checked on known figures.
"""

from __future__ import annotations

import json
import math

from bench import limits, report

MACHINE = {"date": "2026-12-02 08:00 UTC", "python": "3.11.7", "cpus": "2", "airflow": "3.3.2"}
SANDBOX = {"limits": True, "latency_ms": 100, "seed": 42}


def _write(folder, name: str, doc: dict, *, limited: bool = True, switches: dict | None = None) -> None:
    head = {"machine": MACHINE, "vendor_limits": limits.describe()}
    if limited:
        head["sandbox"] = SANDBOX | {"sandbox_switches": switches or limits.faults()}
    (folder / f"{name}.json").write_text(json.dumps(head | doc))


def _contacts(size: int, full_s: float, night_s: float, night_writes: int) -> dict:
    full_floor = limits.floor_full_sync(size)
    night_floor = limits.floor_night(size // 100)
    return {
        "contacts": size,
        "full_sync": {
            "wall_s": full_s, "crm_calls": size // 100, "esp_calls": size // 500,
            "esp_write_calls": size // 500, "created": size, "updated": 0, "floor": full_floor,
            "ratio_to_floor": limits.ratio(full_s, full_floor["seconds"]),
            "task_seconds_by_task": {"extract_contacts": full_s / 2, "load": full_s / 4},
            "airflow_time": {"span_s": full_s - 1, "no_task_running_s": full_s / 8},
        },
        "one_percent_night": {
            "wall_s": night_s, "crm_calls": 3, "esp_calls": night_writes, "esp_write_calls": night_writes,
            "contacts_changed": size // 100, "floor": night_floor,
            "ratio_to_floor": limits.ratio(night_s, night_floor["seconds"]),
        },
        "peak_rss_mib_per_task_process": 400.0,
    }  # fmt: skip


def _writeback(touched: int, calls: int, reads: int, seconds: float) -> dict:
    floor = limits.floor({"hubspot": math.ceil(touched / limits.HUBSPOT_BATCH)})
    return {
        "contacts_touched": touched, "crm_calls": calls, "crm_reads_by_email": reads,
        "crm_calls_by_kind": {"batch update": calls - reads}, "esp_calls": 0, "seconds": seconds,
        "crm_calls_per_100_touched_contacts": round(calls / touched * 100, 2), "floor": floor,
        "ratio_to_floor": limits.ratio(seconds, floor["seconds"]),
    }  # fmt: skip


def test_report_has_tables_floors_and_what_falls_short(tmp_path):
    burst_only = {"crm": {"rate_limit": {"vendor": True, "max": 190, "interval_ms": 10_000}}}  # an older run
    _write(
        tmp_path,
        "contacts_sync_20000",
        _contacts(20_000, full_s=60.0, night_s=20.0, night_writes=1),
        switches=burst_only,
    )
    _write(
        tmp_path,
        "baseline_sdk_20000",
        {
            "contacts": 20_000,
            "contacts_changed": 200,
            "sdks": {"hubspot-api-client": "12.0.0", "mailchimp-marketing": "3.0.80"},
            "one_at_a_time_no_diff": {
                "sample": 50,
                "seconds": 2_400.0,
                "write_calls": 20_000,
                "crm_read_calls": 200,
            },
            "sdk_batch_no_diff": {"seconds": 30.0, "write_calls": 40, "crm_read_calls": 200},
        },
    )
    _write(tmp_path, "mapping", {"rows_per_s_per_core": 80_000, "vectorised": []}, limited=False)
    _write(tmp_path, "shop_load", {"summary": {"esp_calls_per_10k_orders": {"per_call": 9200, "batch": 40}}})
    workload = {"activity_rows": 16_000, "campaigns": 3, "extract_esp_calls": 13, "contacts_touched": 6_500}
    _write(
        tmp_path,
        "engagement_writeback_20000",
        {
            "contacts": 20_000,
            "days": 7,
            "workload": workload,
            "with_snapshot": _writeback(6_500, 74, 10, 6.5),
            "without_snapshot": _writeback(6_500, 133, 70, 15.5),
        },
    )

    out = report.build(tmp_path, plots=False, failed=["bench.bench_crm_extract (exit 1)"])
    text = out.read_text()

    assert out == tmp_path / "RESULTS.md"
    short = text.split("## What falls short", 1)[1].split("\n## ", 1)[0]
    # 20 s for the 20k night misses the 15 s goal; the full sync was not measured at 1M
    assert "**Not met: 1%-change night of 20,000 contacts under 15 s.** Measured: 20.0 s" in short
    assert "**Not met: 1M-contact full sync within 1.3x of its floor.**" in short
    assert "(measured at 20,000; 1M not run)" in short
    assert "**Not met: Transform + validate >= 250k rows/s per core.** Measured: 80,000 rows/s" in short
    assert "**Not shown: 1%-change night of 1,000,000 contacts under 60 s.** not measured" in short
    assert "bench.bench_crm_extract (exit 1) failed in this run" in short
    assert "HubSpot's daily and search limits not enforced** in contacts_sync_20000 (run" in short
    # met goals are listed as met, with their figures: 2,400 s / 20 s = 120x; 20,000 / 1 writes
    met = short.split("Met:", 1)[1]
    assert "≥ 100x faster: 120.0x" in met
    assert "≥ 1,000x fewer write calls: 20,000x" in met
    assert "Shop: <= 100 ESP calls per 10k orders: 40" in met
    # the write-back by id from the snapshot is the figure judged: 74 calls / 6,500 touched = 1.14
    assert (
        "**Not met: Engagement: <= 1 CRM call per 100 touched contacts.** Measured: 1.14 "
        "(engagement_writeback_20000: ids from the contacts snapshot, 74 CRM calls for 6,500 touched"
    ) in short
    assert "by email 2.05 (133 calls)" in short

    assert "| HubSpot burst (Professional, private app) | 190 | calls per 10 s |" in text
    assert HUBSPOT_SOURCE in text
    contacts_table = text.split("## Contacts sync", 1)[1]
    full_floor = limits.floor_full_sync(20_000)["seconds"]
    assert f"| 20,000 | full sync | 60.00 | 7.50 | 200 | 40 | {full_floor:.2f} |" in contacts_table
    assert "| extract_contacts | 30.00 |" in contacts_table
    baseline = text.split("## Against the official SDKs", 1)[1]
    assert "| SDK one at a time, no diff | 2,400 | 20,000 | 200 | 120 | 20,000 |" in baseline
    assert "| mailsync (Airflow DAG) | 20.00 | 1 | 3 |" in baseline
    engagement = text.split("## Engagement write-back to the CRM", 1)[1].split("\n## ", 1)[0]
    assert (
        "| ids from the contacts snapshot, modified since it "
        "| 6,500 | 74 | 10 | 64 | 0 | 6.50 | 1.14 | 65 | 0.10 |"
        in engagement
    )
    assert "| by email | 6,500 | 133 | 70 | 63 | 0 | 15.50 | 2.05 | 65 |" in engagement
    floors = text.split("## Each figure against its floor", 1)[1]
    assert "| contacts_sync_20000 | full_sync |" in floors


HUBSPOT_SOURCE = limits.HUBSPOT_CHANGELOG


def test_floor_counts_calls_at_the_vendors_batch_sizes():
    # 1M contacts through the list API: 10,000 pages at 190 per 10 s; 2,000 member batches of 500
    f = limits.floor_full_sync_list_api(1_000_000, latency_ms=100)
    assert f["calls"] == {"hubspot": 10_000, "mailchimp": 2_000}
    assert f["seconds_by_vendor"] == {"hubspot": round(52 * 10 + 0.1, 2), "mailchimp": 20.0}
    assert f["seconds"] == f["seconds_by_vendor"]["hubspot"]
    assert limits.floor_shop(10_000)["calls"] == {"shopify": 40, "mailchimp": 20}
    assert limits.floor_engagement(100_000, 20_000)["calls"]["hubspot"] == 200
