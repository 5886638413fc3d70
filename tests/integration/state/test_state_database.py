"""The sync-state database the way production runs it: PostgreSQL found through Airflow's
connection API (here: a connection in the metadata DB, no environment variable), schema
migrations, run leases between processes, and the refusal of a per-worker SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tests.integration.dags import dagrun


def airflow_cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=os.environ, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_the_state_connection_kept_in_the_metadata_db_is_the_one_used(
    vendors, airflow_db, tmp_path, pg_url, monkeypatch
):
    dagrun.isolate(tmp_path)
    monkeypatch.delenv("AIRFLOW_CONN_MAILSYNC_STATE")  # only the metadata DB knows it
    database = pg_url.rsplit("/", 1)[1]
    airflow_cli(
        "connections", "add", "mailsync_state", "--conn-type", "postgres", "--conn-host", "127.0.0.1",
        "--conn-port", "5432", "--conn-login", "postgres", "--conn-schema", database,
    )  # fmt: skip
    try:
        run = dagrun.run("esp_to_crm_engagement", "2026-11-18T00:00:00Z")
    finally:
        airflow_cli("connections", "delete", "mailsync_state")
    assert run.state == "success"
    written = dagrun.report(run)["written"]
    assert written > 0
    with sa.create_engine(pg_url).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*) FROM mailsync_sync_state WHERE integration = 'esp_to_crm_engagement'")
        ).scalar_one()
        leases = conn.execute(sa.text("SELECT count(*) FROM mailsync_run_lock")).scalar_one()
    assert rows == written  # every acknowledgement landed in PostgreSQL, not in a local file
    assert leases == 0  # the run's lease was taken there and given back
    assert not (tmp_path / "airflow" / "mailsync-state.db").exists()


def test_a_distributed_executor_refuses_a_state_that_is_not_shared(monkeypatch):
    from mailsync.state import StateNotConfigured, state_url

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.delenv("AIRFLOW_CONN_MAILSYNC_STATE", raising=False)
    with pytest.raises(
        StateNotConfigured, match=r"define the Airflow connection 'mailsync_state' as PostgreSQL"
    ):
        state_url()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAILSYNC_STATE", json.dumps({"conn_type": "sqlite", "host": "/tmp/x.db"})
    )
    with pytest.raises(StateNotConfigured, match="A SQLite file is per machine"):
        state_url()
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert state_url() == "sqlite:////tmp/x.db"  # fine on one machine


def test_a_database_made_before_migrations_is_migrated_in_place(pg_url):
    from mailsync.state import SyncState, metadata, sync_state

    old = sa.create_engine(pg_url)
    sync_state.create(old)  # what create_all made before there were migrations
    with old.begin() as conn:
        conn.execute(
            sync_state.insert().values(
                integration="crm_to_esp_contacts", key="a@example.com", bucket=3, fingerprint="f" * 32,
                status="subscribed", acked_at=sa.func.now(), run_id="old",
            )
        )  # fmt: skip
    state = SyncState("crm_to_esp_contacts", url=pg_url)
    assert state.count() == 1  # kept
    tables = set(sa.inspect(state.engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} | {"mailsync_alembic_version"} <= tables
    with state.engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT version_num FROM mailsync_alembic_version")).scalar_one() == _head()
        )


def _head() -> str:
    """The newest migration's revision (each file starts with its number)."""
    from mailsync.state import MIGRATIONS

    return max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))


MIGRATE = "import sys; from mailsync.state import RunLock; RunLock('x', url=sys.argv[1]); print('ok')"


