"""Brands are configuration: a file in include/brands/ is a DAG per integration, with that
brand's connections, state, owner and role only; a bad file is an error naming file and key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailsync.brands import BrandError, load_brand, load_brands

PROJECT = Path(__file__).resolve().parents[2]
DAG_FILE = PROJECT / "dags" / "legacy_members_to_esp.py"
NEW_BRAND = """
title: Outlet Nord
owner: outlet-nord-crm
team: nord
connections: {esp: esp_outlet_nord, legacy_members_db: club_db_outlet_nord}
integrations:
  legacy_members_to_esp: {schedule: "15 1 * * *"}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_brand_file_means_the_default_brand_with_todays_ids(tmp_path):
    (brand,) = load_brands(tmp_path)  # no brands/ folder at all
    assert brand.is_default
    assert brand.dag_id("legacy_members_to_esp") == "legacy_members_to_esp"
    assert brand.state("legacy_members_to_esp") == "legacy_members_to_esp"
    assert brand.state("crm_to_esp_contacts") == "crm_to_esp_contacts"
    assert brand.conn_id("esp", "x") == "esp_default"
    assert brand.conn_id("legacy_members_db", "x") == "legacy_members_db"
    assert brand.access_control() is None
    (tmp_path / "brands").mkdir()
    assert [b.name for b in load_brands(tmp_path)] == ["default"]  # an empty folder: the same


def test_a_brand_file_keys_dag_state_audience_connections_and_role_by_brand(tmp_path):
    _write(tmp_path / "brands", "outlet_nord", NEW_BRAND)
    (brand,) = load_brands(tmp_path)
    assert brand.name == "outlet_nord" and not brand.is_default
    assert brand.dag_id("legacy_members_to_esp") == "legacy_members_to_esp__outlet_nord"
    assert brand.state("legacy_members_to_esp") == "legacy_members_to_esp__outlet_nord"
    assert brand.state("crm_to_esp_contacts") == "crm_to_esp_contacts__outlet_nord"
    assert brand.conn_id("esp", "x") == "esp_outlet_nord"
    assert brand.access_control() == {
        "brand_outlet_nord": {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
    }
    assert "brand:outlet_nord" in brand.dag_tags(["mailsync"]) and "team:nord" in brand.dag_tags([])
    assert brand.integration("legacy_members_to_esp").schedule == "15 1 * * *"


def test_the_shipped_brands_load(tmp_path):
    names = [b.name for b in load_brands(PROJECT / "include")]
    assert names == ["default", "hotel_alpenhof", "hotel_seeblick"]


def test_a_brand_never_falls_back_to_another_brands_connection(tmp_path):
    path = _write(tmp_path / "brands", "outlet_sued", "connections: {legacy_members_db: db_sued}\n")
    (brand,) = load_brands(tmp_path)
    with pytest.raises(BrandError, match=r"outlet_sued\.yaml: connections\.esp is required by legacy"):
        brand.conn_id("esp", "legacy_members_to_esp")
    assert str(path) in brand.path


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("connections: {espp: esp_x}\n", r"connections\.espp: Extra inputs are not permitted"),
        ("ownr: someone\n", r"ownr: Extra inputs are not permitted"),
        (
            "integrations: {legacy_members_to_esp: {schedul: '0 1 * * *'}}\n",
            r"legacy_members_to_esp\.schedul",
        ),
        ("tags: lake\n", r"tags: Input should be a valid list"),
        ("name: other\n", r"name: not a key"),
        ("[1, 2]\n", r"a brand file is a mapping"),
        ("owner: [unclosed\n", r"not valid YAML"),
        ("state_key: Bad-Key\n", r"state_key: must match"),
    ],
)
def test_a_bad_brand_file_is_an_error_naming_the_file_and_the_key(tmp_path, text, where):
    path = _write(tmp_path / "brands", "hotel_x", text)
    with pytest.raises(BrandError, match=where) as info:
        load_brand(path)
    assert str(path) in str(info.value)


