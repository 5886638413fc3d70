"""The soak: N generated nights with random faults switched on, every DAG each night.

    python -m tests.reliability.soak --nights N --seed S [--contacts 1000] [--out FILE]

(FILE defaults to bench/results/RELIABILITY.md.)

Night 0 is the first full sync (contacts) against a freshly generated sandbox. Then, per night
(calendar day D from 2026-11-20 on): the CRM changes (`mutate_crm`, a seeded share of contacts
at D 03:00), members open, click, bounce and unsubscribe (ESP activity during D, and members
unsubscribing in the ESP itself), the loyalty partner drops D's file; faults are drawn for the
night (seeded: throttling, 5xx bursts, dropped connections, timeouts, per-record rejections on
either vendor, a partner file in another dialect or broken, now and then a vendor down for the
whole run). Then `crm_to_esp_contacts`, `esp_to_crm_engagement` and `shop_conversions_to_esp`
run with dag.test(); a failed run is rerun once with the faults cleared, as on-call would.

After every night the end state is compared field by field with what the mappings prescribe
(tests/integration/dags/expected_contacts.py and expected_engagement.py, the same references the
DAG tests use): ESP members (status, every mapped merge field, language) and CRM engagement
properties. Totals go into the soak section of RELIABILITY.md. Not part of `make test`; `make
soak` runs it (NIGHTS, SEED).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
FIRST_DAY = date(2026, 11, 20)
PEOPLE_FILE_FAULTS = ["malformed", "half_written", "truncated", "comma", "utf8_bom", "missing", "dialect"]
USABLE_FILE_FAULTS = {"comma", "utf8_bom", "dialect", "upper_header", "malformed"}


def _setup_env(home: Path) -> None:
    from devtools.airflow_env import airflow_env

    os.environ.update(airflow_env(home / "airflow"))
    os.environ["MAILSYNC_STAGING_URL"] = (home / "staging").as_uri()
    os.environ["MAILSYNC_TASK_RETRY_DELAY_S"] = "1"
    os.environ["MAILSYNC_TASK_RETRIES"] = "2"
    os.environ["AIRFLOW_CONN_MAILSYNC_STATE"] = json.dumps(
        {"conn_type": "sqlite", "host": str(home / "state.db")}
    )
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


def _connections(sb, *, esp_timeout: float) -> dict[str, dict]:
    from tests.connections import set_connection

    defs = {cid: json.loads(v) for cid, v in sb.airflow_connections().items()}
    for cid, d in defs.items():
        if cid != "loyalty_sftp":
            d.setdefault("extra", {}).update(retry_budget=20)
        if cid == "esp_default":
            d["extra"].update(timeout=esp_timeout, batch_size=200)
        set_connection(cid, d)
    return defs


def draw_faults(rng: random.Random) -> dict[str, dict]:
    """The night's vendor faults: a few of the transient kinds, rarely an outage."""
    batch = {"method": "POST", "path": "/3.0/lists/*"}
    menu = {
        "esp": {
            "rate_limit": lambda: {"every": rng.randint(2, 5), "retry_after": 0.1, **batch},
            "status_burst": lambda: {
                "count": rng.randint(1, 4),
                "status": rng.choice([500, 502, 503]),
                **batch,
            },
            "drop": lambda: {"count": rng.randint(1, 2), **batch},
            "slow": lambda: {"count": 1, "seconds": 2.5, **batch},
            "record_errors": lambda: {"rate": 0.02, "seed": rng.randint(1, 1000)},
        },
        "crm": {
            "rate_limit": lambda: {"every": rng.randint(3, 6), "retry_after": 0.1},
            "status_burst": lambda: {"count": rng.randint(1, 4), "status": rng.choice([500, 502, 503])},
            "drop": lambda: {"count": 1},
            "record_errors": lambda: {"rate": 0.02, "seed": rng.randint(1, 1000)},
        },
    }
    faults: dict[str, dict] = {"esp": {}, "crm": {}}
    for system, kinds in menu.items():
        for name in rng.sample(sorted(kinds), rng.randint(0, 3)):
            faults[system][name] = kinds[name]()
    if rng.random() < 0.12:  # a vendor down for the whole run: the run fails, the rerun recovers
        system = rng.choice(["esp", "crm"])
        faults[system] = {"status_burst": {"count": 100000, "status": 503}}
        faults["outage"] = {"system": system}
    return faults


