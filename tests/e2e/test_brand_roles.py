"""With the FAB auth manager, a brand's users see and trigger only their brand's DAGs.

A real Airflow (LocalAirflow(auth="fab"): api-server, scheduler, dag-processor, triggerer) with
the project's brands (include/brands/: hotel_alpenhof, hotel_seeblick, default); one user per
brand with only the brand's role, which the DAGs' `access_control` names. Everything goes
through the REST API with the JWT `POST /auth/token` gives. The DAGs stay paused, so a run that
is accepted is only queued: nothing needs a vendor.
"""

from __future__ import annotations

import pytest
import requests

from devtools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow
ALPENHOF, SEEBLICK = "legacy_members_to_esp__hotel_alpenhof", "legacy_members_to_esp__hotel_seeblick"
# every integration a brand file does not switch off, per brand (include/brands/*.yaml)
INTEGRATIONS = (
    "crm_to_esp_contacts",
    "esp_to_crm_engagement",
    "shop_conversions_to_esp",
    "esp_buyer_segments",
    "legacy_members_to_esp",
)
BRAND_DAGS = {
    "alice": {f"{i}__hotel_alpenhof" for i in INTEGRATIONS},
    "bob": {f"{i}__hotel_seeblick" for i in INTEGRATIONS[:2] + INTEGRATIONS[4:]},  # Seeblick: no shop
}
DAY = "2026-11-20T03:00:00+00:00"


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    home = tmp_path_factory.mktemp("brand_roles")
    airflow = LocalAirflow(
        home / "airflow", auth="fab", env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    )
    try:
        airflow.start()  # creates the brand roles before the dag-processor stores the DAGs
        users = {
            "alice": ("brand_hotel_alpenhof", airflow.add_user("alice", "brand_hotel_alpenhof")),
            "bob": ("brand_hotel_seeblick", airflow.add_user("bob", "brand_hotel_seeblick")),
        }
        for dag_id in (*BRAND_DAGS["alice"], *BRAND_DAGS["bob"], *INTEGRATIONS):
            airflow.wait_for_dag(dag_id)
        tokens = {name: airflow.token_for(name, password) for name, (_, password) in users.items()}
        yield airflow, tokens
    finally:
        airflow.stop()


def _call(airflow: LocalAirflow, token: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{airflow.url}/api/v2/{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,
    )


def _dag_ids(airflow: LocalAirflow, token: str) -> set[str]:
    response = _call(airflow, token, "GET", "dags", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {d["dag_id"] for d in response.json()["dags"]}


def test_fab_issues_jwts_at_auth_token_and_refuses_a_wrong_password(fab):
    airflow, tokens = fab
    assert tokens["alice"].count(".") == 2  # header.payload.signature
    response = requests.post(
        f"{airflow.url}/auth/token", json={"username": "alice", "password": "x"}, timeout=30
    )
    assert response.status_code == 401


def test_the_admin_sees_every_brand_and_the_default(fab):
    airflow, _ = fab
    ids = {d["dag_id"] for d in airflow.api("GET", "dags", params={"limit": 100})["dags"]}
    assert {*BRAND_DAGS["alice"], *BRAND_DAGS["bob"], *INTEGRATIONS} <= ids


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_a_brand_user_lists_only_its_brands_dags(fab, user):
    airflow, tokens = fab
    assert _dag_ids(airflow, tokens[user]) == BRAND_DAGS[user]  # not the other brand's, not the default's


@pytest.mark.parametrize(
    ("user", "own", "other"), [("alice", ALPENHOF, SEEBLICK), ("bob", SEEBLICK, ALPENHOF)]
)
def test_a_brand_user_cannot_read_or_trigger_another_brands_dag(fab, user, own, other):
    airflow, tokens = fab
    others = (BRAND_DAGS["bob"] if user == "alice" else BRAND_DAGS["alice"]) | set(INTEGRATIONS)
    for dag_id in sorted(others):  # every DAG of the other brand and of the default one
        assert _call(airflow, tokens[user], "GET", f"dags/{dag_id}").status_code in (403, 404), dag_id
    refused = _call(airflow, tokens[user], "POST", f"dags/{other}/dagRuns", json={"logical_date": DAY})
    assert refused.status_code == 403, refused.text
    assert _call(airflow, tokens[user], "GET", f"dags/{own}").status_code == 200


def test_a_brand_user_triggers_its_own_brands_dag(fab):
    airflow, tokens = fab
    body = {"logical_date": DAY, "conf": {"dry_run": True}}
    accepted = _call(airflow, tokens["alice"], "POST", f"dags/{ALPENHOF}/dagRuns", json=body)
    assert accepted.status_code == 200, accepted.text
    run_id = accepted.json()["dag_run_id"]
    runs = _call(airflow, tokens["alice"], "GET", f"dags/{ALPENHOF}/dagRuns").json()["dag_runs"]
    assert run_id in {r["dag_run_id"] for r in runs}
    assert not _call(airflow, tokens["bob"], "GET", f"dags/{SEEBLICK}/dagRuns").json()["dag_runs"]
