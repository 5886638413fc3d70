"""Transform + validate throughput and peak memory on generated CRM contacts.

    python bench/bench_mapping.py [--sizes 250000 1000000] [--loop-rows 100000]

The contacts come from the sandbox generator (its dirt included), read from its SQLite store in
chunks, shaped as the CRM extract is. Each size runs in a fresh subprocess so its peak RSS is its
own; the pipeline is the DAG's: quality gate (Great Expectations, row and dataset checks,
quarantine) then the mapping transform, chunk by chunk. Next to it, in the same run, a plain
row-by-row Python loop doing the same parsing, checks and field building.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, write_result
from devtools.airflow_env import TASK_ENV
from mailsync.settings import CHUNK_ROWS

COLUMNS = (
    "email, firstname, lastname, date_of_birth, city, country, hs_language, customer_id, marketing_consent, "
    "lifetime_value, last_order_date"
)


def generate(data_dir: Path, contacts: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox",
            "generate",
            "--data-dir",
            str(data_dir),
            "--contacts",
            str(contacts),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return time.perf_counter() - started


def chunks(db: Path, size: int, limit: int | None = None):
    """The CRM extract's shape: strings, lastmodifieddate as HubSpot writes it."""
    import pandas as pd

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sql = (
        f"SELECT id AS hs_object_id, {COLUMNS}, modified_ms FROM crm_contacts WHERE archived = 0 ORDER BY id"
    )
    if limit:
        sql += f" LIMIT {limit}"
    for frame in pd.read_sql(sql, conn, chunksize=size):
        stamp = pd.to_datetime(frame.pop("modified_ms"), unit="ms", utc=True)
        frame["lastmodifieddate"] = stamp.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
        yield frame.astype("string")
    conn.close()


def pipeline(db: Path, rows: int, chunk: int) -> dict:
    """Quality gate + transform over the whole store, chunk by chunk (runs in a subprocess)."""
    os.environ.setdefault("MAILSYNC_STAGING_URL", Path(tempfile.mkdtemp()).as_uri())
    from airflow.sdk import ObjectStoragePath

    from mailsync.mapping import engine
    from mailsync.mapping.spec import load_mapping
    from mailsync.quality.gate import QualityGate
    from mailsync.staging import Area

    mapping = load_mapping("crm_to_esp_contacts")
    area = Area(ObjectStoragePath(os.environ["MAILSYNC_STAGING_URL"])) / "bench"
    gate = QualityGate(mapping, "contacts", area)
    gate.check_schema(list(next(chunks(db, 10, 10)).columns))  # GX import and set-up, outside the clock
    gate = QualityGate(mapping, "contacts", area)
    elapsed, done, members, rss = 0.0, 0, 0, []
    for raw in chunks(db, chunk, rows):  # reading the store is the bench's own cost: off the clock
        started = time.perf_counter()
        good = gate.validate(raw, row_offset=done)
        members += len(engine.transform(mapping, engine.deduplicate(mapping, "contacts", good)[0]))
        elapsed += time.perf_counter() - started
        done += len(raw)
        rss.append(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    started = time.perf_counter()
    summary = gate.finish()
    elapsed += time.perf_counter() - started
    return {
        "rows": done,
        "members": members,
        "quarantined": summary.rows_quarantined,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(done / elapsed),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mib_after_each_chunk": rss,
    }


EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}$")


def _date(value, formats):
    if not value or not value.strip():
        return None, True
    for fmt in formats:
        try:
            return datetime.strptime(value.strip(), fmt).date(), True
        except ValueError:
            pass
    return None, False


def row_loop(db: Path, rows: int) -> dict:
    """What a hand-written script does: one dict per contact, parsed and checked field by field."""
    started, out, bad = time.perf_counter(), [], 0
    for frame in chunks(db, 50_000, rows):
        for r in frame.to_dict("records"):
            email = (r["email"] or "").strip().lower()
            dob, ok_dob = _date(r["date_of_birth"], ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y"))
            try:
                ltv = float(r["lifetime_value"]) if r["lifetime_value"] else None
                ok_ltv = ltv is None or ltv >= 0
            except ValueError:
                ok_ltv = False
            if not EMAIL.match(email) or not ok_dob or not ok_ltv:
                bad += 1
                continue
            first = unicodedata.normalize("NFC", re.sub(r"\s+", " ", (r["firstname"] or "").strip()))
            out.append(
                {
                    "email_address": email,
                    "status_if_new": "subscribed"
                    if (r["marketing_consent"] or "").lower() == "true"
                    else "unsubscribed",
                    "merge_fields": {
                        "FNAME": first[:100],
                        "BIRTHDAY": dob.strftime("%m/%d") if dob else "",
                        "CLIENTID": f"CL-{(r['customer_id'] or '').upper()}",
                        "LTV": ltv,
                    },
                    "modified": datetime.fromisoformat(
                        r["lastmodifieddate"].replace("Z", "+00:00")
                    ).astimezone(UTC),
                }
            )
    elapsed = time.perf_counter() - started
    return {
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "quarantined": bad,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--chunk", type=int, default=CHUNK_ROWS)  # the DAGs' chunk size
    parser.add_argument("--loop-rows", type=int, default=100_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measured size, in its own process
        print(json.dumps(pipeline(Path(args.child[0]), int(args.child[1]), args.chunk)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "world"
        generated_s = generate(data, max(args.sizes))
        db = data / "sandbox.db"
        runs = []
        for size in args.sizes:
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_mapping",
                    "--chunk",
                    str(args.chunk),
                    "--child",
                    str(db),
                    str(size),
                ],
                check=True,
                cwd=ROOT,
                env={**os.environ, **TASK_ENV},  # as the tasks run
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        loop = row_loop(db, args.loop_rows)
    best = max(r["rows_per_s"] for r in runs)
    write_result(
        "mapping",
        {
            "generated_contacts": max(args.sizes),
            "generate_seconds": round(generated_s, 1),
            "chunk_rows": args.chunk,
            "vectorised": runs,
            "row_loop": loop,
            "speedup_vs_row_loop": round(best / loop["rows_per_s"], 1),
            "rows_per_s_per_core": best,  # one process, one core busy
            "goal_rows_per_s_per_core": 250_000,
        },
    )


if __name__ == "__main__":
    main()
