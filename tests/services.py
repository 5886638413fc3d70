"""What a test needs of the machine: the local PostgreSQL, Debian's Chromium. Missing on a
workstation, the test skips and says what to start or install; under CI (CI=true) it fails,
since CI must have them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]  # fmt: skip


def _missing(what: str, hint: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: CI must provide it")
    pytest.skip(f"{what} ({hint})")


def require_postgres() -> None:
    """PostgreSQL on 127.0.0.1:5432 with trust auth, as this machine kind runs it."""
    import psycopg2

    try:
        psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=3).close()
    except psycopg2.OperationalError:
        _missing("no PostgreSQL on 127.0.0.1:5432", "see shared/PITFALLS.md: Services on this machine kind")


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        _missing("Debian's chromium is missing", "`make browser` installs it as root")
    return CHROMIUM


def launch_chromium(playwright):
    """Debian's Chromium through Playwright (no browser download)."""
    return playwright.chromium.launch(executable_path=str(require_chromium()), args=CHROMIUM_ARGS)
