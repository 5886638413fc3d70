"""Where a run's data lives: Parquet files under one folder per DAG and data interval.

The root is `MAILSYNC_STAGING_URL` (file:// for the embedded default, a shared volume or s3://
when tasks run on several Celery workers), so every task of a run, on any worker, finds what the
previous task wrote. Writes go to a temporary name and are renamed into place, so a killed task
never leaves a half-written file that a retry or the next task would read as complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mailsync.settings import staging_url

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import ObjectStoragePath


def root() -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(staging_url())


def interval_label(start: datetime, end: datetime) -> str:
    """A folder name for a data interval that sorts by time, e.g. 20261119T020000__20261120T020000."""
    return f"{start:%Y%m%dT%H%M%S}__{end:%Y%m%dT%H%M%S}"


class Area:
    """A folder of the staging area with atomic Parquet and text I/O."""

    def __init__(self, path: ObjectStoragePath) -> None:
        self.path = path

    def __truediv__(self, part: str) -> Area:
        return Area(self.path / part)

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> ObjectStoragePath:
        return self.path / name

    def write_parquet(self, name: str, frame: pd.DataFrame) -> ObjectStoragePath:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        return self._atomic(name, lambda fs, p: pq.write_table(table, p, filesystem=fs, compression="zstd"))

    def read_parquet(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pyarrow.parquet as pq

        target = self.path / name
        return pq.read_table(target.path, filesystem=target.fs, columns=columns).to_pandas()

    def write_bytes(self, name: str, data: bytes) -> ObjectStoragePath:
        return self.write_stream(name, lambda f: f.write(data))

    def write_stream(self, name: str, write: Callable[[BinaryIO], object]) -> ObjectStoragePath:
        """A file written by `write(f)` a block at a time (a large download never in memory)."""

        def write_to(fs, p):
            with fs.open(p, "wb") as f:
                write(f)

        return self._atomic(name, write_to)

    def write_text(self, name: str, text: str) -> ObjectStoragePath:
        return self.write_bytes(name, text.encode("utf-8"))

    def read_text(self, name: str) -> str:
        target = self.path / name
        with target.fs.open(target.path, "rb") as f:
            return f.read().decode("utf-8")

    def exists(self, name: str = "") -> bool:
        target = self.path / name if name else self.path
        return target.fs.exists(target.path)

    def names(self, suffix: str = "") -> list[str]:
        """File names in this folder, sorted (chunk files are numbered so this is their order)."""
        if not self.exists():
            return []
        found = self.path.fs.ls(self.path.path, detail=False)
        names = sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)
        return [n for n in names if n.endswith(suffix) and ".tmp-" not in n]

    def iter_parquet(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Every Parquet file of the folder, in name order, one frame per file."""
        for name in self.names(".parquet"):
            yield self.read_parquet(name, columns)

    def clear(self) -> None:
        """Remove the folder (what an earlier try of the task wrote), so a retry starts clean."""
        if self.exists():
            self.path.fs.rm(self.path.path, recursive=True)

    def _atomic(self, name: str, write) -> ObjectStoragePath:
        target = self.path / name
        fs = target.fs
        fs.makedirs(self.path.path, exist_ok=True)
        tmp = f"{target.path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write(fs, tmp)
            private(fs, tmp)
            fs.mv(tmp, target.path)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
        return target


def private(fs, path: str) -> None:
    """Every staged file holds personal data (extracts, snapshots, quarantine and rejected
    rows): readable by the owner only, the user Airflow's components run as; set before the
    file takes its name, so it is never readable by others."""
    if "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol):
        Path(path).chmod(0o600)


def run_area(dag_id: str, start: datetime, end: datetime) -> Area:
    """The folder of one DAG run, keyed by its data interval (reruns of a day reuse it)."""
    return Area(root() / dag_id / "runs" / interval_label(start, end))


def state_area(dag_id: str) -> Area:
    """Long-lived data of a DAG that outlives runs (source snapshots, daily aggregates)."""
    return Area(root() / dag_id / "current")
