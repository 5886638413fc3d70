"""Shared by the benchmarks: a sandbox with connections, a peak-memory watcher, result files.

Every comparison in a benchmark is measured side by side in one run, on the same generated data
and the same sandbox settings: the machines are shared and noisy, so ratios are what count.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
for path in (str(ROOT), str(ROOT / "plugins")):
    if path not in sys.path:
        sys.path.insert(0, path)


@contextmanager
def sandbox(tmp: Path, *, contacts: int, days: int = 7, seed: int = 42):
    """A sandbox whose vendor connections are exported as AIRFLOW_CONN_* for this process."""
    from sandbox import Sandbox

    sb = Sandbox.start(tmp / "sandbox", seed=seed, contacts=contacts, days=days, parent_pid=os.getpid())
    try:
        for conn_id, definition in sb.airflow_connections().items():
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = definition
        yield sb
    finally:
        sb.stop()


class PeakMemory:
    """Highest RSS of a process and its descendants, per process, sampled every 0.2 s."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self.root = psutil.Process(pid or os.getpid())
        self.peaks: dict[int, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                    name = " ".join(p.cmdline()[:6])[-120:]
                except psutil.Error:
                    continue
                if rss > self.peaks.get(p.pid, (0, ""))[0]:
                    self.peaks[p.pid] = (rss, name)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def max_mib(self, contains: str = "") -> float:
        values = [rss for rss, name in self.peaks.values() if contains in name]
        return round(max(values), 1) if values else 0.0


def machine() -> dict[str, str]:
    import airflow
    import pandas

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "airflow": airflow.__version__,
        "pandas": pandas.__version__,
        "machine": platform.machine(),
    }


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return path
