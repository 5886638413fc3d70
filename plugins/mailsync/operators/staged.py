"""Steps every integration shares: stage pages of records, run the quality gate over chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from mailsync.mapping.spec import Mapping
from mailsync.quality.gate import QualityGate
from mailsync.settings import CHUNK_ROWS
from mailsync.staging import Area


def stage_pages(pages: Iterable[list[dict]], out: Area, *, columns: list[str]) -> int:
    """Write pages of records as Parquet chunks of CHUNK_ROWS strings; never hold more than a chunk."""
    out.clear()
    buffer: list[dict] = []
    rows = part = 0
    for page in pages:
        buffer.extend(page)
        while len(buffer) >= CHUNK_ROWS:
            out.write_parquet(f"part-{part:05d}.parquet", records_frame(buffer[:CHUNK_ROWS], columns))
            rows, part, buffer = rows + CHUNK_ROWS, part + 1, buffer[CHUNK_ROWS:]
    if buffer or part == 0:
        out.write_parquet(f"part-{part:05d}.parquet", records_frame(buffer, columns))
        rows += len(buffer)
    return rows


def records_frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=columns) if records else pd.DataFrame(columns=columns)
    return frame.astype("string")


def concat(frames: Iterable[pd.DataFrame], columns: list[str] | None = None) -> pd.DataFrame:
    parts = [f if columns is None else f[columns] for f in frames]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns or [])


def validate_chunks(
    mapping: Mapping,
    source: str,
    staged: Area,
    quality: Area,
    *,
    label: str,
    write_good: Callable[[int, pd.DataFrame], None],
    before: Callable[[QualityGate], None] | None = None,
) -> dict[str, Any]:
    """Run the quality gate over every staged chunk of a source; hand each chunk's good rows to
    `write_good`; return the gate summary (raises QualityGateFailed after writing the report)."""
    gate = QualityGate(mapping, source, quality, label=label)
    if before:
        before(gate)
    offset = 0
    for i, raw in enumerate(staged.iter_parquet()):
        write_good(i, gate.validate(raw, row_offset=offset))
        offset += len(raw)
    return gate.finish().to_xcom()
