"""One process, one asyncio loop: three uvicorn servers (ESP, CRM, SHOP), SFTP and the mail sink.

Sockets are bound here first, so port 0 (any free port) works and ready.json can say which ports
were taken. uvicorn's own signal capture is switched off (three servers would fight over it);
SIGTERM/SIGINT and the death of ``--parent-pid`` all set one stop event instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket

import uvicorn

from sandbox import admin, generator, mail, sftp, store
from sandbox.config import READY_NAME, GenParams, Settings, read_ready, write_ready
from sandbox.crm_api import HubSpot
from sandbox.esp_api import Mailchimp
from sandbox.process import parent_alive
from sandbox.shop_api import Shopify
from sandbox.web import AppState, build_app

log = logging.getLogger("sandbox")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: this module owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    original = os.getppid()
    while not stop.is_set():
        if not parent_alive(pid, original):
            log.warning("parent process %d is gone; stopping", pid)
            stop.set()
            return
        await asyncio.sleep(0.25)


def prepare(settings: Settings, params: GenParams, *, regenerate: bool) -> tuple:
    """Open (and fill, if asked or empty) the DB; returns (connection, params of the data)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fresh = not settings.db_path.exists()
    conn = store.connect(settings.db_path)
    if regenerate or fresh:
        log.warning(
            "generating %d contacts over %d days (seed %d)", params.contacts, params.days, params.seed
        )
        log.warning("generated %s", generator.generate(conn, settings.sftp_root, params))
    else:
        params = GenParams(**store.meta_get(conn, "params"))
    return conn, params


async def serve(
    settings: Settings,
    params: GenParams,
    *,
    regenerate: bool,
    faults: dict | None = None,
    parent_pid: int | None = None,
) -> None:
    (settings.data_dir / READY_NAME).unlink(missing_ok=True)
    conn, params = prepare(settings, params, regenerate=regenerate)
    state = AppState(settings, conn, params)
    for system, switches in (faults or {}).items():
        state.faults.set(system, switches)
    key = sftp.host_key(settings.data_dir)
    state.host_key = sftp.public_line(key)
    admin_routes = admin.routes(state)
    servers, tasks = [], []
    for name, vendor in (("esp", Mailchimp()), ("crm", HubSpot()), ("shop", Shopify())):
        sock = _bind(settings.host, settings.ports[name])
        state.ports[name] = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(vendor, state, admin_routes),
            host=settings.host,
            port=state.ports[name],
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
    acceptor = await sftp.start(state, settings.ports["sftp"], key)
    state.ports["sftp"] = acceptor.get_port()
    smtp_sock = _bind(settings.host, settings.ports["smtp"])
    state.ports["smtp"] = smtp_sock.getsockname()[1]
    mail_server = await mail.start(state, smtp_sock)
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            raise RuntimeError("a vendor server failed to start")
        await asyncio.sleep(0.01)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if parent_pid:
        watcher = asyncio.create_task(_watch_parent(parent_pid, stop))
    write_ready(settings, state.ports, state.host_key, params)
    log.warning("sandbox ready: %s", json.dumps(state.ports))
    await stop.wait()
    for server in servers:
        server.should_exit = True
    acceptor.close()
    mail_server.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    if parent_pid:
        watcher.cancel()
    with contextlib.suppress(FileNotFoundError, ValueError):
        if read_ready(settings.data_dir)["pid"] == os.getpid():
            (settings.data_dir / READY_NAME).unlink()
    conn.close()
