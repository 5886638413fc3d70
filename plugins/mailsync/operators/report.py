"""The run summary an analyst reads in the UI: counts per stage, API calls, duration, warnings.

One summary per run: the report task's single XCom (`multiple_outputs=False`), `report.json`
beside the run's files, and the DAG run's note in Markdown, so it shows on the run's page. A
run that succeeded with warnings also notifies (mailsync.notifications)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from mailsync.operators.run import Run

log = logging.getLogger(__name__)


def _sum(parts: list[dict[str, Any]], key: str) -> int:
    return int(sum(p.get(key, 0) or 0 for p in parts))


def contacts_report(
    run: Run, extract: dict, loyalty: dict, validate: dict, loads: list[dict]
) -> dict[str, Any]:
    """Summary of a crm_to_esp_contacts run; also written as report.json beside the run's files."""
    contacts, tiers = validate.get("contacts", {}), validate.get("loyalty", {})
    loads = [loads] if isinstance(loads, dict) else list(loads)  # a mapped task's results, as a list
    loyalty_status, loyalty_reason = _loyalty_outcome(loyalty, tiers)
    if loyalty_status == "rejected":  # one line a notification can match; reasons hold no personal data
        log.warning(
            "Loyalty file rejected (run %s): %s. Tiers stay as last known.", run.run_id, loyalty_reason
        )
    report = {
        "mode": extract.get("mode"),
        "dry_run": bool(run.params.get("dry_run")),
        "extracted": extract.get("contacts", 0),
        "archived_in_crm": extract.get("archived", 0),
        "loyalty": loyalty_status,  # loaded | rejected | missing (tiers stay as last known unless loaded)
        "loyalty_reason": loyalty_reason,
        "loyalty_file": loyalty.get("file"),
        "loyalty_rows": loyalty.get("rows", 0) if loyalty_status == "loaded" else 0,
        "loyalty_kept_last": tiers.get("kept_last", 0),  # customers whose quarantined row kept the last tier
        "loyalty_quarantine_file": tiers.get("quarantine"),
        "quarantined": contacts.get("rows_quarantined", 0) + tiers.get("rows_quarantined", 0),
        "quarantine_reasons": {
            **tiers.get("quarantine_reasons", {}),
            **contacts.get("quarantine_reasons", {}),
        },
        "desired_members": _sum(loads, "desired"),
        "duplicates_resolved": _sum(loads, "duplicates"),
        "unchanged": _sum(loads, "unchanged"),
        "new": _sum(loads, "new"),
        "changed": _sum(loads, "changed"),
        "created": _sum(loads, "created"),
        "updated": _sum(loads, "updated"),
        "archived": _sum(loads, "removed"),
        "rejected": _sum(loads, "rejected"),
        "would_send": _sum(loads, "would_send"),
        "would_remove": _sum(loads, "would_remove"),
        "partitions": len(loads),
        "api_calls": {"crm": extract.get("api_calls", 0), "esp": _sum(loads, "api_calls")},
        "esp_write_calls": _sum(loads, "write_calls"),
        "retries": extract.get("retries", 0) + _sum(loads, "retries"),
        "quality_report": contacts.get("report"),
        "quarantine_file": contacts.get("quarantine"),
        "rejected_files": [p["rejected_file"] for p in loads if p.get("rejected_file")],
    }
    warnings = []
    if loyalty_status == "rejected":
        warnings.append(f"Loyalty file rejected: {loyalty_reason}. Tiers stay as last known.")
    elif loyalty_status == "missing":
        warnings.append("No complete loyalty file came for this night: tiers stay as last known.")
    if report["rejected"]:
        warnings.append(
            f"The ESP refused {report['rejected']} member(s): reasons in the rejected file; "
            "they are sent again next run."
        )
    return finish(
        run,
        extract.get("started_at"),
        report,
        warnings,
        (
            "extracted",
            "loyalty",
            "quarantined",
            "unchanged",
            "created",
            "updated",
            "archived",
            "rejected",
            "esp_write_calls",
        ),
    )


