"""Process plumbing shared by the server, the CLI and the client (no heavy imports)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from sandbox.config import READY_NAME, read_ready


def parent_alive(pid: int, original_ppid: int) -> bool:
    """False once ``pid`` is gone; a dead parent may linger as a zombie, or we were re-parented."""
    if pid == original_ppid and os.getppid() != original_ppid:
        return False
    return running(pid)


def stop_running(data_dir: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the sandbox whose pid is in ready.json; SIGKILL after ``timeout``. False if none ran."""
    try:
        pid = read_ready(data_dir)["pid"]
    except FileNotFoundError:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (data_dir / READY_NAME).unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (exited, but not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: trust kill(0)
    return state != "Z"
