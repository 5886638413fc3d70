"""DAG parse cost, with Airflow's own DagBag timing (what the dag-processor pays per file).

    python bench/bench_dag_parse.py [--repeat 5]

Each repeat runs in a fresh process, as the dag-processor does, so module caches do not hide
import costs. Reported per file: the median of DagBag's own `duration` over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from bench.common import ROOT, write_result

PROBE = """
import json, os
from devtools.airflow_env import airflow_env
os.environ.update(airflow_env(__import__("pathlib").Path(__import__("tempfile").mkdtemp())))
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.path.join({root!r}, "dags"))
assert not bag.import_errors, bag.import_errors
print(json.dumps({{s.file.rsplit("/", 1)[-1]: s.duration.total_seconds() for s in bag.dagbag_stats}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(root=str(ROOT))],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        for name, seconds in json.loads(out.stdout.strip().splitlines()[-1]).items():
            samples.setdefault(name, []).append(seconds)
    files = {name: round(statistics.median(values), 4) for name, values in sorted(samples.items())}
    write_result("dag_parse", {"repeat": args.repeat, "median_parse_seconds_per_file": files})


if __name__ == "__main__":
    main()
