"""The member load holds one frame of upserts and the batches in flight, not the whole difference
(issue 22: a full sync of 1M contacts peaked at 659 MiB in `load`, 670 MiB in `diff`, when they
held their partition's 500k records at once). Against the sandbox ESP."""

from __future__ import annotations

import pandas as pd
import pytest

from mailsync.hooks.esp import EspHook
from mailsync.mapping.spec import load_mapping
from mailsync.operators import sync
from mailsync.staging import Area, root
from mailsync.state import SyncState
from tests.connections import variant
from tests.integration.dags import dagrun
from tests.unit.test_print_upgrade import desired_members

INTEGRATION = "crm_to_esp_contacts"
NO_REMOVALS = pd.DataFrame({"key": pd.Series(dtype="string"), "bucket": pd.Series(dtype="int64")})


@pytest.fixture
def small_batches(vendors, connections, tmp_path):
    """An ESP connection of 50 members per call, 2 calls in flight; staging and state of the test."""
    dagrun.isolate(tmp_path)
    return variant(
        connections, "esp_default", "esp_small_batches", extra={"batch_size": 50, "max_connections": 2}
    )


def test_frames_of_upserts_are_read_one_at_a_time_as_their_batches_go_out(small_batches, vendors):
    mapping = load_mapping(INTEGRATION)
    members = desired_members(mapping, n=600)
    frames = [members.iloc[i : i + 200].reset_index(drop=True) for i in range(0, 600, 200)]
    hook = EspHook(small_batches)
    answered_before: list[int] = []  # batches the ESP answered when each frame was read

    def read_as_needed():
        for frame in frames:
            answered_before.append(SyncState(INTEGRATION).count() // 50)
            yield frame

    counts = sync.load_members(
        hook, mapping, INTEGRATION, read_as_needed(), NO_REMOVALS, run_id="manual__1", out=Area(root())
    )
    assert counts["sent"] == counts["created"] == 600 and counts["rejected"] == 0
    ours = {m["email_address"] for m in vendors.esp_members()} & set(members["email_address"])
    assert SyncState(INTEGRATION).count() == 600 == len(ours)
    # a frame is read once the batches of the ones before it are out, less the 2 in flight
    assert answered_before[0] == 0 and answered_before[1] >= 4 - 2 and answered_before[2] >= 8 - 2

    again = sync.load_members(
        hook, mapping, INTEGRATION, iter(frames), NO_REMOVALS, run_id="manual__2", out=Area(root())
    )
    assert again["sent"] == 0 and again["resumed_skip"] == 600  # acknowledged: nothing sent twice
