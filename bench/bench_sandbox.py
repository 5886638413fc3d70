"""Sandbox benchmarks: ESP batch throughput, and generating a large world.

    python bench/bench_sandbox.py esp [--clients 10 --batches 20]     # members/s, 500-member batches
    python bench/bench_sandbox.py generate [--contacts 1000000]        # wall time and peak RSS
    python bench/bench_sandbox.py all --out bench/results/sandbox.json

The ESP figure is end to end: 10 client threads in this process (requests, JSON both ways) against
one sandbox process on free ports, no faults. Each client first creates its members (status_if_new)
and then sends the same batches again with new merge fields (updates). The brief asks for
>= 20,000 members/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import Sandbox  # noqa: E402 - needs the project root on sys.path

BATCH = 500


def _client(sb: Sandbox, client: int, batches: int, phase: str) -> int:
    session = requests.Session()
    session.auth = ("bench", sb.info["credentials"]["esp_api_key"])
    url = f"{sb.url('esp')}/lists/{sb.info['list_id']}"
    done = 0
    for b in range(batches):
        members = [
            {
                "email_address": f"bench.c{client}.b{b}.m{m}@example.com",
                "status_if_new": "subscribed",
                "merge_fields": {"FNAME": "Bench", "LTV": m, "CITY": phase},
            }
            for m in range(BATCH)
        ]
        response = session.post(url, json={"members": members, "update_existing": True}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body["error_count"]:
            raise RuntimeError(body["errors"][:3])
        done += body["total_created"] + body["total_updated"]
    return done


def bench_esp(clients: int, batches: int, contacts: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox.start(Path(tmp) / "sb", contacts=contacts, days=7)
        try:
            results = {}
            for phase in ("create", "update"):
                start = threading.Event()
                with ThreadPoolExecutor(clients) as pool:
                    started = time.perf_counter()
                    start.set()
                    futures = [pool.submit(_client, sb, c, batches, phase) for c in range(clients)]
                    members = sum(f.result() for f in futures)
                    seconds = time.perf_counter() - started
                results[phase] = {
                    "members": members,
                    "seconds": round(seconds, 2),
                    "members_per_s": round(members / seconds),
                }
            total = sum(r["members"] for r in results.values())
            seconds = sum(r["seconds"] for r in results.values())
            return {
                "clients": clients,
                "batch_size": BATCH,
                "batches_per_client": batches,
                **results,
                "members_per_s": round(total / seconds),
            }
        finally:
            sb.stop()


def _tree_rss_kib(pid: int) -> tuple[int, int]:
    """(RSS of pid, RSS of pid and all its descendants) in KiB, from /proc."""

    def rss(p: int) -> int:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def children(p: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
        return out

    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss(p)
        todo += children(p)
    return rss(pid), total


def bench_generate(contacts: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sandbox", "generate", "--data-dir", tmp, "--contacts", str(contacts)]
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak_main = peak_total = 0
        while process.poll() is None:
            main, total = _tree_rss_kib(process.pid)
            peak_main, peak_total = max(peak_main, main), max(peak_total, total)
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        out, err = process.communicate()
        if process.returncode:
            raise RuntimeError(err)
        db_mib = (Path(tmp) / "sandbox.db").stat().st_size / 2**20
        return {
            "contacts": contacts,
            "seconds": round(seconds, 1),
            "peak_rss_main_mib": round(peak_main / 1024),
            "peak_rss_all_processes_mib": round(peak_total / 1024),
            "db_mib": round(db_mib),
            "counts": json.loads(out),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["esp", "generate", "all"])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20, help="batches per client and phase")
    parser.add_argument("--contacts", type=int, default=1_000_000, help="size of the generated world")
    parser.add_argument("--out", type=Path, help="also write the results (JSON) here")
    args = parser.parse_args()
    results = {}
    if args.what in ("esp", "all"):
        results["esp_batch"] = bench_esp(args.clients, args.batches, contacts=1000)
    if args.what in ("generate", "all"):
        results["generate"] = bench_generate(args.contacts)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