def test_a_file_name_that_cannot_be_a_dag_id_is_refused(tmp_path):
    path = _write(tmp_path / "brands", "Hotel-X", "owner: x\n")
    with pytest.raises(BrandError, match=r"Hotel-X\.yaml: the file name 'Hotel-X' must be a brand name"):
        load_brands(tmp_path)
    path.unlink()


def test_two_brands_cannot_share_a_role_or_a_state(tmp_path):
    _write(tmp_path / "brands", "a", "role: shared\n")
    _write(tmp_path / "brands", "b", "role: shared\n")
    with pytest.raises(BrandError, match=r"b\.yaml: role: 'shared' is also brand 'a'"):
        load_brands(tmp_path)
    shutil.rmtree(tmp_path / "brands")
    _write(tmp_path / "brands", "a", "state_key: same\n")
    _write(tmp_path / "brands", "b", "state_key: same\n")
    with pytest.raises(BrandError, match=r"b\.yaml: state_key: 'same' is also brand 'a'"):
        load_brands(tmp_path)


# --- discovery through Airflow's DagBag, in a subprocess: settings read MAILSYNC_INCLUDE_DIR at import

_PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: v for k, v in bag.import_errors.items()}, "dags": {}}
for dag in bag.dags.values():
    load, extract, diff = dag.get_task("load"), dag.get_task("extract"), dag.get_task("diff")
    out["dags"][dag.dag_id] = {
        "esp": load.esp_conn_id, "audience": load.audience_state, "state": diff.state,
        "db": extract.conn_id, "owner": dag.default_args["owner"], "tags": sorted(dag.tags),
        "cron": dag.timetable.expression,
        "access": {r: {k: sorted(v) for k, v in p.items()} for r, p in (dag.access_control or {}).items()},
    }
print("RESULT " + json.dumps(out))
"""


def _parse_with_include(include: Path) -> dict:
    env = {**os.environ, "MAILSYNC_INCLUDE_DIR": str(include)}
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, str(DAG_FILE)], env=env, capture_output=True, text=True, cwd=PROJECT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture
def include(tmp_path) -> Path:
    """The project's include folder without its brands (mappings, SQL, notifications)."""
    folder = tmp_path / "include"
    shutil.copytree(PROJECT / "include", folder, ignore=shutil.ignore_patterns("brands"))
    return folder


def test_without_brand_files_the_dag_is_todays(include):
    got = _parse_with_include(include)
    assert not got["errors"]
    assert got["dags"] == {
        "legacy_members_to_esp": {
            "esp": "esp_default",
            "audience": "crm_to_esp_contacts",
            "state": "legacy_members_to_esp",
            "db": "legacy_members_db",
            "owner": "data-engineering",
            "tags": ["daily", "esp", "legacy", "mailsync", "sql"],
            "cron": "0 3 * * *",
            "access": {},
        }
    }


def test_a_new_brand_file_is_a_new_dag_with_only_its_own_ids(include):
    _write(include / "brands", "outlet_nord", NEW_BRAND)
    got = _parse_with_include(include)
    assert not got["errors"]
    assert set(got["dags"]) == {"legacy_members_to_esp__outlet_nord"}  # no default.yaml: no plain DAG
    assert got["dags"]["legacy_members_to_esp__outlet_nord"] == {
        "esp": "esp_outlet_nord",
        "audience": "crm_to_esp_contacts__outlet_nord",
        "state": "legacy_members_to_esp__outlet_nord",
        "db": "club_db_outlet_nord",
        "owner": "outlet-nord-crm",
        "tags": ["brand:outlet_nord", "daily", "esp", "legacy", "mailsync", "sql", "team:nord"],
        "cron": "15 1 * * *",
        "access": {
            "brand_outlet_nord": {"DAG Runs": ["can_create", "can_read"], "DAGs": ["can_edit", "can_read"]}
        },
    }
    _write(include / "brands", "default", "owner: data-engineering\n")
    assert set(_parse_with_include(include)["dags"]) == {
        "legacy_members_to_esp",
        "legacy_members_to_esp__outlet_nord",
    }


