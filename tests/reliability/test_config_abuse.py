"""Abuse of configuration and file names: mapping YAML with unknown keys or unsafe tags, path
traversal in partner file names, a wrong SFTP host key (the last one through whole nights: it
costs only the night's tiers, like any loyalty file that cannot be used)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from mailsync.mapping.spec import MappingError, parse_mapping
from mailsync.settings import INCLUDE_DIR
from tests.connections import set_connection
from tests.integration.dags import dagrun
from tests.integration.dags.expected_contacts import loyalty_tiers
from tests.reliability.checker import Outcome, check_contacts, expected_contacts, members
from tests.reliability.conftest import run_dag

MAPPING = INCLUDE_DIR / "mappings" / "crm_to_esp_contacts.yaml"


def _unknown_key(text: str) -> str:
    """A typo'd key under sources.contacts (the line after `  contacts:`)."""
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if re.match(r"^  contacts:", line))
    return "".join([*lines[: at + 1], "    primray_key: email\n", *lines[at + 1 :]])


def _unsafe(tag: str, marker: Path) -> str:
    payloads = {
        "!!python/object/apply": f'!!python/object/apply:os.system ["touch {marker}"]',
        "!!python/object/new": f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
        "!!python/name": "!!python/name:os.system",
        "!!python/object": "!!python/object:mailsync.mapping.spec.Mapping {}",
    }
    return f"description: {payloads[tag]}\n" + MAPPING.read_text(encoding="utf-8").split("\n", 1)[1]


def test_a_mapping_with_an_unknown_key_is_refused_naming_file_line_and_key(recorder, clock):
    text = _unknown_key(MAPPING.read_text(encoding="utf-8"))
    with pytest.raises(MappingError) as refused:
        parse_mapping(text, filename="crm_to_esp_contacts.yaml")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "primray_key" in s)
    message = str(refused.value)
    ok = (
        f"crm_to_esp_contacts.yaml:{line}" in message
        and "primray_key" in message
        and "unknown key" in message
    )
    recorder.record(
        Outcome(
            case="mapping YAML with an unknown key",
            group="mapping loader",
            inputs="`primray_key` under sources.contacts",
            outcome=f"refused: {message.splitlines()[-1].strip()[:120]}",
            passed=ok,
        ),
        clock,
    )
    assert ok, message


@pytest.mark.parametrize(
    "tag", ["!!python/object/apply", "!!python/object/new", "!!python/name", "!!python/object"]
)
def test_a_mapping_with_an_unsafe_tag_is_refused_and_runs_nothing(tag, tmp_path, recorder, clock):
    marker = tmp_path / "pwned"
    with pytest.raises(MappingError) as refused:
        parse_mapping(_unsafe(tag, marker), filename="evil.yaml")
    ok = not marker.exists() and "evil.yaml" in str(refused.value)
    recorder.record(
        Outcome(
            case=f"mapping YAML with an unsafe tag `{tag}`",
            group="mapping loader",
            inputs="constructs an object / runs a command if loaded unsafely",
            outcome=f"refused ({str(refused.value).splitlines()[0][:90]}); nothing ran",
            passed=ok,
        ),
        clock,
    )
    assert ok


def test_a_broken_mapping_is_the_dags_import_error_naming_file_line_and_key(
    tmp_path, monkeypatch, recorder, clock
):
    from mailsync.mapping import spec

    folder = tmp_path / "mappings"
    folder.mkdir()
    for path in MAPPING.parent.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    bad = folder / MAPPING.name
    bad.write_text(_unknown_key(bad.read_text(encoding="utf-8")), encoding="utf-8")
    monkeypatch.setattr(spec, "MAPPINGS_DIR", folder)
    spec.load_mapping.cache_clear()
    try:
        from airflow.dag_processing.dagbag import DagBag

        errors = DagBag(dag_folder=str(dagrun.PROJECT / "dags" / "crm_to_esp_contacts.py")).import_errors
    finally:
        monkeypatch.undo()
        spec.load_mapping.cache_clear()
    shown = "".join(str(v) for v in errors.values())
    ok = "primray_key" in shown and f"{bad}:" in shown
    recorder.record(
        Outcome(
            case="mapping YAML with an unknown key, deployed",
            group="DAG parse",
            inputs="the DAG's mapping folder holds the bad mapping",
            outcome="the DAG's import error names file:line and key"
            if ok
            else f"import errors: {shown[:120]}",
            passed=ok,
        ),
        clock,
    )
    assert ok, errors


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "2026-11-19/../../../outside.csv",
        "..",
        "2026-11-19/../../loyalty_tiers.csv",
    ],
)
def test_path_traversal_in_a_partner_file_name_is_refused(connections, name, recorder, clock):
    from mailsync.hooks.sftp import LoyaltySftpHook, UnsafePath

    with pytest.raises(UnsafePath) as refused:
        LoyaltySftpHook().safe_path(name)
    recorder.record(
        Outcome(
            case=f"path traversal in a file name: `{name}`",
            group="SFTP hook",
            outcome=f"refused: {str(refused.value)[:80]}",
            passed=True,
        ),
        clock,
    )


