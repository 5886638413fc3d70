"""The contacts sync's quality gate: contacts and loyalty rows checked by the mapping's Great
Expectations suite; good contacts staged per key bucket for the partitions."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from mailsync.contacts.extract import ID, MODIFIED
from mailsync.contacts.loyalty import REJECTED, validate_loyalty
from mailsync.mapping import engine
from mailsync.operators.run import Run
from mailsync.operators.staged import validate_chunks
from mailsync.settings import BUCKETS

log = logging.getLogger(__name__)


def validate(run: Run, m) -> dict[str, Any]:
    """Quality gate on contacts and loyalty rows; good rows staged per bucket for the partitions."""
    from mailsync.quality.gate import QualityGateFailed

    result = {"contacts": _validate_contacts(run, m)}
    try:
        result["loyalty"] = validate_loyalty(run, m)
    except (QualityGateFailed, engine.SchemaError) as exc:  # refused whole: tonight's tiers not staged
        if run.params.get("loyalty_required"):
            raise
        reason = "quality gate: " + " ".join(str(exc).split())
        log.warning(REJECTED, run.start.date().isoformat(), reason)
        result["loyalty"] = {"file": "rejected", "status": "rejected", "reason": reason}
    return result


def _validate_contacts(run: Run, m) -> dict[str, Any]:
    out = run.area / "validated" / "contacts"
    out.clear()

    def write_good(i: int, good: pd.DataFrame) -> None:
        buckets = engine.bucket_of(good[engine.KEY], BUCKETS)
        for bucket, rows in good.groupby(buckets, sort=True):
            (out / f"bucket={bucket:02d}").write_parquet(f"part-{i:05d}.parquet", rows)
        out.write_parquet(f"ids-{i:05d}.parquet", good[[ID, MODIFIED]])  # for cross-bucket merges

    return validate_chunks(
        m,
        "contacts",
        run.area / "extract" / "contacts",
        run.area / "quality" / "contacts",
        label=f"{run.dag_id} {run.label}",
        write_good=write_good,
    )