class Soak:
    def __init__(self, sb, rng: random.Random, out: Path) -> None:
        self.sb, self.rng, self.out = sb, rng, out
        self.nights: list[dict] = []
        self.tiers: dict[str, str] = {}
        self.mutated_at: dict[str, int] = {}  # contact id -> last night it was changed by mutate_crm
        self.unsub_at: dict[str, int] = {}  # email -> night it unsubscribed
        self.engagement_before: dict[str, dict] | None = None
        self.fields = Counter()  # field -> records differing from the prescription (last night)
        self.fault_hits = Counter()

    # -- one DAG run, rerun once when it failed -------------------------------------------------
    def run(self, dag_id: str, logical: str, faults: dict | None, **conf) -> dict:
        from tests.reliability.conftest import run_dag

        if faults:
            for system in ("esp", "crm"):
                if faults.get(system):
                    self.sb.set_faults(system, **faults[system])
        started = time.monotonic()
        first = run_dag(dag_id, logical, **conf)
        hits = self.sb.faults()
        applied = Counter()
        for system in ("esp", "crm"):
            for name, sw in (hits.get(system) or {}).items():
                if isinstance(sw, dict) and sw.get("applied"):
                    applied[f"{system}.{name}"] += sw["applied"]
        self.fault_hits.update(applied)
        self.sb.clear_faults()
        result = {
            "dag": dag_id,
            "state": first.state,
            "failed_tasks": first.failed_tasks,
            "rerun": None,
            "fault_hits": dict(applied),
            "errors": [e[:300] for e in first.errors[-3:]],
        }
        if first.state != "success":
            rerun = run_dag(dag_id, logical, **conf)
            result["rerun"] = rerun.state
            result["report"] = rerun.report
        else:
            result["report"] = first.report
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    # -- what happens in the world during day D --------------------------------------------------
    def live_day(self, night: int, day: date) -> dict:
        from tests.reliability.checker import members, norm

        sb, rng = self.sb, self.rng
        changed = sb.mutate_crm(fraction=0.02, seed=1000 + night, at=f"{day}T03:00:00Z")
        for cid in changed:
            self.mutated_at[str(cid)] = night
        current = [m for m in members(sb).values() if m["status"] == "subscribed"]
        campaign = sb.esp_campaigns()[-1]["id"]
        activity = Counter()
        for m in rng.sample(current, min(len(current), 60)):
            email = norm(m["email_address"])
            action = rng.choices(["open", "click", "bounce", "unsubscribe"], [70, 20, 6, 4])[0]
            kind = None
            if action == "bounce":
                kind = rng.choice(["hard", "soft"])
            at = f"{day}T{rng.randint(6, 22):02d}:{rng.randint(0, 59):02d}:00Z"
            sb.add_esp_activity(email, action, at, campaign_id=campaign, type=kind)
            activity[action if not kind else f"{kind} bounce"] += 1
            if action == "unsubscribe":
                self.unsub_at.setdefault(email, night)
        for m in rng.sample(current, min(len(current), 3)):  # unsubscribing in the ESP's own form
            sb.esp_set_status(m["email_address"], "unsubscribed")
            activity["esp status unsubscribed"] += 1
        return {"crm_changed": len(changed), **activity}

    def loyalty_drop(self, day: date) -> tuple[str | None, dict[str, str]]:
        """Write D's file (maybe faulty); return the fault and the tiers the mapping then prescribes."""
        from tests.reliability.checker import members
        from tests.reliability.test_loyalty_files import last_known, rows_of, tiers_of

        sb = self.sb
        sb.write_loyalty_file(day=day.isoformat())
        clean = sb.loyalty_path(day.isoformat()).read_bytes()
        fault = self.rng.choice(PEOPLE_FILE_FAULTS) if self.rng.random() < 0.35 else None
        known = last_known(members(sb))
        if fault:
            sb.write_loyalty_file(day=day.isoformat(), fault=fault)
        if fault is None or fault in USABLE_FILE_FAULTS:
            rows = rows_of(clean)
            tiers = tiers_of(rows)
            if fault == "malformed":
                sent = sb.loyalty_path(day.isoformat()).read_bytes().split(b"\r\n")
                broken = {
                    rows[i - 1]["customer_id"].strip().upper()
                    for i, line in enumerate(clean.split(b"\r\n"))
                    if 0 < i < len(sent) and line != sent[i]
                }
                tiers = {c: t for c, t in tiers.items() if c not in broken}
                tiers.update({c: known[c] for c in broken if c in known})
            return fault, tiers
        return fault, known

    # -- checks ----------------------------------------------------------------------------------
    def check_contacts(self, before, tiers, requests, rejected: set[str]) -> dict:
        from tests.reliability.checker import (
            TAGS,
            Outcome,
            check_contacts,
            expected_contacts,
            member_view,
            members,
        )

        expected = expected_contacts(self.sb, before, tiers)
        outcome = check_contacts(
            self.sb,
            Outcome(case="", group=""),
            before=before,
            expected=expected,
            requests=requests,
            excused=rejected,
        )
        after = members(self.sb)
        fields = Counter()
        for email, want in expected.items():
            got = member_view(after.get(email))
            if email in rejected:
                continue
            if got is None:
                fields["(member missing)"] += 1
                continue
            for key in ("status", "language"):
                fields[key] += got[key] != want[key]
            for tag in TAGS:
                fields[f"merge_fields.{tag}"] += got["merge_fields"][tag] != want["merge_fields"][tag]
        return {
            "expected": outcome.expected,
            "found": outcome.found,
            "lost": outcome.lost,
            "duplicates": outcome.duplicates,
            "resent_after_timeout": outcome.resent_after_timeout,
            "wrongful": outcome.wrongful_subscriptions,
            "excused_rejected": len(rejected),
            "fields": {k: v for k, v in fields.items() if v},
            "examples": outcome.examples,
            "fields_compared": len(expected) * (2 + len(TAGS)),
        }

    def check_engagement(self, night: int, end: datetime) -> dict:
        from tests.integration.dags.expected_engagement import PROPS, crm_state, expected_crm

        expected = expected_crm(
            self.sb, datetime.combine(FIRST_DAY, datetime.min.time(), UTC), end, self.engagement_before
        )
        after = crm_state(self.sb)
        ids_by_email = defaultdict(set)
        for c in self.sb.crm_contacts():
            ids_by_email[(c["properties"].get("email") or "").strip().lower()].add(str(c["id"]))
        from mailsync.pii import mask_email

        fields, lost, examples = Counter(), 0, []
        for email, want in expected.items():
            got = after.get(email) or {}
            # consent is the CRM's own (mutate_crm changes it); the write-back may only narrow it:
            # an unsubscribe of the window, later than the CRM's last change, must read "false"
            last_change = max((self.mutated_at.get(i, -1) for i in ids_by_email[email]), default=-1)
            narrowed = email in self.unsub_at and self.unsub_at[email] >= last_change
            if last_change >= 0 and not narrowed:
                want = {**want, "marketing_consent": got.get("marketing_consent")}
            diff = [p for p in PROPS if got.get(p) != want.get(p)]
            lost += bool(diff)
            if diff and len(examples) < 3:
                examples.append(
                    f"{mask_email(email)}: "
                    + ", ".join(f"{p} want {want.get(p)!r} got {got.get(p)!r}" for p in diff)
                )
            fields.update(diff)
        return {
            "expected": len(expected),
            "found": len(expected) - lost,
            "lost": lost,
            "fields": dict(fields),
            "fields_compared": len(expected) * len(PROPS),
            "examples": examples,
        }

    # -- the nights ------------------------------------------------------------------------------
    def night(self, n: int) -> dict:
        from tests.integration.dags.expected_engagement import crm_state
        from tests.reliability.checker import members

        sb = self.sb
        day = FIRST_DAY + timedelta(days=n - 1)
        record: dict = {"night": n, "day": day.isoformat()}
        started = time.monotonic()
        if n == 0:
            self.engagement_before = crm_state(sb)
            from tests.integration.dags.expected_contacts import loyalty_tiers

            self.tiers = loyalty_tiers(sb.loyalty_path("2026-11-19").read_bytes())
            faults, fault_file = draw_faults(self.rng), None
            before = members(sb)
            sb.clear_requests()
            contacts_logical = "2026-11-20T02:00:00Z"
            record["contacts"] = self.run(
                "crm_to_esp_contacts", contacts_logical, faults, full_refresh=True, loyalty_wait_minutes=0
            )
        else:
            record["world"] = self.live_day(n, day)
            fault_file, self.tiers = self.loyalty_drop(day)
            faults = draw_faults(self.rng)
            before = members(sb)
            sb.clear_requests()
            sb.set_clock(f"{day + timedelta(days=1)}T03:00:00Z")  # write-backs land in the next interval
            contacts_logical = f"{day + timedelta(days=1)}T02:00:00Z"
            record["contacts"] = self.run(
                "crm_to_esp_contacts", contacts_logical, faults, loyalty_wait_minutes=0
            )
        record["faults"] = {k: sorted(v) if k != "outage" else v for k, v in faults.items() if v}
        record["loyalty_fault"] = fault_file
        requests = sb.requests()
        rejected = self._rejected_keys(record["contacts"].get("report"))
        record["contacts_check"] = self.check_contacts(before, self.tiers, requests, rejected)
        if n > 0:
            faults = draw_faults(self.rng)
            outage = faults.pop("outage", None)
            if outage and self.rng.random() < 0.5:  # half the outages drawn hit this run too
                faults["outage"] = outage
            elif outage:
                faults[outage["system"]] = {}
            record["engagement_faults"] = {
                k: sorted(v) if k != "outage" else v for k, v in faults.items() if v
            }
            sb.clear_requests()
            record["engagement"] = self.run(
                "esp_to_crm_engagement", f"{day + timedelta(days=1)}T00:00:00Z", faults
            )
            record["engagement_check"] = self.check_engagement(
                n, datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            )
            record["shop"] = self.run("shop_conversions_to_esp", f"{day + timedelta(days=1)}T00:00:00Z", None)
            sb.set_clock(None)
        record["seconds"] = round(time.monotonic() - started, 1)
        self.nights.append(record)
        with (self.out.parent / "soak-nights.jsonl").open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
        return record

    def _rejected_keys(self, report: dict | None) -> set[str]:
        """Members the ESP refused tonight (rejected.csv): excused until the next night resends them."""
        import csv
        import io

        keys = set()
        for path in (report or {}).get("rejected_files", []) or []:
            p = Path(str(path).removeprefix("file://"))
            if p.exists():
                keys.update(
                    r["key"].lstrip("'").strip().lower() for r in csv.DictReader(io.StringIO(p.read_text()))
                )
        return keys