def _impostor_key(connections) -> dict:
    """The loyalty_sftp connection with the host key of another server (and one connect try)."""
    import asyncssh

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    definition = json.loads(json.dumps(connections["loyalty_sftp"]))
    definition["extra"].update(host_key=" ".join(impostor.split()[:2]), conn_retry_attempts=1)
    return definition


@pytest.mark.slow
def test_a_wrong_sftp_host_key_costs_only_the_tiers_and_says_which_extra_to_check(
    world, connections, recorder, clock, capfd, caplog
):
    """Design rule: a partner file that cannot be used never costs the contact sync. Night 1 syncs
    with the right key; night 2 meets a server with another host key: it syncs with night 1's
    tiers, reads nothing, and the summary says to check the connection's host_key extra; with
    `loyalty_required` it fails at once saying so; with the right key again it loads the file."""
    from tests.reliability.test_loyalty_files import last_known

    night1, night2, day2 = "2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z", "2026-11-20"
    quick = {"loyalty_wait_minutes": 0}
    secret = connections["loyalty_sftp"].get("password") or "no password"
    first = run_dag("crm_to_esp_contacts", night1, capfd, full_refresh=True, **quick)
    assert first.state == "success", first.failed_tasks
    world.write_loyalty_file(day=day2)
    before = members(world)
    os.environ["MAILSYNC_TASK_RETRIES"] = "0"
    set_connection("loyalty_sftp", _impostor_key(connections))
    try:
        world.clear_requests()
        caplog.clear()
        night = run_dag("crm_to_esp_contacts", night2, capfd, **quick)
        said = capfd.readouterr().out  # the night's output, as run_dag wrote it back
        # the night's WARNING records (where the output stream goes depends on which test first
        # configured Airflow's logging in this process; the records do not)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        sftp_opens = [r for r in world.requests("sftp") if "loyalty_tiers" in (r.get("path") or "")]
        outcome = check_contacts(
            world,
            Outcome(case="wrong SFTP host key", group="contacts, 4 runs"),
            before=before,
            expected=expected_contacts(world, before, last_known(before)),
            requests=world.requests(),
        )
        required = run_dag("crm_to_esp_contacts", night2, capfd, loyalty_required=True, **quick)
        stopped_at = sorted(t.task_id for t in required.dag_run.get_task_instances() if t.state == "failed")
    finally:
        set_connection("loyalty_sftp", connections["loyalty_sftp"])
        os.environ.pop("MAILSYNC_TASK_RETRIES", None)
    rerun = run_dag("crm_to_esp_contacts", night2, capfd, **quick)
    report = night.report or {}
    reason = str(report.get("loyalty_reason"))
    warned = [m for m in warnings if "Loyalty file rejected" in m and "host key" in m]
    stopped = [m for m in required.errors if "host key mismatch" in m and "loyalty_required" in m]
    loaded = check_contacts(
        world,
        Outcome(case="wrong SFTP host key, rerun", group="contacts"),
        before=before,
        expected=expected_contacts(world, before, loyalty_tiers(world.loyalty_path(day2).read_bytes())),
        requests=world.requests(),
    )
    outcome.runs = 4
    outcome.inputs = "loyalty_sftp host_key of another server on night 2"
    outcome.outcome = (
        f"night {night.state}, loyalty {report.get('loyalty')} ({reason[:70]}...), {len(sftp_opens)} file "
        f"opens, last tiers kept; with loyalty_required {required.state} at {','.join(stopped_at)} "
        f"(the rest not run); rerun with the right key {rerun.state}, "
        f"loyalty {(rerun.report or {}).get('loyalty')}"
    )
    outcome.passed = (
        night.state == "success"
        and report.get("loyalty") == "rejected"
        and "host_key extra" in reason
        and bool(warned)
        and secret not in said
        and not sftp_opens
        and not outcome.problems()
        and required.state == "failed"
        and stopped_at == ["wait_for_loyalty_file"]
        and bool(stopped)
        and rerun.state == "success"
        and not loaded.problems()
    )
    recorder.record(outcome, clock)
    assert night.state == "success", (night.failed_tasks, night.errors[-3:])
    assert report.get("loyalty") == "rejected", report
    assert "host key mismatch" in reason and "loyalty_sftp connection's host_key extra" in reason, reason
    assert warned, "one WARNING 'Loyalty file rejected' naming the host key"
    assert secret not in said and secret not in reason and not any(secret in m for m in warnings)
    assert not sftp_opens, "nothing may be read from a server whose host key does not match"
    assert not outcome.problems(), (outcome.problems(), outcome.examples)
    assert required.state == "failed" and stopped_at == ["wait_for_loyalty_file"], required.failed_tasks
    assert stopped, required.errors
    assert rerun.state == "success" and (rerun.report or {}).get("loyalty") == "loaded"
    assert not loaded.problems(), (loaded.problems(), loaded.examples)