def test_workers_starting_together_migrate_a_new_database_once(pg_url):
    env = {**os.environ, "PYTHONPATH": f"{dagrun.PROJECT / 'plugins'}:{dagrun.PROJECT}"}
    procs = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, pg_url], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["ok"] * 4
    with sa.create_engine(pg_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mailsync_alembic_version")).scalar_one() == 1


def test_one_run_at_a_time_holds_the_lease(pg_url, caplog):
    from mailsync.state import RunLock, RunLockLost

    a, b = RunLock("esp_to_crm_engagement", url=pg_url), RunLock("esp_to_crm_engagement", url=pg_url)
    assert a.acquire("backfill__2026-11-14", ttl_s=60) is None
    held = b.acquire("backfill__2026-11-15", ttl_s=60)
    assert held is not None and held.holder == "backfill__2026-11-14"
    a.hold("backfill__2026-11-14", ttl_s=60)  # renewing is fine
    with pytest.raises(RunLockLost, match="backfill__2026-11-14"):
        b.hold("backfill__2026-11-15", ttl_s=60)
    assert RunLock("shop_conversions_to_esp", url=pg_url).acquire("x", ttl_s=60) is None  # other DAGs go on
    assert a.release("backfill__2026-11-14") and not a.release("backfill__2026-11-14")
    assert b.acquire("backfill__2026-11-15", ttl_s=0.2) is None
    time.sleep(0.3)  # its run died without a teardown: the lease runs out
    assert a.acquire("manual__2026-11-20", ttl_s=60) is None
    assert "Took over the expired lease" in caplog.text
    with pytest.raises(RunLockLost):
        b.hold("backfill__2026-11-15", ttl_s=60)  # the old holder's next task must not go on


def test_a_task_under_the_lock_fails_when_another_run_holds_it(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from mailsync.operators.lock import RunLockSensor, hold_run_lock
    from mailsync.state import RunLock, RunLockLost

    monkeypatch.setenv(
        "AIRFLOW_CONN_MAILSYNC_STATE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "s.db")})
    )
    context = {"dag": SimpleNamespace(dag_id="esp_to_crm_engagement"), "run_id": "backfill__2026-11-15"}
    sensor = RunLockSensor(task_id="acquire_run_lock", lock_name="esp_to_crm_engagement")
    RunLock("esp_to_crm_engagement").acquire("backfill__2026-11-14", ttl_s=60)
    assert sensor.poke(context) is False  # waits for the other day
    with pytest.raises(RunLockLost):
        hold_run_lock(context)
    RunLock("esp_to_crm_engagement").release("backfill__2026-11-14")
    assert sensor.poke(context) is True
    hold_run_lock(context)  # now this run's tasks go on


def test_parallel_tasks_of_one_run_renew_its_lease_without_losing_it(pg_url):
    """Mapped loads of one run start together: each renews the lease; the renewal that loses
    the compare-and-set to its sibling still holds it (seen as RunLockLost "held by" itself)."""
    from concurrent.futures import ThreadPoolExecutor

    from mailsync.state import RunLock

    holder = "manual__2026-11-20T02:00:00+00:00"
    RunLock("crm_to_esp_contacts", url=pg_url).acquire(holder, ttl_s=60)
    locks = [RunLock("crm_to_esp_contacts", url=pg_url) for _ in range(8)]

    def renew(lock: RunLock) -> int:
        for _ in range(25):
            lock.hold(holder, ttl_s=60)
        return 25

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(renew, locks)) == 200  # RunLockLost would propagate here


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_the_state_of_given_keys_is_read_across_buckets_and_query_sizes(database, request, tmp_path):
    """The load's resume check reads only its own records' state: keys of any bucket, more keys
    than one query binds, keys never acknowledged, and another integration's rows left out."""
    from mailsync.state import KEYS_PER_QUERY, SyncState

    url = request.getfixturevalue("pg_url") if database == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    state, other = SyncState("contacts", url), SyncState("buyers", url)
    n = KEYS_PER_QUERY + 7
    state.acknowledge(
        [
            {"key": f"k{i}@x.de", "bucket": i % 31, "fingerprint": f"v2:{i}", "status": "subscribed"}
            for i in range(n)
        ],
        "run_1",
    )
    other.acknowledge([{"key": "k0@x.de", "bucket": 0, "fingerprint": "v2:other"}], "run_1")  # asked for
    wanted = [f"k{i}@x.de" for i in range(0, n, 2)] + ["never@x.de"]
    got = state.load(keys=wanted)
    assert sorted(got["key"]) == sorted(wanted[:-1])
    assert dict(zip(got["key"], got["fingerprint"], strict=True))["k0@x.de"] == "v2:0"
    assert set(got["bucket"]) == set(range(31))
    assert state.load(keys=[]).empty and list(state.load(keys=[]).columns) == list(got.columns)
    whole = state.load(range(32))
    assert len(whole) == n and str(whole["key"].dtype) == str(got["key"].dtype) == "string"
    assert whole["bucket"].dtype == "int64" and whole["status"].isna().sum() == 0


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_state_of_revision_0004_gets_the_index_a_diff_reads_by(database, request, tmp_path):
    """Migration 0005: the index on (integration, bucket) replaces the one on bucket alone, rows
    kept; SQLite's plan for a diff's read then uses it instead of walking the whole integration."""
    from alembic import command
    from alembic.config import Config

    from mailsync.state import MIGRATIONS, SyncState

    url = request.getfixturevalue("pg_url") if database == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    eng = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with eng.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    before = {i["name"] for i in sa.inspect(eng).get_indexes("mailsync_sync_state")}
    assert "ix_mailsync_sync_state_bucket" in before
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mailsync_sync_state VALUES ('contacts', 'a@x.de', 3, 'v2:1', NULL, "
                "CURRENT_TIMESTAMP, 'r')"
            )
        )
    state = SyncState("contacts", url)  # migrates to the head
    indexes = {
        i["name"]: i["column_names"] for i in sa.inspect(state.engine).get_indexes("mailsync_sync_state")
    }
    assert indexes.get("ix_mailsync_sync_state_integration_bucket") == ["integration", "bucket"]
    assert "ix_mailsync_sync_state_bucket" not in indexes
    assert state.load([3])["key"].tolist() == ["a@x.de"]
    if database == "sqlite":
        with state.engine.connect() as conn:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT key FROM mailsync_sync_state "
                "WHERE integration = 'contacts' AND bucket IN (1, 2, 3)"
            ).all()
        assert "ix_mailsync_sync_state_integration_bucket" in str(plan)
