"""`make bench`: every benchmark at one size in one run, then bench/results/RESULTS.md with plots.

    python -m bench [--size 20000] [--no-limits] [--only contacts_sync baseline_sdk] [--summary]

Not part of `make test` (minutes, and figures, not pass/fail). Every benchmark runs against a
sandbox with the vendors' limiters and a per-call latency on (bench/limits.py; `--no-limits`
for machine-only figures), on data generated from the same seed at `--size` contacts, one after
the other so they do not share the machine. The default size finishes in under 15 minutes on a
2-core machine; `--size 1000000` (`make bench BENCH_SIZE=1000000`) is the full run of the issue.
A benchmark that fails is reported as failed in RESULTS.md and the others still run.
`--summary` only rewrites RESULTS.md and the plots from the JSON files already there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import ROOT

DEFAULT_SIZE = 20_000


def _mapping_sizes(size: int) -> list[str]:
    """Transform + validate at every size of the memory plot, 1M included at any --size (a minute
    here): its rows per second are judged where fixed costs (GX set-up, report) are spread thin."""
    return [str(s) for s in sorted({10_000, 100_000, 1_000_000, size})]


#: (module, its arguments at a size, whether it takes --no-limits)
BENCHES: list[tuple[str, object, bool]] = [
    ("bench.bench_dag_parse", lambda size: ["--repeat", "3"], False),
    ("bench.bench_esp_load", lambda size: ["--members", str(size)], True),
    (
        "bench.bench_mapping",
        lambda size: ["--sizes", *_mapping_sizes(size), "--loop-rows", str(min(size, 100_000))],
        False,
    ),
    ("bench.bench_hashing", lambda size: [], False),
    ("bench.bench_contacts_sync", lambda size: ["--contacts", str(size)], True),
    ("bench.baseline_sdk", lambda size: ["--contacts", str(size)], True),
    ("bench.bench_daily_dags", lambda size: ["--contacts", str(size)], True),
    ("bench.bench_crm_extract", lambda size: ["--contacts", str(size)], True),
    ("bench.bench_shop_load", lambda size: ["--contacts", str(size)], True),
    ("bench.bench_engagement_writeback", lambda size: ["--contacts", str(size)], True),
]



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help="contacts (rows, members) of every benchmark"
    )
    parser.add_argument("--no-limits", action="store_true", help="vendor limiters off (machine-only figures)")
    parser.add_argument("--only", nargs="+", help="run only these benchmarks (names without bench.bench_)")
    parser.add_argument("--summary", action="store_true", help="only rewrite RESULTS.md from the JSON files")
    args = parser.parse_args()
    from bench import report

    if args.summary:
        print(f"wrote {report.build()}")
        return 0
    since, failed, durations = time.time(), [], {}
    for module, arguments, takes_no_limits in BENCHES:
        name = module.removeprefix("bench.").removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        command = arguments(args.size)
        if args.no_limits and takes_no_limits:
            command.append("--no-limits")
        print(f"== {module} {' '.join(command)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", module, *command], cwd=ROOT)
        durations[name] = round(time.perf_counter() - started, 1)
        if done.returncode:
            failed.append(f"{module} (exit {done.returncode})")
        print(f"== {module}: {durations[name]} s{' FAILED' if done.returncode else ''}", flush=True)
    out = report.build(since=since, size=args.size, failed=failed, durations=durations)
    print(f"wrote {out} ({sum(durations.values()):.0f} s of benchmarks)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
