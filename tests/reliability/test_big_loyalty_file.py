"""A 200 MB loyalty file (soak only: `make soak`, or MAILSYNC_SOAK=1 pytest tests/reliability -m soak).

The file is generated streaming in the test's folder (cp1252, `;`, CRLF, the marker with its
SHA-256 and row count) and dropped on the SFTP server; a whole contacts night runs in a
subprocess (dag.test() runs every task in that one process), so its peak RSS
(resource.getrusage) is the largest of any task's. The same night with a 20 MB file gives the
baseline: memory is bounded when the 200 MB night needs little more than the 20 MB one (a
reader that holds the whole file, its decoded text and its parsed table needs several times the
file's size). The peak after each task (an Airflow listener in the subprocess) says in which
task memory grew. A watchdog kills the run above 3 GiB so it cannot take the shared machine
down. Too slow for `make test`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.dags import dagrun
from tests.reliability.checker import Outcome

pytestmark = [pytest.mark.slow, pytest.mark.soak]
DAY = "2026-11-19"
KILL_AT_KIB = 3 * 1024 * 1024

NIGHT_SCRIPT = """
import json, resource, sys
from airflow.sdk._shared.listeners import hookimpl
from airflow.sdk.listener import get_listener_manager
from tests.integration.dags import dagrun
from pathlib import Path

class PeakAfterEachTask:  # the process's peak RSS when each task ends: where the memory went
    peaks = {}
    def _note(self, task_instance):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        self.peaks[task_instance.task_id] = max(self.peaks.get(task_instance.task_id, 0), peak)
    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance):
        self._note(task_instance)
    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error):
        self._note(task_instance)

get_listener_manager().add_listener(PeakAfterEachTask())
dagrun.isolate(Path(sys.argv[1]))
run = dagrun.run("crm_to_esp_contacts", "2026-11-20T02:00:00Z", full_refresh=True, loyalty_wait_minutes=0)
try:
    report = dagrun.report(run)
except Exception:
    report = {}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"state": str(run.state), "maxrss_kib": peak,
      "loyalty_rows": report.get("loyalty_rows"), "loyalty": str(report.get("loyalty"))[:200],
      "peak_mib_after_task": PeakAfterEachTask.peaks}))
"""


def write_big_file(path: Path, megabytes: int, real_ids: list[str]) -> int:
    """Stream rows until the file has `megabytes` MB; the real customer ids come first."""
    digest, rows, size = hashlib.sha256(), 0, 0
    target = megabytes * 1_000_000
    tiers = "BSGP"
    with path.open("wb") as f:
        head = b"customer_id;tier_code;points;member_since;name\r\n"
        f.write(head)
        digest.update(head)
        size += len(head)
        buf = []
        while size < target:
            cid = real_ids[rows] if rows < len(real_ids) else f"X{rows:09d}"
            line = (
                f"{cid};{tiers[rows % 4]};{rows % 40000};01.0{1 + rows % 9}.2015;Jürgen Mußtermann {rows}\r\n"
            )
            data = line.encode("cp1252")
            buf.append(data)
            size += len(data)
            rows += 1
            if len(buf) >= 50_000:
                chunk = b"".join(buf)
                f.write(chunk)
                digest.update(chunk)
                buf = []
        chunk = b"".join(buf)
        f.write(chunk)
        digest.update(chunk)
    path.with_name(path.name + ".done").write_text(
        f"{digest.hexdigest()}  {path.name}\n# rows: {rows}\n", encoding="ascii"
    )
    return rows


def _night_in_subprocess(folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{dagrun.PROJECT / 'plugins'}:{dagrun.PROJECT}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", NIGHT_SCRIPT, str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    peak, killed = [0], [False]

    def watch() -> None:
        while proc.poll() is None:
            try:
                rss = int(
                    next(
                        line
                        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                        if line.startswith("VmRSS")
                    ).split()[1]
                )
            except (OSError, StopIteration):
                return
            peak[0] = max(peak[0], rss)
            if rss > KILL_AT_KIB:
                killed[0] = True
                proc.kill()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=1800)
    watcher.join()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    result = json.loads(line[7:]) if line else {"state": "killed" if killed[0] else "crashed"}
    result["watched_peak_kib"] = peak[0]
    return result


def test_a_200_mb_loyalty_file_is_read_in_bounded_memory(
    vendors, connections, airflow_db, tmp_path, recorder
):
    started = time.monotonic()
    real = sorted(
        {(c["properties"].get("customer_id") or "").strip().upper() for c in vendors.crm_contacts()} - {""}
    )
    path = vendors.loyalty_path(DAY)
    results = {}
    for mb in (20, 200):
        t = time.monotonic()
        rows = write_big_file(path, mb, real)
        results[mb] = {
            **_night_in_subprocess(tmp_path / f"run{mb}"),
            "rows": rows,
            "seconds": round(time.monotonic() - t),
        }
    small, big = results[20], results[200]
    peak = lambda r: max(r.get("maxrss_kib") or 0, r["watched_peak_kib"]) / 1024  # noqa: E731
    growth = peak(big) - peak(small)
    ok = big["state"] == "success" and big.get("loyalty_rows") == big["rows"] and growth < 180 * 0.5

    def where(r: dict) -> str:
        """The task in which the night reached its peak, and the peak after the file's own task."""
        after = r.get("peak_mib_after_task") or {}
        top = max(after.values(), default=0)
        task = next((t for t, mib in after.items() if mib == top), "?")
        return f"reached in {task}; after extract_loyalty {after.get('extract_loyalty', '?')} MiB"

    recorder.record(
        Outcome(
            case="200 MB loyalty file (soak)",
            group="contacts full night in a subprocess, 20 MB night as baseline",
            inputs=f"{big['rows']:,} rows / 200 MB vs {small['rows']:,} rows / 20 MB",
            runs=2,
            expected=big["rows"],
            found=big.get("loyalty_rows") or 0,
            outcome=f"200 MB night {big['state']} in {big['seconds']} s, peak RSS {peak(big):.0f} MiB, "
            f"{where(big)} (20 MB: {small['state']} in {small['seconds']} s, {peak(small):.0f} MiB, "
            f"{where(small)}): +{growth:.0f} MiB for +180 MB",
            passed=ok,
            details=results,
            seconds=round(time.monotonic() - started, 1),
        )
    )
    assert big["state"] == "success", results
    assert growth < 90, f"memory grows with the file: {results}"