def _loyalty_outcome(loyalty: dict, tiers: dict) -> tuple[str, str | None]:
    """What became of the night's loyalty file: refused at download/parse (extract_loyalty) or by
    the quality gate (validate), loaded, or not there at all."""
    for step in (loyalty, tiers):
        if step.get("status") == "rejected" or step.get("file") == "rejected":
            return "rejected", step.get("reason") or step.get("error")
    if loyalty.get("error"):  # a summary written before the status field
        return "rejected", loyalty["error"]
    if loyalty.get("file"):
        return "loaded", None
    return "missing", "no complete loyalty file for this night"


def engagement_report(run: Run, extract: dict, validate: dict, transform: dict, load: dict) -> dict[str, Any]:
    report = {
        "campaigns": extract.get("campaigns", 0),
        "activity_rows": extract.get("rows", 0),
        "quarantined": validate.get("rows_quarantined", 0),
        "quarantine_reasons": validate.get("quarantine_reasons", {}),
        "contacts_touched": transform.get("contacts_touched", 0),
        "unchanged": load.get("unchanged", 0),
        "written": load.get("written", 0),
        "unknown_contacts": load.get("unknown_contacts", 0),
        "rejected": load.get("rejected", 0),
        "dry_run": bool(load.get("dry_run")),
        "api_calls": {"esp": extract.get("api_calls", 0), "crm": load.get("api_calls", 0)},
        "crm_write_calls": load.get("write_calls", 0),
        "quality_report": validate.get("report"),
        "quarantine_file": validate.get("quarantine"),
        "rejected_file": load.get("rejected_file"),
    }
    warnings = []
    if report["rejected"]:
        warnings.append(
            f"The CRM refused {report['rejected']} write-back(s): reasons in the rejected file; "
            "they are retried next run."
        )
    return finish(
        run,
        extract.get("started_at"),
        report,
        warnings,
        (
            "activity_rows",
            "quarantined",
            "contacts_touched",
            "written",
            "unknown_contacts",
            "crm_write_calls",
        ),
    )


def members_report(run: Run, extract: dict, validate: dict, diff: dict, load: dict) -> dict[str, Any]:
    """Summary of an integration built from the shared steps (stage, gate, map, diff, load ESP
    members), e.g. legacy_members_to_esp."""
    report = {
        "dry_run": bool(load.get("dry_run")),
        "extracted": extract.get("rows", 0),
        "quarantined": validate.get("rows_quarantined", 0),
        "quarantine_reasons": validate.get("quarantine_reasons", {}),
        "unchanged": diff.get("unchanged", 0),
        "new": diff.get("new", 0),
        "changed": diff.get("changed", 0),
        "not_audience_members": load.get("not_audience_members", 0),
        "sent": load.get("sent", load.get("would_send", 0)),
        "updated": load.get("updated", 0),
        "rejected": load.get("rejected", 0),
        "api_calls": {"esp": load.get("api_calls", 0)},
        "esp_write_calls": load.get("write_calls", 0),
        "quality_report": validate.get("report"),
        "quarantine_file": validate.get("quarantine"),
        "rejected_file": load.get("rejected_file"),
    }
    refused = report["rejected"]
    warnings = [f"The ESP refused {refused} record(s): reasons in the rejected file."] if refused else []
    headline = ("extracted", "quarantined", "unchanged", "new", "changed", "not_audience_members", "updated")
    return finish(run, extract.get("started_at"), report, warnings, headline)


def finish(
    run: Run, started_at: str | None, report: dict[str, Any], warnings: list[str], headline: tuple[str, ...]
) -> dict:
    """The run's identity first, then the integration's counts; duration counts from the first
    task's start (the extract) to now."""
    from airflow.sdk import get_current_context

    from mailsync.notifications import notify_warnings, set_run_note

    interval = [run.start.isoformat(), run.end.isoformat()]
    report = {"dag_id": run.dag_id, "run_id": run.run_id, "interval": interval, **report}

    if started_at:
        report["duration_s"] = round(
            (datetime.now(UTC) - datetime.fromisoformat(started_at)).total_seconds(), 1
        )
    report["warnings"] = warnings
    run.area.write_text("report.json", json.dumps(report, indent=2, default=str))
    set_run_note(run.dag_id, run.run_id, run_note(report, headline))
    if warnings:
        notify_warnings(get_current_context(), warnings)
    log.info(
        "REPORT %s %s: %s",
        run.dag_id,
        run.label,
        " ".join(f"{k}={report.get(k)}" for k in (*headline, "duration_s")),
    )
    return report


