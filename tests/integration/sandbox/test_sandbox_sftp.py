"""The loyalty SFTP drop: host-key verification with paramiko, the file format, the faulty files."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging

import asyncssh
import paramiko
import pytest

logging.getLogger("paramiko").setLevel(logging.WARNING)


@contextlib.contextmanager
def sftp_session(sb, host_key_line: str | None = None, password: str | None = None):
    creds = sb.info["credentials"]
    key_type, key_b64 = (host_key_line or sb.info["sftp_host_key"]).split()[:2]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    host = f"[{sb.info['host']}]:{sb.info['ports']['sftp']}"
    client.get_host_keys().add(
        host, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    )
    client.connect(
        sb.info["host"],
        port=sb.info["ports"]["sftp"],
        username=creds["sftp_user"],
        password=password or creds["sftp_password"],
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
    )
    try:
        yield client.open_sftp()
    finally:
        client.close()


def read_file(sftp, path: str) -> bytes:
    with sftp.open(path, "rb") as handle:
        return handle.read()


def test_login_with_pinned_host_key_and_chroot(sandbox):
    with sftp_session(sandbox) as sftp:
        assert sftp.listdir("/") == ["loyalty"]
        days = sorted(sftp.listdir("/loyalty"))
        assert days == [f"2026-11-{d}" for d in range(13, 20)]
        assert sorted(sftp.listdir(f"/loyalty/{days[0]}")) == ["loyalty_tiers.csv", "loyalty_tiers.csv.done"]
        assert sftp.listdir("/../..") == ["loyalty"]  # cannot leave the root


def test_wrong_host_key_and_wrong_password_are_refused(sandbox):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    with pytest.raises(paramiko.BadHostKeyException), sftp_session(sandbox, host_key_line=other):
        pass
    with pytest.raises(paramiko.AuthenticationException), sftp_session(sandbox, password="wrong"):
        pass


def test_loyalty_file_format_and_marker(fresh_sandbox):
    with sftp_session(fresh_sandbox) as sftp:
        data = read_file(sftp, "/loyalty/2026-11-19/loyalty_tiers.csv")
        marker = read_file(sftp, "/loyalty/2026-11-19/loyalty_tiers.csv.done").decode()
        previous = read_file(sftp, "/loyalty/2026-11-18/loyalty_tiers.csv")
    text = data.decode("cp1252")
    lines = text.split("\r\n")
    assert marker == f"{hashlib.sha256(data).hexdigest()}  loyalty_tiers.csv\n# rows: {len(lines) - 2}\n"
    assert lines[0] == "customer_id;tier_code;points;member_since;name" and lines[-1] == ""
    rows = [line.split(";") for line in lines[1:-1]]
    assert all(len(r) == 5 for r in rows) and {r[1] for r in rows} <= set("BSGP")
    assert all(r[0][0] == "C" and len(r[0]) == 8 and r[3][2] == "." and r[3][5] == "." for r in rows)
    assert any(not r[4].isascii() for r in rows)  # accents survive in cp1252
    customers = {c["properties"]["customer_id"] for c in fresh_sandbox.crm_contacts()} - {None}
    assert 0.3 < len({r[0] for r in rows} & customers) / len(customers) < 0.5  # ~40% of customers
    before = {r[0]: r[1] for r in (line.split(";") for line in previous.decode("cp1252").split("\r\n")[1:-1])}
    changed = sum(before[r[0]] != r[1] for r in rows)
    assert 0 < changed < 0.05 * len(rows)  # ~1% change tier from one day to the next


def test_faulty_files(fresh_sandbox):
    sb = fresh_sandbox
    day = "2026-11-20"
    clean = sb.write_loyalty_file(day)
    full = sb.loyalty_path(day).read_bytes()
    assert hashlib.sha256(full).hexdigest() == clean["sha256"]
    sb.write_loyalty_file(day, fault="half_written")
    half = sb.loyalty_path(day).read_bytes()
    assert full.startswith(half) and len(half) < len(full) and not half.endswith(b"\r\n")
    assert not sb.loyalty_path(day).with_name("loyalty_tiers.csv.done").exists()
    sb.write_loyalty_file(day, fault="half_written_marker")
    marker = sb.loyalty_path(day).with_name("loyalty_tiers.csv.done").read_text()
    assert marker.split()[0] != hashlib.sha256(sb.loyalty_path(day).read_bytes()).hexdigest()
    sb.write_loyalty_file(day, fault="malformed")
    broken = sb.loyalty_path(day).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        broken.decode("cp1252")
    widths = {len(line.split(b";")) for line in broken.split(b"\r\n")[1:-1]}
    assert widths == {4, 5, 6}
    sb.write_loyalty_file(day, fault="schema_drift")
    header = sb.loyalty_path(day).read_bytes().split(b"\r\n")[0]
    assert header == b"customer_id;tier;points;member_since;name;region"
    sb.write_loyalty_file(day, fault="missing")
    assert not sb.loyalty_path(day).parent.exists()