def test_an_invalid_brand_file_is_the_dag_files_import_error_naming_file_and_key(include):
    path = _write(include / "brands", "outlet_nord", NEW_BRAND.replace("team:", "teem:"))
    got = _parse_with_include(include)
    (error,) = got["errors"].values()
    assert f"{path}: teem: Extra inputs are not permitted" in error
    assert not got["dags"]


def test_a_brand_without_its_esp_connection_is_an_import_error(include):
    path = _write(include / "brands", "outlet_nord", "connections: {legacy_members_db: db}\n")
    (error,) = _parse_with_include(include)["errors"].values()
    assert f"{path}: connections.esp is required by legacy_members_to_esp" in error


_PARSE_ALL = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": dict(bag.import_errors), "dags": {}}
for dag in bag.dags.values():
    seen = {"conns": set(), "states": set(), "reads": set(), "outlets": set(), "schedule": str(dag.timetable)}
    for task in dag.tasks:
        args = {**vars(task), **getattr(task, "partial_kwargs", {})}
        for name, value in args.items():
            if isinstance(value, str) and name.endswith("conn_id"):
                seen["conns"].add(value)
            if isinstance(value, str) and name.endswith("state"):
                seen["states"].add(value)
            if isinstance(value, str) and name.endswith("dag_id") and name != "dag_id" and value:
                seen["reads"].add(value)
        seen["outlets"] |= {o.name for o in task.outlets}
    out["dags"][dag.dag_id] = {k: sorted(v) if isinstance(v, set) else v for k, v in seen.items()}
print("RESULT " + json.dumps(out))
"""
EVERY_CONNECTION = """
connections: {esp: esp_outlet_nord, crm: crm_outlet_nord, shop: shop_outlet_nord,
              loyalty_sftp: sftp_outlet_nord, legacy_members_db: club_db_outlet_nord}
"""


def test_a_new_brand_file_gets_every_integrations_dag_reaching_only_its_own_connections(include):
    """Issue 20: a brand is a file; every DAG of it names only its own connections, states,
    Assets and the other DAGs of the same brand."""
    _write(include / "brands", "outlet_nord", EVERY_CONNECTION)
    env = {**os.environ, "MAILSYNC_INCLUDE_DIR": str(include)}
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_ALL, str(PROJECT / "dags")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    got = json.loads(line.removeprefix("RESULT "))
    assert not got["errors"]
    integrations = {
        "crm_to_esp_contacts",
        "esp_to_crm_engagement",
        "shop_conversions_to_esp",
        "esp_buyer_segments",
        "legacy_members_to_esp",
    }
    assert set(got["dags"]) == {f"{i}__outlet_nord" for i in integrations} | {"mailsync_retention"}
    ours = {f"{kind}_outlet_nord" for kind in ("esp", "crm", "shop", "sftp", "club_db")}
    for dag_id, seen in got["dags"].items():
        if dag_id == "mailsync_retention":  # one for all brands: it reaches no vendor
            continue
        assert seen["conns"] and set(seen["conns"]) <= ours, (dag_id, seen["conns"])
        assert all(s.endswith("__outlet_nord") for s in seen["states"]), (dag_id, seen["states"])
        assert all(d.endswith("__outlet_nord") for d in seen["reads"]), (dag_id, seen["reads"])
        assert all(o.endswith("__outlet_nord") for o in seen["outlets"]), (dag_id, seen["outlets"])
    segments = got["dags"]["esp_buyer_segments__outlet_nord"]["schedule"]
    assert "esp_audience_contacts__outlet_nord" in segments
    assert "esp_ecommerce_orders__outlet_nord" in segments
