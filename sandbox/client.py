"""Python API for tests and tools: start/stop a sandbox, switch faults, inspect and change its state.

Reads go straight to the SQLite file (read-only; WAL lets them run while the server writes);
everything that changes state goes through the admin routes, so the server stays the only writer.
The mail sink keeps its messages in the server's memory: ``mail()`` reads them over the admin API.

    sb = Sandbox.start(tmp_dir, seed=42, contacts=1000, days=7, parent_pid=os.getpid())
    os.environ.update({f"AIRFLOW_CONN_{k.upper()}": v for k, v in sb.airflow_connections().items()})
    ...
    sb.stop()
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from sandbox import store
from sandbox.config import DB_NAME, LEGACY_DSN, READY_NAME, GenParams, read_ready
from sandbox.crm_model import PROPS, SELECT_COLUMNS, contact_json
from sandbox.esp_model import MEMBER_COLUMNS, MemberRow, member_json, subscriber_hash
from sandbox.esp_reports import campaign_json
from sandbox.loyalty import FILE_NAME, day_dir
from sandbox.process import stop_running

if TYPE_CHECKING:
    from sandbox.legacy_members import LegacyMembers

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SandboxError(RuntimeError):
    pass


class Sandbox:
    """A running sandbox (started by us, or attached to one started elsewhere)."""

    def __init__(self, data_dir: Path, process: subprocess.Popen | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.process = process
        self.info: dict = read_ready(self.data_dir)
        self._http = requests.Session()

    # --- life cycle ------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        data_dir: str | Path,
        *,
        seed: int = 42,
        contacts: int = 1000,
        days: int = 7,
        now: str | None = None,
        parent_pid: int | None = None,
        esp_port: int = 0,
        crm_port: int = 0,
        shop_port: int = 0,
        sftp_port: int = 0,
        smtp_port: int = 0,
        faults: dict | None = None,
        generate: bool = True,
        options: dict | None = None,
        timeout: float = 180.0,
    ) -> Sandbox:
        """Start ``python -m sandbox serve`` and wait for its ready.json. Ports 0 = free ports."""
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / READY_NAME).unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--data-dir",
            str(data_dir),
            "--seed",
            str(seed),
            "--contacts",
            str(contacts),
            "--days",
            str(days),
            "--esp-port",
            str(esp_port),
            "--crm-port",
            str(crm_port),
            "--shop-port",
            str(shop_port),
            "--sftp-port",
            str(sftp_port),
            "--smtp-port",
            str(smtp_port),
        ]
        if now:
            cmd += ["--now", now]
        if parent_pid:
            cmd += ["--parent-pid", str(parent_pid)]
        if not generate:
            cmd.append("--no-generate")
        for name, value in (options or {}).items():
            cmd += ["--set", f"{name}={value}"]
        if faults:
            path = data_dir / "faults.json"
            path.write_text(json.dumps(faults))
            cmd += ["--faults", str(path)]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        )
        log = (data_dir / "sandbox.log").open("ab")
        # Own session: signals meant for the caller's process group (Ctrl-C, a task runner reaping its
        # group) must not stop the sandbox; --parent-pid ends it when the caller is gone.
        # The command is built here from typed arguments and our own interpreter: nothing untrusted.
        process = subprocess.Popen(  # noqa: S603
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=_PROJECT_ROOT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SandboxError(f"sandbox exited with {process.returncode}: {cls._log_tail(data_dir)}")
            try:
                if read_ready(data_dir)["pid"] == process.pid:
                    return cls(data_dir, process)
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.05)
        process.kill()
        raise SandboxError(f"sandbox not ready after {timeout} s: {cls._log_tail(data_dir)}")

    @classmethod
    def attach(cls, data_dir: str | Path) -> Sandbox:
        """Use a sandbox that is already running (e.g. ``make sandbox``)."""
        return cls(Path(data_dir))

    @staticmethod
    def _log_tail(data_dir: Path) -> str:
        path = data_dir / "sandbox.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            stop_running(self.data_dir, timeout)
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._http.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- connections -----------------------------------------------------------------------------

    def url(self, system: str) -> str:
        return self.info["urls"][system]

    def airflow_connections(self) -> dict[str, str]:
        """Connection id → the JSON Airflow accepts in ``AIRFLOW_CONN_<ID>``."""
        info, creds = self.info, self.info["credentials"]
        conns = {
            "esp_default": {
                "conn_type": "http",
                "host": info["urls"]["esp"],
                "login": creds["esp_login"],
                "password": creds["esp_api_key"],
                "extra": {"list_id": info["list_id"], "store_id": info["store_id"]},
            },
            "crm_default": {"conn_type": "http", "host": info["urls"]["crm"], "password": creds["crm_token"]},
            "shop_default": {
                "conn_type": "http",
                "host": info["urls"]["shop"],
                "password": creds["shop_token"],
                "extra": {"api_version": creds["shop_api_version"]},
            },
            "loyalty_sftp": {
                "conn_type": "sftp",
                "host": info["host"],
                "port": info["ports"]["sftp"],
                "login": creds["sftp_user"],
                "password": creds["sftp_password"],
                "extra": {"host_key": info["sftp_host_key"], "no_host_key_check": False, "compress": False},
            },
            # Airflow's SMTP provider: plain SMTP (the sink offers neither SSL nor STARTTLS), AUTH
            # with login/password; no retries, so a refused or failed send is seen at once and a
            # message is never sent twice. JSON booleans: the hook reads bool("false") as True.
            "mailsync_smtp": {
                "conn_type": "smtp",
                "host": info["host"],
                "port": info["ports"]["smtp"],
                "login": creds["smtp_user"],
                "password": creds["smtp_password"],
                "extra": {
                    "from_email": info["mail_from"],
                    "disable_ssl": True,
                    "disable_tls": True,
                    "timeout": 10,
                    "retry_limit": 0,
                },
            },
        }
        return {conn_id: json.dumps(value) for conn_id, value in conns.items()}

    def legacy_members(self, dsn: str = LEGACY_DSN, **rates: float) -> LegacyMembers:
        """The legacy club-member table in PostgreSQL (``dsn``), drawn from this sandbox's current
        world (seed, size, rates), so its emails are the CRM's; see sandbox/legacy_members.py.
        Not served by the sandbox: ``reset()`` it after a ``reset`` of the sandbox."""
        from sandbox.legacy_members import LegacyMembers

        return LegacyMembers(dsn, GenParams(**read_ready(self.data_dir)["generated"]), rates)

    # --- admin -----------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, body: dict | None = None):
        base = f"http://{self.info['host']}:{self.info['ports']['esp']}/_sandbox"
        response = self._http.request(method, base + path, json=body, timeout=600)
        if response.status_code != 200:
            raise SandboxError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def reset(
        self,
        seed: int | None = None,
        contacts: int | None = None,
        days: int | None = None,
        now: str | None = None,
        **generator_options: float,
    ) -> dict:
        """Regenerate all data in place; clears faults, the request log and the frozen clock.

        Arguments not given keep their current value; rates not given go back to their defaults.
        """
        body = {
            k: v
            for k, v in {"seed": seed, "contacts": contacts, "days": days, "now": now}.items()
            if v is not None
        }
        counts = self._admin("POST", "/reset", body | {"options": generator_options})
        self.info = read_ready(self.data_dir)
        return counts

    def set_faults(self, system: str, **switches) -> dict:
        """Set fault switches of one system (see sandbox/faults.py); a switch set to None is removed."""
        return self._admin("PUT", f"/faults/{system}", switches)

    def clear_faults(self, system: str | None = None) -> dict:
        return self._admin("DELETE", f"/faults/{system}" if system else "/faults")

    def faults(self) -> dict:
        """Current switches with their counters (matched, applied, remaining)."""
        return self._admin("GET", "/faults")

    def set_clock(self, at: str | None = None) -> None:
        """Freeze the server's "now" for writes (lastmodifieddate, last_changed, ...); None = wall clock."""
        self._admin("PUT", "/clock", {"at": at})

    def mutate_crm(
        self, fraction: float = 0.01, seed: int = 1, at: str = "2026-11-20T03:00:00Z"
    ) -> list[str]:
        """Change city, last name, consent or country of a deterministic share of live contacts."""
        return self._admin("POST", "/crm/mutate", {"fraction": fraction, "seed": seed, "at": at})

    def esp_set_status(self, email: str, status: str) -> dict:
        return self._admin("POST", "/esp/status", {"email": email, "status": status})

    def crm_archive(self, contact_id: str | int) -> dict:
        return self._admin("POST", "/crm/archive", {"id": int(contact_id)})

    def crm_gdpr_delete(self, contact_id: str | int) -> dict:
        return self._admin("POST", "/crm/gdpr-delete", {"id": int(contact_id)})

    def add_esp_activity(
        self,
        email: str,
        action: str,
        timestamp: str | None = None,
        *,
        campaign_id: str | None = None,
        type: str | None = None,
        url: str | None = None,
    ) -> dict:
        """One campaign event: open|click|bounce|unsubscribe (a hard bounce cleans, an unsubscribe
        unsubscribes the member)."""
        body = {
            "email": email,
            "action": action,
            "timestamp": timestamp,
            "campaign_id": campaign_id,
            "url": url,
        }
        if type is not None:
            body["type"] = type
        return self._admin("POST", "/esp/activity", body)

    def write_loyalty_file(self, day: str = "2026-11-20", fault: str | None = None) -> dict:
        """fault: None | half_written | half_written_marker | malformed | schema_drift | missing."""
        return self._admin("POST", "/loyalty", {"day": day, "fault": fault})

    def loyalty_path(self, day: str) -> Path:
        return day_dir(Path(self.info["sftp_root"]), day) / FILE_NAME

    # --- inspection (read-only SQLite) -----------------------------------------------------------

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        conn = store.connect(self.data_dir / DB_NAME, readonly=True)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            raise SandboxError(str(exc)) from exc
        finally:
            conn.close()

    def esp_members(self) -> list[dict]:
        """Every member (all statuses, archived included) as Mailchimp returns them; tags as names."""
        out = []
        for row in self._read(f"SELECT {MEMBER_COLUMNS} FROM esp_members ORDER BY rid"):
            member = member_json(MemberRow.from_db(row), self.info["list_id"])
            member["tags"] = [t["name"] for t in member["tags"]]
            out.append(member)
        return out

    def esp_member(self, email: str) -> dict | None:
        rows = self._read(
            f"SELECT {MEMBER_COLUMNS} FROM esp_members WHERE hash = ?", (subscriber_hash(email),)
        )
        return member_json(MemberRow.from_db(rows[0]), self.info["list_id"]) if rows else None

    def esp_forgotten(self) -> set[str]:
        """Subscriber hashes deleted permanently (they cannot be re-imported)."""
        return {h for (h,) in self._read("SELECT hash FROM esp_forgotten")}

    def _docs(self, table: str) -> list[dict]:
        return [store.loads(d) for (d,) in self._read(f"SELECT doc FROM {table} ORDER BY rowid")]

    def esp_orders(self) -> list[dict]:
        return self._docs("esp_orders")

    def esp_customers(self) -> list[dict]:
        return self._docs("esp_customers")

    def esp_products(self) -> list[dict]:
        return self._docs("esp_products")

    def esp_campaigns(self) -> list[dict]:
        return [
            campaign_json(r)
            for r in self._read(
                "SELECT id, web_id, send_ms, subject, title, emails_sent FROM esp_campaigns ORDER BY send_ms"
            )
        ]

    def esp_activity(self, campaign_id: str | None = None) -> list[dict]:
        """Raw activity events (open/click/bounce) with ms timestamps."""
        sql = "SELECT campaign_id, hash, email, action, type, ts_ms, url, ip FROM esp_activity"
        rows = self._read(
            sql + (" WHERE campaign_id = ?" if campaign_id else "") + " ORDER BY ts_ms",
            (campaign_id,) if campaign_id else (),
        )
        keys = ["campaign_id", "email_id", "email_address", "action", "type", "ts_ms", "url", "ip"]
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def esp_unsubscribes(self) -> list[dict]:
        keys = ["campaign_id", "email_id", "email_address", "ts_ms", "reason"]
        return [
            dict(zip(keys, r, strict=True))
            for r in self._read(
                "SELECT campaign_id, hash, email, ts_ms, reason FROM esp_unsubscribes ORDER BY ts_ms"
            )
        ]

    def crm_contacts(self, archived: bool = False) -> list[dict]:
        """Every contact (live, or archived only) with all properties, as HubSpot returns them."""
        props = list(PROPS)
        rows = self._read(
            f"SELECT {SELECT_COLUMNS} FROM crm_contacts WHERE archived = ? ORDER BY id", (int(archived),)
        )
        return [contact_json(r, props) for r in rows]

    def crm_contact(self, contact_id: str | int) -> dict | None:
        rows = self._read(f"SELECT {SELECT_COLUMNS} FROM crm_contacts WHERE id = ?", (int(contact_id),))
        return contact_json(rows[0], list(PROPS)) if rows else None

    def shop_orders(self) -> list[dict]:
        return [store.loads(d) for (d,) in self._read("SELECT doc FROM shop_orders ORDER BY id")]

    def requests(self, system: str | None = None) -> list[dict]:
        """The request log: system, method, path, query, status, ts, n_records (in the request body),
        n_returned (records in a list answer), record_keys (normalised emails / ids written), fault,
        served_ms (the sandbox's own time on the call, the added latency not counted)."""
        sql = f"SELECT {', '.join(store.REQUEST_COLUMNS)} FROM requests"
        rows = self._read(
            sql + (" WHERE system = ?" if system else "") + " ORDER BY id", (system,) if system else ()
        )
        out = []
        for row in rows:
            entry = dict(zip(store.REQUEST_COLUMNS, row, strict=True))
            entry["record_keys"] = store.loads(entry["record_keys"], [])
            out.append(entry)
        return out

    def clear_requests(self) -> None:
        """Forget the request log so far (e.g. between two runs of a test)."""
        self._admin("DELETE", "/requests")

    # --- mail sink -------------------------------------------------------------------------------

    def mail(self) -> list[dict]:
        """Messages the SMTP sink accepted, oldest first: ``id``, ``received_at``, ``login``,
        ``mail_from``, ``rcpt_to`` (the envelope), ``subject``, ``from``, ``to``, ``cc`` (addresses),
        ``date``, ``message_id``, ``headers``, ``text``, ``html`` (decoded bodies or None),
        ``attachments`` (filename, content_type, size), ``size``."""
        return self._admin("GET", "/mail")

    def clear_mail(self) -> int:
        """Forget the messages received so far; returns how many there were."""
        return self._admin("DELETE", "/mail")["deleted"]
