"""The loyalty partner's SFTP server, on the SFTP provider's hook (paramiko).

Connection `loyalty_sftp` (type sftp): host, port, login, password (or key); extra `host_key`
("ssh-ed25519 AAAA...") so the server is verified — a wrong key is refused, and there is no
auto-accept unless someone sets `no_host_key_check: true` on purpose. `compress: false` makes
large downloads 3-4x faster on a LAN (shared/PITFALLS.md). Optional extra `base_dir`
(default `loyalty`).

A nightly file is complete when its done-marker exists: `<dir>/<name>.done`, containing the
data file's SHA-256 (sha256sum format) and, where the partner's export states it, its number of
data rows as a comment line `# rows: <n>` (which `sha256sum -c` skips). The partner writes the
marker last, so a file without a marker is still being written; a marker whose checksum does
not match the data is a half-written or damaged transfer. Both are reported, never read as
complete. The row count is handed on (`Download.rows`) for the reader to check: a transfer job
that hashes a cut export writes a matching checksum, but not the export's own count.

A file is streamed to where the caller says (a staged file), hashed on the way: a 200 MB file
is never held in memory. A server whose host key is not the connection's is `HostKeyMismatch`
(a VendorError, like a damaged file: the night goes on with the last tiers), saying which
extra to check; nothing is read from it.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO

from airflow.providers.sftp.hooks.sftp import SFTPHook
from paramiko import BadHostKeyException

from mailsync.hooks.base import VendorError


class UnsafePath(VendorError):
    """A remote path would leave the partner's folder (path traversal)."""


class HostKeyMismatch(VendorError):
    """The server's host key is not the one the connection's `host_key` extra names."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    marker: str


@dataclass(frozen=True)
class Download:
    path: str
    size: int  # bytes written
    sha256: str
    rows: int | None = None  # data rows the marker declares (None: an older marker without a count)


class LoyaltySftpHook(SFTPHook):
    """Lists, checks and downloads the nightly loyalty file of a day."""

    default_conn_name = "loyalty_sftp"
    hook_name = "Loyalty SFTP"
    file_name = "loyalty_tiers.csv"

    def __init__(self, ssh_conn_id: str | None = None, **kwargs) -> None:
        super().__init__(ssh_conn_id=ssh_conn_id or self.default_conn_name, **kwargs)

    @property
    def base_dir(self) -> str:
        extra = self.get_connection(self.ssh_conn_id).extra_dejson
        return str(extra.get("base_dir", "loyalty")).rstrip("/")

    def safe_path(self, relative: str) -> str:
        """Join under base_dir; refuse anything that would escape it (../, absolute paths)."""
        base = posixpath.normpath(self.base_dir)
        target = posixpath.normpath(posixpath.join(base, relative))
        if posixpath.isabs(relative) or not (target == base or target.startswith(base + "/")):
            raise UnsafePath(f"refusing path {relative!r}: it leaves the folder {base!r}")
        return target

    def daily_file(self, day: date) -> RemoteFile:
        path = self.safe_path(f"{day:%Y-%m-%d}/{self.file_name}")
        return RemoteFile(path, path + ".done")

    @contextmanager
    def connected(self) -> Iterator:
        """One SFTP session; a host key mismatch named as such (paramiko's message shows only
        base64 keys), with fingerprints to compare with the partner's (public keys, no secret)."""
        try:
            with self.get_managed_conn() as sftp:
                yield sftp
        except BadHostKeyException as exc:
            raise HostKeyMismatch(
                f"host key mismatch: the SFTP server {exc.hostname}:{self.port} presents the "
                f"{exc.key.get_name()} key {exc.key.fingerprint}, but the {self.ssh_conn_id} "
                f"connection's host_key extra is {exc.expected_key.fingerprint}: check that extra "
                "against the key the partner gives for its server; nothing was read"
            ) from None

    def status(self, day: date) -> str:
        """`ready` (marker present), `incomplete` (data without marker) or `missing`."""
        remote = self.daily_file(day)
        with self.connected() as sftp:
            names = set(_listdir(sftp, posixpath.dirname(remote.path)))
        data, marker = posixpath.basename(remote.path), posixpath.basename(remote.marker)
        if marker in names and data in names:
            return "ready"
        return "incomplete" if data in names else "missing"

    def download(self, day: date, into: BinaryIO) -> Download:
        """Stream the day's file into `into`, checking it against the marker's SHA-256."""
        remote = self.daily_file(day)
        digest, size = hashlib.sha256(), 0
        with self.connected() as sftp:
            try:
                with sftp.open(remote.marker, "rb") as f:
                    marker = f.read(1 << 16).decode("ascii", "replace")  # a hash and a count
                with sftp.open(remote.path, "rb") as f:
                    # measured on 200 MB: prefetch 1 s, flat memory (the SSH window holds back
                    # what is not read yet); max_concurrent_requests=64 30 s, +200 MiB
                    f.prefetch()
                    while block := f.read(_BLOCK):
                        digest.update(block)
                        into.write(block)
                        size += len(block)
            except FileNotFoundError as exc:
                raise VendorError(f"SFTP: {remote.path} or its done-marker is not there") from exc
        expected = marker.split()[0].lower() if marker.split() else ""
        actual = digest.hexdigest()
        if expected != actual:
            raise VendorError(
                f"SFTP: {remote.path} does not match its done-marker (sha256 {actual[:12]}... vs "
                f"{expected[:12] or 'empty'}...): half-written or damaged transfer; "
                "the partner must resend it"
            )
        declared = _ROWS.search(marker)
        rows = int(declared.group(1)) if declared else None
        self.log.info("Downloaded %s: %d bytes, sha256 %s, rows declared %s", remote.path, size, actual, rows)
        return Download(remote.path, size, actual, rows)

    def test_connection(self) -> tuple[bool, str]:
        try:
            with self.connected() as sftp:
                _listdir(sftp, self.base_dir)
        except Exception as exc:  # paramiko raises many types; the UI shows the message
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Connected, host key verified, {self.base_dir}/ readable"


_ROWS = re.compile(r"^#\s*rows:\s*(\d+)\s*$", re.MULTILINE)
_BLOCK = 1 << 20


def _listdir(sftp, path: str) -> list[str]:
    try:
        return sftp.listdir(path)
    except FileNotFoundError:
        return []
