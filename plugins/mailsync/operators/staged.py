"""Steps every integration shares: stage pages of records, run the quality gate over chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from mailsync.mapping.spec import Mapping
from mailsync.quality.gate import QualityGate
from mailsync.settings import CHUNK_ROWS
from mailsync.staging import Area


class Stager:
    """Writes records to a folder as Parquet chunks of CHUNK_ROWS strings; never holds more than
    a chunk. Several stagers can be fed from one pass over a vendor's pages."""

    def __init__(self, out: Area, columns: list[str]) -> None:
        self.out, self.columns = out, columns
        self.buffer: list[dict] = []
        self.rows = self.part = 0
        out.clear()

    def add(self, records: list[dict]) -> None:
        self.buffer.extend(records)
        while len(self.buffer) >= CHUNK_ROWS:
            self._flush(self.buffer[:CHUNK_ROWS])
            self.buffer = self.buffer[CHUNK_ROWS:]

    def close(self) -> int:
        if self.buffer or self.part == 0:
            self._flush(self.buffer)
            self.buffer = []
        return self.rows

    def _flush(self, records: list[dict]) -> None:
        self.out.write_parquet(f"part-{self.part:05d}.parquet", records_frame(records, self.columns))
        self.rows += len(records)
        self.part += 1


def stage_pages(pages: Iterable[list[dict]], out: Area, *, columns: list[str]) -> int:
    """Stage pages of records (see Stager); returns the number of rows."""
    stager = Stager(out, columns)
    for page in pages:
        stager.add(page)
    return stager.close()


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
