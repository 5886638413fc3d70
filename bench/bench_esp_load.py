"""ESP load throughput: the hook's batched, concurrent upsert vs one request per member.

    python -m bench.bench_esp_load [--members 20000] [--latency-ms 100 500] [--naive-sample 200] [--no-limits]

Both run in this process against the same sandbox ESP with a fixed per-call latency switched on
(emulating a real network) and Mailchimp's limiter of 10 simultaneous connections per key (off
with `--no-limits`); each run is reported beside its floor (bench/limits.py). The naive loop is
what a hand-written script does: one PUT per member, one after the other; it is timed on a sample
(at 100 ms a call, 100k members would take almost 3 hours) and its rate is what is compared.

Two ceilings are reported. The nominal one is batch size x concurrency / latency: what an
infinitely fast server would allow. But the sandbox serves from one process, so each round of
concurrent batches also waits for its processing; measured in the same run with no latency, the
server+client capacity gives the effective ceiling 1 / (latency / (batch x concurrency) + 1 /
capacity) members/s: the share of it tells how much the hook itself loses.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import requests

from bench import limits
from bench.common import SETTINGS, sandbox, write_result


def members(n: int, prefix: str) -> list[dict]:
    return [
        {
            "email_address": f"{prefix}{i}@bench.example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"FNAME": "Bench", "LNAME": f"N{i}", "CITY": "Berlin", "LTV": i % 500},
        }
        for i in range(n)
    ]


def run(members_n: int, latency_ms: int, naive_sample: int, *, with_limits: bool = True) -> dict:
    from mailsync.hooks.esp import EspHook, subscriber_hash

    with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp), contacts=1000, limits=with_limits) as sb:
        capacity_members = members(members_n // 2, "capacity")
        started = time.perf_counter()
        assert sum(len(r.accepted) for r in EspHook().upsert_members(capacity_members)) == len(
            capacity_members
        )
        capacity = len(capacity_members) / (time.perf_counter() - started)

        sb.set_faults("esp", latency_ms=latency_ms)
        hook = EspHook()
        batch, concurrency = hook.batch_size, hook.max_connections
        payload = members(members_n, "hook")
        started = time.perf_counter()
        accepted = sum(len(r.accepted) for r in hook.upsert_members(payload))
        hook_s = time.perf_counter() - started
        assert accepted == members_n, f"{accepted} of {members_n} accepted"

        session = requests.Session()
        session.auth = ("bench", sb.info["credentials"]["esp_api_key"])
        base = f"{sb.url('esp')}/lists/{sb.info['list_id']}/members"
        sample = members(naive_sample, "naive")
        started = time.perf_counter()
        for m in sample:
            session.put(
                f"{base}/{subscriber_hash(m['email_address'])}", json=m, timeout=30
            ).raise_for_status()
        naive_s = time.perf_counter() - started

    hook_rate, naive_rate = members_n / hook_s, naive_sample / naive_s
    ceiling = batch * concurrency / (latency_ms / 1000)
    effective = 1 / (latency_ms / 1000 / (batch * concurrency) + 1 / capacity)
    floor = limits.floor_member_load(members_n, latency_ms)
    return {
        "floor": floor,
        "ratio_to_floor": limits.ratio(hook_s, floor["seconds"]),
        "calls_ratio_to_floor": limits.ratio(hook.stats.writes, floor["total_calls"]),
        "members": members_n,
        "latency_ms": latency_ms,
        "batch_size": batch,
        "concurrency": concurrency,
        "hook_seconds": round(hook_s, 2),
        "hook_members_per_s": round(hook_rate),
        "hook_calls": hook.stats.writes,
        "naive_sample": naive_sample,
        "naive_members_per_s": round(naive_rate, 1),
        "speedup": round(hook_rate / naive_rate, 1),
        "ceiling_members_per_s": round(ceiling),
        "share_of_ceiling": round(hook_rate / ceiling, 3),
        "capacity_no_latency_members_per_s": round(capacity),
        "effective_ceiling_members_per_s": round(effective),
        "share_of_effective_ceiling": round(hook_rate / effective, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, nargs="+", default=[limits.LATENCY_MS, 500])
    parser.add_argument("--naive-sample", type=int, default=200)
    parser.add_argument("--no-limits", action="store_true", help="vendor limiters off (machine-only figures)")
    args = parser.parse_args()
    with_limits = not args.no_limits
    results = [
        run(args.members, latency, args.naive_sample, with_limits=with_limits) for latency in args.latency_ms
    ]
    SETTINGS["latency_ms"] = args.latency_ms  # per run, switched on after the capacity measurement
    write_result(f"esp_load_{args.members}", {"members": args.members, "runs": results})


if __name__ == "__main__":
    main()
