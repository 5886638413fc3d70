"""Days without input: a quiet day must be a green run that writes nothing (found by the soak)."""

from __future__ import annotations

import pytest

from tests.reliability.checker import Outcome, member_writes
from tests.reliability.conftest import run_dag

pytestmark = pytest.mark.slow


def test_a_day_without_orders_is_a_green_run_that_writes_nothing(world, recorder, clock, capfd):
    """2026-11-22: after the generated window, no order was created or updated that day."""
    world.clear_requests()
    night = run_dag("shop_conversions_to_esp", "2026-11-23T00:00:00Z", capfd)
    writes = [r for r in world.requests("esp") if r["method"] != "GET"]
    outcome = Outcome(
        case="shop: a day without any order",
        group="shop_conversions_to_esp, 1 run",
        inputs="0 orders updated in the interval",
        runs=1,
        outcome=f"run {night.state}"
        + (f" at {','.join(night.failed_tasks)}: {night.errors[-1][:120]}" if night.errors else "")
        + f"; {len(writes)} ESP writes",
        passed=night.state == "success" and not member_writes(writes),
    )
    recorder.record(outcome, clock)
    assert night.state == "success", (night.failed_tasks, night.errors[-2:])
