"""The nightly loyalty file on the SFTP server, and the ways real drops go wrong.

``loyalty/YYYY-MM-DD/loyalty_tiers.csv`` — cp1252 (a legacy Windows export), ``;`` separated,
CRLF line ends, header ``customer_id;tier_code;points;member_since;name`` — followed by the
done-marker ``loyalty_tiers.csv.done`` holding ``<sha256>  loyalty_tiers.csv`` (sha256sum format)
and a comment line ``# rows: <data rows>`` (the export's own count; ``sha256sum -c`` skips it).
Names that cp1252 cannot encode (ł, ś, CJK) arrive as ``?``, as they do from such systems.
A member's tier on a day is the base tier moved up or down by the deterministic daily changes
since the window start, so consecutive files differ for about 1% of members.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sandbox.people import People, customer_id
from sandbox.timefmt import DAY_MS, day_start_ms
from sandbox.vocab import TIERS
from sandbox.world import World

FILE_NAME = "loyalty_tiers.csv"
HEADER = "customer_id;tier_code;points;member_since;name"
FAULTS = (
    "half_written",
    "half_written_marker",
    "truncated",
    "truncated_mid_row",
    "malformed",
    "schema_drift",
    "comma",
    "utf8_bom",
    "upper_header",
    "dialect",
    "missing",
)
_DIALECT = {
    "comma": {"comma"},
    "utf8_bom": {"utf8_bom"},
    "upper_header": {"upper"},
    "dialect": {"comma", "utf8_bom", "upper"},
}
_TIER_EDGES = np.cumsum([0.5, 0.3, 0.15])
_POINT_RANGES = [(0, 1000), (1000, 5000), (5000, 15000), (15000, 40000)]
_SINCE_START = np.datetime64("2012-01-01")
_TIER_BYTES = [t.encode() for t in TIERS]


def member_rows(world: World, chunk: int, people: People) -> list[tuple]:
    """Loyalty members of this chunk: ~40% of the people with a customer id, plus a few unknown ids."""
    r = world.rng(chunk, "loyalty")
    n = len(people)
    pick = [i for i in np.flatnonzero(r.random(n) < world.rates["loyalty"]) if people.cid[i]]
    n_unknown = int(r.binomial(max(1, len(pick)), world.rates["loyalty_unknown_id"]))
    m = len(pick) + n_unknown
    tiers = np.searchsorted(_TIER_EDGES, r.random(m), side="right")
    lows = np.array([_POINT_RANGES[t][0] for t in tiers])
    highs = np.array([_POINT_RANGES[t][1] for t in tiers])
    points = lows + (r.random(m) * (highs - lows)).astype(np.int64)
    since_days = int(
        (np.datetime64(world.start_ms - 30 * DAY_MS, "ms").astype("datetime64[D]") - _SINCE_START).astype(int)
    )
    since = (_SINCE_START + r.integers(0, since_days, size=m).astype("timedelta64[D]")).astype(object)
    salts = r.integers(1, 1 << 62, size=m)
    unknown_ids = customer_id(
        world, np.arange(9_000_000 + people.idx[0], 9_000_000 + people.idx[0] + n_unknown)
    )
    rows = []
    for j in range(m):
        if j < len(pick):
            i = pick[j]
            cid, name = people.cid[i], f"{people.first[i]} {people.last[i]}"
        else:
            cid, name = f"C{unknown_ids[j - len(pick)]:07d}", "Unbekannt"
        rows.append(
            (
                cid,
                int(tiers[j]),
                int(points[j]),
                f"{since[j].day:02d}.{since[j].month:02d}.{since[j].year}",
                name,
                int(salts[j]),
            )
        )
    return rows


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a stable hash of uint64 values."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _step(tiers: np.ndarray, salts: np.ndarray, day: int, rate: float) -> np.ndarray:
    """Apply the deterministic tier changes of one day (counted from the window start)."""
    h = _mix(salts + np.uint64(day * 0x9E3779B97F4A7C15 % 2**64))
    change = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53) < rate
    step = np.where(h & np.uint64(1), 1, -1)
    return np.clip(tiers + change * step, 0, len(TIERS) - 1)


def day_dir(root: Path, day: str) -> Path:
    return root / "loyalty" / day


def _offset(world: World, day: str) -> int:
    return (day_start_ms(day) - world.start_ms) // DAY_MS


def _lines(conn: sqlite3.Connection, world: World, offsets: list[int]) -> Iterator[tuple[int, list[bytes]]]:
    """Per batch of members and per requested day (ascending offsets): (index of the day, encoded rows)."""
    rate = world.rates["tier_change"]
    rows = conn.execute(
        "SELECT customer_id, tier, points, member_since, name, salt FROM loyalty_members ORDER BY rid"
    )
    while batch := rows.fetchmany(100_000):
        cids, base, points, since, names, salts = zip(*batch, strict=True)
        heads = [c.encode("cp1252", errors="replace") for c in cids]
        tails = [f";{s};{n}".encode("cp1252", errors="replace") for s, n in zip(since, names, strict=True)]
        salt = np.array(salts, dtype=np.uint64)
        rate_of_points = (salt % np.uint64(5)).astype(np.int64)
        tiers, day = np.array(base, dtype=np.int64), 0
        for index, target in enumerate(offsets):
            while day <= target:
                tiers = _step(tiers, salt, day, rate)
                day += 1
            earned = (np.array(points, dtype=np.int64) + max(0, target) * rate_of_points).tolist()
            yield (
                index,
                [
                    b"%s;%s;%d%s" % (h, _TIER_BYTES[t], p, tail)
                    for h, t, p, tail in zip(heads, tiers.tolist(), earned, tails, strict=True)
                ],
            )


def _malformed(lines: list[bytes]) -> list[bytes]:
    """Every 40th row broken in one of the ways legacy exports break."""
    out = list(lines)
    for k, i in enumerate(range(7, len(out), 40)):
        cols = out[i].split(b";")
        kind = k % 6
        if kind == 0:
            out[i] = b";".join(cols[:-1])  # a column short
        elif kind == 1:
            out[i] = out[i] + b";EXTRA"  # a column too many
        elif kind == 2:
            out[i] = b";".join([cols[0], cols[1], cols[2] + b"a", *cols[3:]])  # bad number
        elif kind == 3:
            out[i] = out[i] + b"\x81\x8d"  # bytes cp1252 cannot decode
        elif kind == 4:
            out[i] = b";".join([cols[0], b"X", *cols[2:]])  # unknown tier code
        else:
            out[i] = b";".join([*cols[:3], b"31.02.2019", *cols[4:]])  # impossible date
    return out


def write_day(conn: sqlite3.Connection, root: Path, world: World, day: str, fault: str | None = None) -> dict:
    """Write (or rewrite) the file and marker of one day, optionally with a fault."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown loyalty fault {fault!r}; known: {', '.join(FAULTS)}")
    folder = day_dir(root, day)
    if fault == "missing":
        shutil.rmtree(folder, ignore_errors=True)
        return {"day": day, "fault": fault, "path": None, "rows": 0}
    folder.mkdir(parents=True, exist_ok=True)
    header = HEADER.encode()
    lines = [line for _, batch in _lines(conn, world, [_offset(world, day)]) for line in batch]
    if fault == "malformed":
        lines = _malformed(lines)
    elif fault == "schema_drift":
        header = HEADER.replace("tier_code", "tier").encode() + b";region"
        lines = [line + b";EU" for line in lines]
    elif fault in _DIALECT:
        header, lines = _other_dialect(header, lines, _DIALECT[fault])
    data = b"\r\n".join([header, *lines]) + b"\r\n"
    if fault in _DIALECT and "utf8_bom" in _DIALECT[fault]:
        data = b"\xef\xbb\xbf" + data
    rows = len(lines)  # the export's own count, written into the marker
    digest = hashlib.sha256(data).hexdigest()
    marker = folder / (FILE_NAME + ".done")
    marker.unlink(missing_ok=True)
    if fault in ("half_written", "half_written_marker", "truncated_mid_row"):
        cut = len(data) * 11 // 20
        while data[cut - 1 : cut] in (b"\n", b"\r", b";"):
            cut += 3
        data = data[:cut]
    elif fault == "truncated":  # the export stopped after a whole row
        data = data[: data.index(b"\r\n", len(data) * 11 // 20) + 2]
    if fault in ("truncated", "truncated_mid_row"):  # the transfer job hashed what was there
        digest = hashlib.sha256(data).hexdigest()
    (folder / FILE_NAME).write_bytes(data)
    if fault != "half_written":
        count = "" if fault == "truncated_mid_row" else f"# rows: {rows}\n"  # an older marker: no count
        marker.write_text(f"{digest}  {FILE_NAME}\n{count}", encoding="ascii")
    return {"day": day, "fault": fault, "path": str(folder / FILE_NAME), "rows": rows, "sha256": digest}


def _other_dialect(header: bytes, lines: list[bytes], changes: set[str]) -> tuple[bytes, list[bytes]]:
    """The same rows as another export tool writes them: UTF-8, `,` (fields quoted where
    needed), the header in upper case."""
    encoding = "utf-8" if "utf8_bom" in changes else "cp1252"

    def convert(line: bytes) -> bytes:
        fields = line.decode("cp1252").split(";")
        if "comma" in changes:
            return ",".join(f'"{f}"' if "," in f or '"' in f else f for f in fields).encode(encoding)
        return ";".join(fields).encode(encoding)

    if "upper" in changes:
        header = header.upper()
    return convert(header), [convert(line) for line in lines]


def write_window(conn: sqlite3.Connection, root: Path, world: World) -> list[str]:
    """One clean file per day of the window (the day before "now" is the newest), in one pass."""
    shutil.rmtree(root / "loyalty", ignore_errors=True)
    days = [
        np.datetime64(world.start_ms + d * DAY_MS, "ms").astype("datetime64[D]").item().isoformat()
        for d in range(world.days)
    ]
    files, hashes, counts = [], [], dict.fromkeys(days, 0)
    for day in days:
        day_dir(root, day).mkdir(parents=True)
        files.append((day_dir(root, day) / FILE_NAME).open("wb"))
        hashes.append(hashlib.sha256())
    try:
        for handle, digest in zip(files, hashes, strict=True):
            handle.write(HEADER.encode() + b"\r\n")
            digest.update(HEADER.encode() + b"\r\n")
        for index, lines in _lines(conn, world, [_offset(world, day) for day in days]):
            counts[days[index]] += len(lines)
            if lines:
                data = b"\r\n".join(lines) + b"\r\n"
                files[index].write(data)
                hashes[index].update(data)
    finally:
        for handle in files:
            handle.close()
    for day, digest in zip(days, hashes, strict=True):
        (day_dir(root, day) / (FILE_NAME + ".done")).write_text(
            f"{digest.hexdigest()}  {FILE_NAME}\n# rows: {counts[day]}\n", encoding="ascii"
        )
    return days
