"""Operators for the steps integrations share, configured by arguments alone: stage a SQL
source, run the quality gate, map, diff against the sync state, load ESP members, report.

An integration built from them needs a mapping in include/mappings/, its SQL (or hook) and a
DAG file that wires the steps; no Python of its own. Each step reads the files of the step
before it in the run's staging folder (`<dag>/runs/<interval>/`) and returns a small summary
(its XCom), so a retried or cleared step redoes only its own work. Connection ids, mapping and
state names are arguments; hooks are built in `execute`, never at parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from mailsync import links

log = logging.getLogger(__name__)
EXTRACT, VALID, MAPPED, DIFF, LOAD = "extract", "valid", "mapped", "diff", "load"


def _run(context: Any):
    from mailsync.operators.run import Run

    return Run.from_context(context)


def _text(value: Any) -> str | None:
    """A database value as the staged text every source uses (the mapping types it again)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class StageSqlOperator(BaseOperator):
    """Stage the rows of a SQL query as Parquet chunks: a source without an API, read straight
    from its database through the connection's own hook (any DB-API provider: postgres, mysql,
    ...). The query is a template (`.sql` files are read from the include folder), so an
    incremental source selects its data interval: `updated_at >= %(since)s AND updated_at <
    %(until)s`, half-open, so a row saved at midnight belongs to exactly one day."""

    template_fields: Sequence[str] = ("sql", "parameters")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "parameters": "json"}
    ui_color = "#e8f0fb"

    def __init__(
        self, *, conn_id: str, sql: str, source: str, parameters: dict | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.sql = sql
        self.source = source
        self.parameters = parameters or {}

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk import BaseHook

        from mailsync.operators.staged import Stager
        from mailsync.settings import CHUNK_ROWS

        run, started = _run(context), datetime.now(UTC).isoformat()
        hook = BaseHook.get_connection(self.conn_id).get_hook()
        with closing(hook.get_conn()) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(self.sql, self.parameters)
            columns = [d[0] for d in cursor.description]
            stager = Stager(run.area / EXTRACT / self.source, columns)
            while rows := cursor.fetchmany(CHUNK_ROWS):
                stager.add([dict(zip(columns, map(_text, row), strict=True)) for row in rows])
        staged = stager.close()
        log.info("Staged %d rows of %s from connection %s", staged, self.source, self.conn_id)
        return {"source": self.source, "rows": staged, "started_at": started}


class QualityGateOperator(BaseOperator):
    """The mapping's Great Expectations checks over staged sources: bad rows go to the
    quarantine file with their reason, the run fails only past the mapping's threshold or on a
    dataset-level failure. Good rows are staged for the next step (`valid/<source>/`).

    `source` is one source (the result is its gate summary) or several checked in turn, like
    orders and their line items (the result is each source's summary by name)."""

    template_fields: Sequence[str] = ("mapping", "source")
    operator_extra_links = links.QUALITY
    ui_color = "#fdf3e1"

    def __init__(self, *, mapping: str, source: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping
        self.source = source

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.mapping.spec import load_mapping

        run, m = _run(context), load_mapping(self.mapping)
        sources = [self.source] if isinstance(self.source, str) else list(self.source)
        gates = {source: _gate(run, m, source) for source in sources}
        return gates[self.source] if isinstance(self.source, str) else gates


def _gate(run: Any, m: Any, source: str) -> dict[str, Any]:
    from mailsync.operators.staged import validate_chunks

    valid = run.area / VALID / source
    valid.clear()
    return validate_chunks(
        m,
        source,
        run.area / EXTRACT / source,
        run.area / "quality" / source,
        label=f"{run.dag_id} {run.label}",
        write_good=lambda i, good: valid.write_parquet(f"part-{i:05d}.parquet", good),
    )


class MapOperator(BaseOperator):
    """The valid rows of a source mapped to destination records (the mapping's fields, lookups
    and duplicate rule), each with its key, fingerprint and key bucket."""

    template_fields: Sequence[str] = ("mapping", "source")
    ui_color = "#eef7ee"

    def __init__(self, *, mapping: str, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping
        self.source = source

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.mapping import engine
        from mailsync.mapping.spec import load_mapping
        from mailsync.operators import sync
        from mailsync.operators.staged import concat
        from mailsync.settings import BUCKETS

        run, m = _run(context), load_mapping(self.mapping)
        valid = concat((run.area / VALID / self.source).iter_parquet())
        kept, dropped = engine.deduplicate(m, self.source, valid) if len(valid) else (valid, valid)
        records = engine.transform(m, kept, {})
        records[sync.BUCKET] = engine.bucket_of(records[engine.KEY], BUCKETS)
        (run.area / MAPPED).write_parquet("records.parquet", records)
        return {"mapped": len(records), "duplicates": len(dropped)}


class DiffOperator(BaseOperator):
    """Mapped records against what the destination acknowledged (the sync state): new, changed,
    unchanged. An incremental source says nothing of records it did not select, so it removes
    nobody (`removals=False`)."""

    template_fields: Sequence[str] = ("state",)
    ui_color = "#eef7ee"

    def __init__(self, *, state: str, removals: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state
        self.removals = removals

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.mapping.engine import KEY
        from mailsync.operators import sync
        from mailsync.state import SyncState

        run = _run(context)
        desired = (run.area / MAPPED).read_parquet("records.parquet")
        buckets = sorted(set(desired[sync.BUCKET])) if len(desired) else []
        state = SyncState(self.state)
        upserts, removals, counts = sync.diff(desired, state.load(buckets), state)
        if not self.removals:
            removals, counts["to_remove"] = removals.iloc[0:0], 0
        out = run.area / DIFF
        out.write_parquet("upserts.parquet", upserts)
        out.write_parquet("removals.parquet", removals)
        log.info("Diff: %s", counts)
        return {**counts, "keys": int(upserts[KEY].nunique()) if len(upserts) else 0}


class LoadEspMembersOperator(BaseOperator):
    """The difference sent to ESP audience members; the state advances per acknowledged batch,
    so a retry resumes. With `members_only` (merge fields from a secondary source) only people
    the contacts sync put in the audience are written: nobody is added or subscribed by it."""

    template_fields: Sequence[str] = ("mapping", "state", "esp_conn_id")
    operator_extra_links = links.REJECTED
    ui_color = "#e3f4f4"

    def __init__(
        self,
        *,
        mapping: str,
        state: str,
        esp_conn_id: str = "esp_default",
        members_only: bool = True,
        audience_state: str = "crm_to_esp_contacts",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping
        self.state = state
        self.esp_conn_id = esp_conn_id
        self.members_only = members_only
        self.audience_state = audience_state

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.hooks.esp import EspHook
        from mailsync.mapping.engine import KEY
        from mailsync.mapping.spec import load_mapping
        from mailsync.operators import sync

        run, m = _run(context), load_mapping(self.mapping)
        diffed = run.area / DIFF
        upserts, removals = diffed.read_parquet("upserts.parquet"), diffed.read_parquet("removals.parquet")
        outside = 0
        if self.members_only:
            members = sync.audience_members(self.audience_state)
            inside = upserts[KEY].isin(members).to_numpy()
            outside, upserts = int((~inside).sum()), upserts[inside]
        if run.params.get("dry_run"):
            return {"dry_run": True, "would_send": len(upserts), "not_audience_members": outside}
        hook = EspHook(self.esp_conn_id)
        counts = sync.load_members(
            hook, m, self.state, [upserts], removals, run_id=run.run_id, out=run.area / LOAD
        )
        log.info("ESP: sent %d, rejected %d, %d not audience members (skipped)", counts["sent"],
                 counts["rejected"], outside)  # fmt: skip
        return {**counts, "not_audience_members": outside}


class ReportOperator(BaseOperator):
    """The run's summary from its steps' results: one XCom, `report.json`, the DAG run's note;
    warnings (records a vendor refused, a refused loyalty file) notify on-call. Links every
    report file of the run.

    `summary` names the integration's summary in mailsync.operators.report (`members_report`,
    `contacts_report`, ...); `results` gives it each step's result by its argument name, as the
    steps' XComArgs (`{"extract": extract.output, ...}`, resolved when the task runs; a mapped
    step's is the list of its results)."""

    template_fields: Sequence[str] = ("results",)
    operator_extra_links = links.ALL
    ui_color = "#f0f0f0"

    def __init__(self, *, summary: str, results: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.summary = summary
        self.results = results

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.operators import report

        build = getattr(report, self.summary)
        results = {
            name: value if isinstance(value, dict) else list(value or [])
            for name, value in self.results.items()
        }
        return build(_run(context), **results)
