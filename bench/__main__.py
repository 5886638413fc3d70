"""`make bench`: every benchmark at its default size, then bench/results/RESULTS.md.

Not part of `make test` (minutes, and figures, not pass/fail). Sizes are the scripts' defaults;
run a script directly for another size, e.g. `python -m bench.bench_contacts_sync --contacts 1000000`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import RESULTS, ROOT

BENCHES = [
    ["bench.bench_dag_parse"],
    ["bench.bench_esp_load"],
    ["bench.bench_mapping"],
    ["bench.bench_hashing"],
    ["bench.bench_contacts_sync"],
    ["bench.bench_daily_dags"],
]


def main() -> int:
    if "--summary" not in sys.argv:  # --summary: only rewrite RESULTS.md from the JSON files
        for bench in BENCHES:
            print(f"== {' '.join(bench)}", flush=True)
            subprocess.run([sys.executable, "-m", *bench], check=True, cwd=ROOT)
    lines = ["# Benchmark results", "", "Written by `make bench` from the JSON files beside this one.", ""]
    for path in sorted(RESULTS.glob("*.json")):
        lines += [
            f"## {path.stem}",
            "",
            "```json",
            json.dumps(json.loads(path.read_text()), indent=2),
            "```",
            "",
        ]
    (RESULTS / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
