"""The mapping file format: valid files load, invalid ones fail naming file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailsync.mapping.spec import MappingError, load_mapping, parse_mapping
from mailsync.settings import MAPPINGS_DIR

PROJECT = Path(__file__).resolve().parents[2]

MINIMAL = """\
name: demo
sources:
  people:
    system: crm
    object: contacts
    key: {input: email}
    inputs:
      email: {type: email, required: true}
      born: {type: date, formats: ["%d.%m.%Y"]}
destination: {system: esp, object: members, key: email_address}
fields:
  email_address: {from: email}
  merge_fields.BIRTHDAY: {from: born, format: "%m/%d"}
"""


def test_every_shipped_mapping_is_valid():
    names = sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))
    assert "crm_to_esp_contacts" in names
    for name in names:
        assert load_mapping(name).name == name


def test_minimal_mapping_loads_with_defaults():
    m = parse_mapping(MINIMAL)
    assert m.primary == "people"
    assert m.sources["people"].checks.bad_row_threshold == 0.05
    assert m.fields["merge_fields.BIRTHDAY"].format == "%m/%d"


def test_unknown_key_names_file_line_and_key():
    text = MINIMAL.replace("      born: {type: date", "      born: {typo: 1, type: date")
    with pytest.raises(MappingError) as err:
        parse_mapping(text, filename="demo.yaml")
    assert "demo.yaml:9: sources.people.inputs.born.typo: unknown key" in str(err.value)


def test_type_error_names_the_key():
    text = MINIMAL.replace(
        "key: {input: email}", "key: {input: email}\n    checks: {bad_row_threshold: lots}"
    )
    with pytest.raises(MappingError) as err:
        parse_mapping(text, filename="demo.yaml")
    message = str(err.value)
    assert "demo.yaml:7: sources.people.checks.bad_row_threshold" in message
    assert "valid number" in message


def test_reference_to_a_missing_input_is_named():
    text = MINIMAL.replace("{from: born,", "{from: birthday,")
    with pytest.raises(MappingError) as err:
        parse_mapping(text, filename="demo.yaml")
    assert (
        "fields.merge_fields.BIRTHDAY refers to 'birthday', which is not an input of source 'people'"
        in str(err.value)
    )


def test_missing_lookup_and_bad_date_format_are_named():
    text = MINIMAL.replace('formats: ["%d.%m.%Y"]', 'formats: ["DD.MM.YYYY"]').replace(
        "{from: email}", "{from: email, lookup: nowhere}"
    )
    with pytest.raises(MappingError) as err:
        parse_mapping(text, filename="demo.yaml")
    assert "date format 'DD.MM.YYYY' has no strftime directive" in str(err.value)


def test_yaml_tags_that_build_objects_are_refused():
    text = MINIMAL + "evil: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(MappingError, match="not valid YAML"):
        parse_mapping(text, filename="evil.yaml")


def test_a_join_must_target_an_input_of_the_primary_source():
    text = MINIMAL.replace(
        "destination:",
        "  extra:\n    system: sftp\n    object: f\n    key: {input: id}\n    join: nope\n"
        "    inputs: {id: {}}\ndestination:",
    )
    with pytest.raises(
        MappingError, match=r"sources\.extra\.join refers to 'nope', which is not an input of people"
    ):
        parse_mapping(text)


def test_check_command_reports_broken_mapping(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(MINIMAL.replace("type: email", "type: emial"), encoding="utf-8")
    env = {"PYTHONPATH": f"{PROJECT / 'plugins'}:{PROJECT}", "PATH": "/usr/bin:/bin"}
    bad = subprocess.run(
        [sys.executable, "-m", "mailsync.mapping", "check", str(broken)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1
    assert f"{broken}:8: sources.people.inputs.email.type" in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "mailsync.mapping", "check", str(MAPPINGS_DIR)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert good.returncode == 0, good.stderr
