"""Shared by the benchmarks: a sandbox with connections, a peak-memory watcher, result files.

Every comparison in a benchmark is measured side by side in one run, on the same generated data
and the same sandbox settings: the machines are shared and noisy, so ratios are what count.

The sandbox runs with the vendors' limiters and a per-call latency on (bench/limits.py) unless a
benchmark is given `--no-limits` (the machine-only figures); every result file says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
for path in (str(ROOT), str(ROOT / "plugins")):
    if path not in sys.path:
        sys.path.insert(0, path)


SEED = 42
#: What the sandbox of this process was switched to (stated in every result file).
SETTINGS: dict = {"limits": None, "latency_ms": None, "seed": SEED}


def add_limit_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--no-limits` (vendors' limiters off: machine-only figures) and `--latency-ms`."""
    from bench.limits import LATENCY_MS

    parser.add_argument("--no-limits", action="store_true", help="vendor limiters off (machine-only figures)")
    parser.add_argument("--latency-ms", type=int, default=LATENCY_MS, help="per-call latency of every vendor")
    return parser


@contextmanager
def sandbox(
    tmp: Path,
    *,
    contacts: int,
    days: int = 7,
    seed: int = SEED,
    limits: bool = True,
    latency_ms: int | None = None,
):
    """A sandbox whose vendor connections are exported as AIRFLOW_CONN_* for this process.

    The vendors' limiters are on (`limits`), with `latency_ms` on every call (None: no latency,
    for a benchmark that sets its own). `bench.limits.apply(sb, ...)` switches them on again after
    a reset.
    """
    from bench import limits as vendor
    from sandbox import Sandbox

    sb = Sandbox.start(tmp / "sandbox", seed=seed, contacts=contacts, days=days, parent_pid=os.getpid())
    try:
        for conn_id, definition in sb.airflow_connections().items():
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = definition
        switches = vendor.faults(latency_ms or 0, limits=limits)
        for system, values in switches.items():
            if not latency_ms:
                values.pop("latency_ms")
            if values:
                sb.set_faults(system, **values)
        SETTINGS.update(limits=limits, latency_ms=latency_ms, seed=seed, sandbox_switches=switches)
        yield sb
    finally:
        sb.stop()


def one_percent_night(sb) -> list[str]:
    """Change 1% of the CRM's contacts through the night of 2026-11-20 (10 moments, as people do).

    The same edits (seeded) in every benchmark that measures a 1%-change night, so the contacts
    sync and the SDK baselines see the same data. Returns the changed contacts' ids.
    """
    return [
        c
        for i in range(10)
        for c in sb.mutate_crm(fraction=0.001, seed=11 + i, at=f"2026-11-20T{3 + i:02d}:00:00Z")
    ]


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
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "memory_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_reference_s": f"{reference_seconds():.2f}",
    }
    for package in ("apache-airflow", "pandas", "pyarrow", "great-expectations", "numpy"):
        with suppress(PackageNotFoundError):
            out[package.removeprefix("apache-")] = version(package)
    return out


def reference_seconds() -> float:
    """Seconds of one fixed CPU workload (a 1M-step Python loop and blake2b over 32 MiB), best of
    three, taken when a result is written: this machine is shared, and its speed differs by hours
    and days, so results of different runs compare only next to this figure."""
    import hashlib

    block, best = b"x" * (1 << 20), float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i % 7
        digest = hashlib.blake2b()
        for _ in range(32):
            digest.update(block)
        best = min(best, time.perf_counter() - started)
    return best


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_result(name: str, result: dict) -> Path:
    from bench import limits as vendor

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    head = {"machine": machine(), "sandbox": dict(SETTINGS), "vendor_limits": vendor.describe()}
    path.write_text(json.dumps(head | result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return path
