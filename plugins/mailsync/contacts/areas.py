"""Where the contacts sync keeps its files: tonight's run folder, the snapshots that outlive
runs (`current/`), and tonight's next snapshots, committed only when the whole night succeeded."""

from __future__ import annotations

from mailsync.operators.run import Run
from mailsync.staging import Area


def contacts_snapshot(run: Run) -> Area:
    return run.current / "snapshots" / "contacts"


def loyalty_snapshot(run: Run) -> Area:
    return run.current / "snapshots" / "loyalty"


def next_snapshot(run: Run) -> Area:
    """Tonight's snapshots, committed over the current ones only when the whole run succeeded
    (see commit): a run stopped by the removal guard or a failed load changes nothing."""
    return run.area / "next_snapshot"


def bad_lines_area(run: Run) -> Area:
    """Lines of the loyalty file that never became rows; beside the data chunks, never among them."""
    return run.area / "extract" / "loyalty_bad_lines"


def audience_area(run: Run) -> Area:
    return run.area / "audience"
