"""The loyalty partner's SFTP server: asyncssh, password auth, chrooted to ``<data_dir>/sftp``.

The ed25519 host key is generated once into the data dir and reused, so a client can pin it
(``host_key`` in the Airflow connection) across restarts. Only the SFTP subsystem is offered (no
shell, no exec). File opens are written to the request log (system ``sftp``).
"""

from __future__ import annotations

import hmac
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

from sandbox import store
from sandbox.config import HOST_KEY_NAME
from sandbox.web import AppState

logging.getLogger("asyncssh").setLevel(logging.WARNING)


def host_key(data_dir: Path) -> asyncssh.SSHKey:
    path = data_dir / HOST_KEY_NAME
    if not path.exists():
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
        path.chmod(0o600)
    return asyncssh.read_private_key(str(path))


def public_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA...`` (no comment), the form Airflow's ``host_key`` extra takes."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class _PasswordAuth(asyncssh.SSHServer):
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return hmac.compare_digest(username, self.user) and hmac.compare_digest(password, self.password)


class _LoggedSFTP(asyncssh.SFTPServer):
    def __init__(self, chan, state: AppState) -> None:
        super().__init__(chan, chroot=os.fsencode(state.sftp_root))
        self.state = state

    def open(self, path: bytes, pflags: int, attrs):
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT))
        inside = "/" + os.path.relpath(os.fsdecode(path), self.state.sftp_root)
        store.log_request(
            self.state.db,
            (
                "sftp",
                "WRITE" if writing else "READ",
                inside,
                "",
                0,
                datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                0,
                0,
                None,
                None,
                None,  # served_ms: file opens are not timed
            ),
        )
        return super().open(path, pflags, attrs)


async def start(state: AppState, port: int, key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
    settings = state.settings
    state.sftp_root.mkdir(parents=True, exist_ok=True)
    return await asyncssh.listen(
        settings.host,
        port,
        server_host_keys=[key],
        server_factory=lambda: _PasswordAuth(settings.sftp_user, settings.sftp_password),
        sftp_factory=lambda chan: _LoggedSFTP(chan, state),
        allow_scp=False,
    )
