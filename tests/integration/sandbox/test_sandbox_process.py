"""Life cycle: auto-stop when the parent dies, ``python -m sandbox stop``, keeping data, resets."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[3]


def wait_exit(process: subprocess.Popen, seconds: float) -> float:
    started = time.monotonic()
    process.wait(seconds)
    return time.monotonic() - started


def test_stops_by_itself_when_the_parent_pid_disappears(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sb = Sandbox.start(tmp_path / "orphan", contacts=50, days=2, parent_pid=parent.pid)
    try:
        assert sb.process.poll() is None
        parent.kill()
        parent.wait()
        assert wait_exit(sb.process, 5) < 2.0  # polls every 0.25 s, then shuts down cleanly
        assert not (tmp_path / "orphan" / "ready.json").exists()  # a clean exit
    finally:
        sb.stop()


def test_cli_stop_and_restart_without_regenerating(tmp_path):
    data = tmp_path / "cli"
    sb = Sandbox.start(data, contacts=80, days=2, seed=5)
    contact = sb.crm_contacts()[0]
    sb.crm_gdpr_delete(contact["id"])
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "stop", "--data-dir", str(data)],
        cwd=ROOT,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0
    assert sb.process.wait(5) == 0
    again = Sandbox.start(data, contacts=80, days=2, seed=5, generate=False)
    try:
        assert again.crm_contact(contact["id"]) is None  # the data was kept, not regenerated
        assert again.info["sftp_host_key"] == sb.info["sftp_host_key"]  # the host key is reused
    finally:
        again.stop()


def test_reset_regenerates_in_place(fresh_sandbox):
    sb = fresh_sandbox
    before = {c["id"] for c in sb.crm_contacts()}
    sb.mutate_crm(fraction=0.05, seed=3)
    assert sb.requests() == [] or all(r["system"] for r in sb.requests())
    counts = sb.reset(seed=43, contacts=300, days=3)
    assert counts["crm_contacts"] < 320 and sb.info["generated"]["seed"] == 43
    sb.reset(seed=42, contacts=1000, days=7)
    assert {c["id"] for c in sb.crm_contacts()} == before


def test_mutate_crm_is_deterministic_and_sets_lastmodifieddate(fresh_sandbox):
    sb = fresh_sandbox
    ids = sb.mutate_crm(fraction=0.02, seed=9, at="2026-11-20T03:00:00Z")
    assert 5 < len(ids) < 40
    contacts = {c["id"]: c for c in sb.crm_contacts()}
    assert {contacts[i]["properties"]["lastmodifieddate"] for i in ids} == {"2026-11-20T03:00:00.000Z"}
    sb.reset()
    assert sb.mutate_crm(fraction=0.02, seed=9) == ids


def test_airflow_connections(sandbox):
    import json

    conns = {k: json.loads(v) for k, v in sandbox.airflow_connections().items()}
    assert set(conns) == {"esp_default", "crm_default", "shop_default", "loyalty_sftp", "mailsync_smtp"}
    assert conns["esp_default"]["host"].endswith("/3.0") and conns["esp_default"]["extra"]["list_id"]
    assert conns["shop_default"]["extra"] == {"api_version": "2024-10"}
    assert conns["loyalty_sftp"]["extra"]["host_key"].startswith("ssh-ed25519 AAAA")
    assert conns["loyalty_sftp"]["extra"]["no_host_key_check"] is False