def summary(soak: Soak, args, seconds: float) -> str:
    nights = soak.nights
    runs = [r for n in nights for r in (n.get("contacts"), n.get("engagement"), n.get("shop")) if r]
    failed_first = [r for r in runs if r["state"] != "success"]
    recovered = [r for r in failed_first if r["rerun"] == "success"]
    last = nights[-1]
    lines = [
        f"## Soak (`make soak NIGHTS={args.nights} SEED={args.seed}`, {args.contacts} contacts)",
        "",
        f"{len(nights) - 1} generated nights after a first full sync, {len(runs)} DAG runs in "
        f"{seconds / 60:.1f} min; {len(failed_first)} runs failed under their faults, {len(recovered)} "
        "of them reached success on the rerun (the rest are listed below).",
        "",
        "| night | faults drawn (contacts run) | loyalty file | contacts run | expected | lost | dup | "
        "wrongful | faults (engagement run) | engagement run | CRM rejected | CRM lost | shop run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in nights:
        c, cc = n["contacts"], n["contacts_check"]
        e, ec, s = n.get("engagement"), n.get("engagement_check") or {}, n.get("shop")

        def state(r):
            if not r:
                return "-"
            return r["state"] if r["state"] == "success" else f"{r['state']} → rerun {r['rerun']}"

        def named(drawn):
            return (
                "; ".join(
                    f"{k}: {', '.join(v)}" if isinstance(v, list) else f"{v['system']} down"
                    for k, v in drawn.items()
                )
                or "none"
            )

        faults = named(n["faults"])
        e_faults = named(n.get("engagement_faults") or {}) if e else "-"
        e_rejected = ((e or {}).get("report") or {}).get("rejected", "-") if e else "-"
        lines.append(
            f"| {n['night']} | {faults} | {n.get('loyalty_fault') or 'clean'} | {state(c)} | "
            f"{cc['expected']} | {cc['lost']} | {cc['duplicates']} | {cc['wrongful']} | {e_faults} | "
            f"{state(e)} | {e_rejected} | {ec.get('lost', '-')} | {state(s)} |"
        )
    cc, ec = last["contacts_check"], last.get("engagement_check") or {}
    total_dup = sum(n["contacts_check"]["duplicates"] for n in nights)
    total_wrongful = sum(n["contacts_check"]["wrongful"] for n in nights)
    lines += [
        "",
        f"**Totals after {len(nights) - 1} nights**, the end state compared field by field with "
        "the prescription:",
        "",
        "| destination | records expected | found as prescribed | lost or wrong | fields compared | "
        "fields differing | duplicates (all nights) | resent after timeout | "
        "wrongful subscriptions (all nights) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| ESP members (crm_to_esp_contacts) | {cc['expected']} | {cc['found']} | {cc['lost']} | "
        f"{cc['fields_compared']} | {sum(cc['fields'].values())} | {total_dup} | "
        f"{sum(n['contacts_check']['resent_after_timeout'] for n in nights)} | {total_wrongful} |",
        f"| CRM engagement (esp_to_crm_engagement) | {ec.get('expected', '-')} | {ec.get('found', '-')} | "
        f"{ec.get('lost', '-')} | {ec.get('fields_compared', '-')} | "
        f"{sum((ec.get('fields') or {}).values())} "
        "| n/a (absolute values, a rerun re-sends by design) | - | - |",
        "",
        "Per field, records differing after the last night: ESP "
        + (", ".join(f"`{k}` {v}" for k, v in sorted(cc["fields"].items())) or "none")
        + "; CRM "
        + (", ".join(f"`{k}` {v}" for k, v in sorted((ec.get("fields") or {}).items())) or "none")
        + ".",
        "",
        "Fault hits over the soak (calls answered with the fault): "
        + ", ".join(f"{k} {v}" for k, v in sorted(soak.fault_hits.items()))
        + ".",
        "Loyalty files: "
        + ", ".join(
            f"{k or 'clean'} {v}"
            for k, v in sorted(
                Counter(n.get("loyalty_fault") for n in nights[1:]).items(), key=lambda kv: str(kv[0])
            )
        )
        + ".",
    ]
    if cc.get("examples"):
        lines.append("Examples of ESP differences (masked): " + "; ".join(cc["examples"]) + ".")
    if ec.get("examples"):
        lines.append("Examples of CRM differences (masked): " + "; ".join(ec["examples"]) + ".")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "RELIABILITY.md")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mailsync-soak-"))
    _setup_env(home)
    from sandbox import Sandbox
    from tests.reliability import report

    sb = Sandbox.start(
        home / "sandbox", seed=42 + args.seed, contacts=args.contacts, days=7, parent_pid=os.getpid()
    )
    started = time.monotonic()
    terminal = os.fdopen(os.dup(1), "w")
    dag_log = (home / "dag-runs.log").open("w")
    sys.stdout.flush()
    os.dup2(dag_log.fileno(), 1)  # dag.test() prints every task's log: keep it in a file
    sys.stdout = dag_log
    terminal.write(f"soak in {home}; DAG output in {home / 'dag-runs.log'}\n")
    try:
        _connections(sb, esp_timeout=1.5)
        soak = Soak(sb, random.Random(args.seed), home / "soak.json")
        for n in range(args.nights + 1):
            r = soak.night(n)
            terminal.write(
                f"night {n}: contacts {r['contacts']['state']}/{r['contacts']['rerun']}, "
                f"lost {r['contacts_check']['lost']} dup {r['contacts_check']['duplicates']} "
                f"wrongful {r['contacts_check']['wrongful']}; engagement "
                f"{(r.get('engagement') or {}).get('state', '-')} lost "
                f"{(r.get('engagement_check') or {}).get('lost', '-')} ({r['seconds']} s)\n"
            )
            terminal.flush()
        text = summary(soak, args, time.monotonic() - started)
        report.replace_section(args.out, "soak", text)
        terminal.write(f"{text}\n\nwritten to {args.out}; nights in {home / 'soak-nights.jsonl'}\n")
    finally:
        sb.stop()
    last = soak.nights[-1]
    bad = last["contacts_check"]["lost"] or sum(n["contacts_check"]["wrongful"] for n in soak.nights)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
