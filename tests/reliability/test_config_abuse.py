"""Abuse of configuration and file names: mapping YAML with unknown keys or unsafe tags, path
traversal in partner file names, a wrong SFTP host key (the last one through whole nights)."""

from __future__ import annotations

import json
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


@pytest.mark.slow
def test_a_wrong_sftp_host_key_reads_nothing_says_so_and_the_rerun_completes(
    world, connections, recorder, clock, capfd
):
    import asyncssh

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    definition = json.loads(json.dumps(connections["loyalty_sftp"]))
    definition["extra"].update(host_key=" ".join(impostor.split()[:2]), conn_retry_attempts=1)
    before = members(world)
    expected = expected_contacts(world, before, loyalty_tiers(world.loyalty_path("2026-11-19").read_bytes()))
    os.environ["MAILSYNC_TASK_RETRIES"] = "0"
    set_connection("loyalty_sftp", definition)
    try:
        world.clear_requests()
        night = run_dag(
            "crm_to_esp_contacts", "2026-11-20T02:00:00Z", capfd, full_refresh=True, loyalty_wait_minutes=0
        )
    finally:
        set_connection("loyalty_sftp", connections["loyalty_sftp"])
        os.environ.pop("MAILSYNC_TASK_RETRIES", None)
    sftp_opens = [r for r in world.requests("sftp") if "loyalty_tiers" in (r.get("path") or "")]
    said = [m for m in night.errors if "host key" in m.lower() or "BadHostKey" in m]
    rerun = run_dag(
        "crm_to_esp_contacts", "2026-11-20T02:00:00Z", capfd, full_refresh=True, loyalty_wait_minutes=0
    )
    outcome = check_contacts(
        world,
        Outcome(case="wrong SFTP host key", group="contacts, 2 runs"),
        before=before,
        expected=expected,
        requests=world.requests(),
    )
    outcome.runs = 2
    outcome.inputs = "loyalty_sftp host_key of another server"
    outcome.outcome = (
        f"night {night.state} (failed: {','.join(night.failed_tasks)[:50] or '-'}; "
        f"{'names the host key' if said else 'no host-key message'}; {len(sftp_opens)} file opens); "
        f"rerun with the right key {rerun.state}"
    )
    outcome.passed = not sftp_opens and bool(said) and rerun.state == "success" and not outcome.problems()
    recorder.record(outcome, clock)
    assert not sftp_opens, "nothing may be read from a server whose host key does not match"
    assert said, night.errors
    assert rerun.state == "success"
    assert not outcome.problems(), (outcome.problems(), outcome.examples)