def run_note(report: dict[str, Any], headline: tuple[str, ...]) -> str:
    """The summary as Markdown for the run's page: the headline counts, calls, duration, warnings."""
    start, end = (x[:16].replace("T", " ") for x in report["interval"])
    mark = "⚠️ Succeeded with warnings" if report.get("warnings") else "✅ Succeeded"
    dry = " (dry run: nothing written)" if report.get("dry_run") else ""
    lines = [f"### {mark}{dry}", f"Data interval {start} → {end} UTC", ""]
    lines += [f"- ⚠️ {w}" for w in report.get("warnings", [])]
    lines += ["", "| stage | count |", "|---|---:|"]
    lines += [f"| {key.replace('_', ' ')} | {_shown(report.get(key))} |" for key in headline]
    reasons = report.get("quarantine_reasons") or {}
    if reasons:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        lines += ["", f"**Quarantined by reason:** {shown}"]
    calls = ", ".join(f"{k} {v}" for k, v in (report.get("api_calls") or {}).items())
    lines += ["", f"**API calls:** {calls} · **duration:** {report.get('duration_s', '?')} s"]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def shop_report(run: Run, extract: dict, validate: dict, transform: dict, load: dict) -> dict[str, Any]:
    orders, buyers, products = load.get("orders", {}), load.get("buyers", {}), load.get("products", {})
    refused = {
        what: part.get("rejected", 0)
        for what, part in (("orders", orders), ("products", products), ("buyer totals", buyers))
        if part.get("rejected")
    }
    report = {
        "orders_extracted": extract.get("orders", 0),
        "quarantined": sum(v.get("rows_quarantined", 0) for v in validate.values()),
        "quarantine_reasons": {
            k: n for v in validate.values() for k, n in v.get("quarantine_reasons", {}).items()
        },
        "orders_touched": transform.get("orders_touched", 0),
        "attribution": transform.get("attribution", {}),
        "unattributed": transform.get("unattributed", 0),
        "clicks_until": transform.get("clicks_until"),
        "revenue_eur_report_window": transform.get("revenue_eur"),
        "unknown_customer_orders": load.get("unknown_customer_orders", 0),
        "orders_sent": orders.get("sent", 0),
        "orders_unchanged": orders.get("unchanged", 0),
        "buyers_updated": buyers.get("sent", 0),
        "orders_rejected": orders.get("rejected", 0),
        "products_rejected": products.get("rejected", 0),
        "buyers_rejected": buyers.get("rejected", 0),
        "rejected_files": [p["rejected_file"] for p in (orders, products, buyers) if p.get("rejected")],
        "dry_run": bool(load.get("dry_run")),
        "api_calls": {"shop": extract.get("api_calls", 0), "esp": load.get("api_calls", 0)},
        "esp_write_calls": load.get("write_calls", 0),
        "revenue_csv": transform.get("revenue_csv"),
        "revenue_html": transform.get("revenue_html"),
        "quality_reports": {k: v.get("report") for k, v in validate.items()},
    }
    warnings = (
        [
            "The ESP refused "
            + ", ".join(f"{n} {what}" for what, n in refused.items())
            + ": reasons in the rejected files; they are sent again next run."
        ]
        if refused
        else []
    )
    return finish(
        run,
        extract.get("started_at"),
        report,
        warnings,
        (
            "orders_extracted",
            "quarantined",
            "orders_sent",
            "orders_rejected",
            "unknown_customer_orders",
            "buyers_updated",
            "esp_write_calls",
        ),
    )
