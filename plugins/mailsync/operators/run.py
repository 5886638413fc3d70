"""What a task knows about its run, taken from the Airflow context once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailsync.staging import Area, interval_label, run_area, state_area


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_id: str
    start: datetime  # data interval start (inclusive)
    end: datetime  # data interval end (exclusive)
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_context(cls, context: Any) -> Run:
        return cls(
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            start=context["data_interval_start"],
            end=context["data_interval_end"],
            params=dict(context["params"]),
        )

    @classmethod
    def of_current_task(cls) -> Run:
        """The run of the task being executed (call it inside a task)."""
        from airflow.sdk import get_current_context

        return cls.from_context(get_current_context())

    @property
    def label(self) -> str:
        return interval_label(self.start, self.end)

    @property
    def area(self) -> Area:
        """This interval's files; a rerun of the interval replaces them."""
        return run_area(self.dag_id, self.start, self.end)

    @property
    def current(self) -> Area:
        """Files that outlive runs (source snapshots)."""
        return state_area(self.dag_id)


def partitions(count: int, buckets: int) -> list[list[int]]:
    """Split bucket numbers into `count` partitions (round robin); never more than `buckets`."""
    count = max(1, min(int(count), buckets))
    return [list(range(p, buckets, count)) for p in range(count)]


def logical_date_help(tick: str) -> str:
    """Trigger-form text for a daily DAG whose intervals end at `tick` (UTC): the form defaults
    the logical date to now, and what interval that means is nowhere else on the form."""
    return (
        f"**Which day a run covers:** the 24 h that end at the last {tick} UTC at or before the "
        f"logical date you pick: 2026-11-20 {tick} covers 2026-11-19 {tick} → 2026-11-20 {tick}. "
        "The default (now) covers the last full day. **Demo / sandbox:** its generated data spans "
        f"2026-11-14 → 2026-11-20: pick 2026-11-20 {tick} for its last day; a later date finds "
        "nothing to sync."
    )
