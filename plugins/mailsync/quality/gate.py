"""The quality gate: Great Expectations on a source's staged rows, bad rows to quarantine.

Per chunk, the mapping's row rules are decided vectorised (`quality.rules`: the pandas
operations GX's expectations run, in one pass): every failing row goes to the quarantine file
with its reasons and the good rows go on. GX validates the rules' outcomes, one boolean column
per rule, as one suite, over up to `GX_BATCH_ROWS` rows in one call (its cost is per call, not
per row): a rule whose unexpected rows by GX are not the rows quarantined for it, or whose
expectation raised, is a failed check, and the run fails. At the end, dataset-level checks
(columns present, row count, duplicate keys, share of nulls) run on what each chunk left
behind: counts, and a 64-bit hash per good row's key (8 bytes a row, never a frame of the
whole extract). The run fails when a dataset-level check fails or when the share of
quarantined rows passes the mapping's threshold — in both cases only after the HTML report and
the quarantine file are written, so an analyst can see why.

GX is imported only inside this module's functions (3-5 s, never at DAG parse time). One GX
context per thread, made once: GX is not thread-safe (shared/PITFALLS.md).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mailsync.mapping import engine
from mailsync.mapping.spec import Mapping
from mailsync.quality import rules as row_rules
from mailsync.quality.report import render_report
from mailsync.reporting import csv_for_people
from mailsync.staging import Area

log = logging.getLogger(__name__)

# A GX validate costs ~0.2 s for a dozen expectations (building the metric graph and result
# objects) at 100k rows and ~0.5 s at 1M: the outcomes of up to this many rows go to GX in one
# call (held until then: a byte per rule and 8 for the row number, ~10 MB for 500k rows). GX's
# own frames add to the task's peak what they hold: over 1M rows ~45 MiB, over 500k ~10 MiB
# (issue 22), so a 1M extract takes two calls. A call runs before the next chunk is prepared,
# never on top of a chunk's frames.
GX_BATCH_ROWS = 500_000


class QualityGateFailed(Exception):
    """The data of a run is not fit to load; the message says which checks failed and where the report is."""


@dataclass
class Check:
    """Outcome of one expectation, as shown in the report and returned in the summary."""

    name: str  # the reason / rule name an analyst reads
    expectation: str
    column: str | None
    level: str  # "row" or "dataset"
    success: bool
    unexpected: int = 0
    detail: str = ""
    examples: list[Any] = field(default_factory=list)


@dataclass
class GateSummary:
    mapping: str
    source: str
    label: str
    rows_in: int = 0
    rows_good: int = 0
    rows_quarantined: int = 0
    threshold: float = 0.0
    checks: list[Check] = field(default_factory=list)
    report: str = ""
    quarantine: str = ""
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    @property
    def bad_share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def to_xcom(self) -> dict[str, Any]:
        """Small and free of personal data: counts, rule names, paths."""
        rules: dict[str, int] = {}
        for c in self.checks:
            if c.level == "row" and c.unexpected:
                rules[c.name] = rules.get(c.name, 0) + c.unexpected
        return {
            "rows_in": self.rows_in,
            "rows_good": self.rows_good,
            "rows_quarantined": self.rows_quarantined,
            "bad_share": round(self.bad_share, 6),
            "threshold": self.threshold,
            "quarantine_reasons": rules,
            "failed_checks": self.failures,
            "report": self.report,
            "quarantine": self.quarantine,
            "passed": self.passed,
        }


def _gx():
    """Import GX quietly: its import logs ~200 INFO lines unless its logger is raised first."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


_THREAD = threading.local()  # GX is not thread-safe: a context, and its batch definitions, per thread


def _gx_context():
    gx, _ = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")  # never a cloud/file context: no network, no litter
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _batch_definition(name: str):
    """The whole-frame batch definition `name` of this thread's ephemeral context, made once
    (a context costs ~0.1 s to make; a batch takes the frame as a parameter, so it is reusable)."""
    definitions = getattr(_THREAD, "definitions", None)
    if definitions is None:
        definitions = _THREAD.definitions = {}
    if name not in definitions:
        context = getattr(_THREAD, "context", None) or _gx_context()
        _THREAD.context = context
        asset = context.data_sources.add_or_update_pandas(name).add_dataframe_asset("staged")
        definitions[name] = asset.add_batch_definition_whole_dataframe("whole")
    return definitions[name]


class _DatasetCounts:
    """What the dataset-level checks need from the chunks seen so far: the row count, nulls per
    column, and a 64-bit hash of each good row's key (duplicates are counted on it; a collision
    among a few million keys is ~1e-7 likely), so memory is 8 bytes per good row."""

    def __init__(self) -> None:
        self.chunks = self.rows = self.good = 0
        self.nulls: dict[str, int] = {}
        self._hashes: list[np.ndarray] = []

    def add(self, prepared: pd.DataFrame, bad: np.ndarray, null_columns) -> None:
        self.chunks += 1
        self.rows += len(prepared)
        hashes = engine.key_hash(prepared[engine.KEY])[~bad]
        self.good += len(hashes)
        self._hashes.append(hashes)
        for column in null_columns:
            self.nulls[column] = self.nulls.get(column, 0) + int(prepared[column].isna().sum())

    def duplicated_keys(self) -> int:
        """Good rows whose key another good row has too (all of them, as GX's uniqueness counts).
        Counted per range of the hash's top bits, so only a sixteenth of the hashes is ever copied."""
        total = 0
        for top in range(16):
            part = np.concatenate(
                [h[(h >> np.uint64(60)) == np.uint64(top)] for h in self._hashes] or [np.empty(0, np.uint64)]
            )
            part.sort()
            if len(part) < 2:
                continue
            same = part[1:] == part[:-1]  # a run of equal hashes of length k has k - 1 of these
            starts = same & ~np.concatenate([[False], same[:-1]])  # one per run
            total += int(same.sum()) + int(starts.sum())
        return total


def _mostly(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's rule for a column map expectation: vacuously true without rows."""
    if not considered:
        return True
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def _unexpected(unexpected: int, considered: int) -> str:
    share = unexpected / considered * 100 if considered else 0
    return f"{unexpected} of {considered} unexpected ({share or 0:.2f}%)"


class QualityGate:
    """Validate one source of one run, chunk by chunk; see the module docstring."""

    def __init__(self, mapping: Mapping, source_name: str, area: Area, *, label: str = "") -> None:
        self.mapping = mapping
        self.source_name = source_name
        self.source = mapping.sources[source_name]
        self.area = area
        self.summary = GateSummary(
            mapping.name, source_name, label, threshold=self.source.checks.bad_row_threshold
        )
        self._rules = row_rules.gx_order(engine.row_rules(self.source))
        self._suite = None
        self._row_checks: dict[str, Check] = {}
        self._dataset = _DatasetCounts()
        self._parts = area / "quarantine-parts"
        self._parts.clear()
        self._part_columns: dict[str, None] = {}  # every part's columns, in the order they came
        self._pending: list[pd.DataFrame] = []  # rule outcomes GX has not validated yet
        self._schema_checked = False

    # -- GX plumbing --------------------------------------------------------------------------
    def _batch(self, frame: pd.DataFrame):
        definition = _batch_definition(f"{self.mapping.name}_{self.source_name}")
        return definition.get_batch(batch_parameters={"dataframe": frame})

    def _row_suite(self):
        """One expectation per rule, on the rule's outcome column `rule_<i>` (True: the row meets
        it), in GX's own reporting order; built once per gate."""
        if self._suite is None:
            gx, gxe = _gx()
            suite = gx.ExpectationSuite(name=f"{self.mapping.name}.{self.source_name}.rows")
            for i, r in enumerate(self._rules):
                meta = {"rule": r.rule, "input": r.input, "expectation": row_rules.EXPECTATION[r.kind]}
                suite.add_expectation(
                    gxe.ExpectColumnValuesToBeInSet(column=f"rule_{i}", value_set=[True], meta=meta)
                )
            self._suite = suite
        return self._suite

    # -- the gate ------------------------------------------------------------------------------
    def check_schema(self, columns: list[str]) -> None:
        """Dataset-level: every column the mapping reads is present (schema drift fails here)."""
        _, gxe = _gx()
        self._schema_checked = True
        needed = sorted(set(engine.source_columns(self.source).values()))
        probe = pd.DataFrame({c: pd.Series(dtype="string") for c in columns})
        expectation = gxe.ExpectTableColumnsToMatchSet(column_set=needed, exact_match=False)
        result = self._batch(probe).validate(expectation)
        missing = engine.missing_columns(self.source, columns)
        extra = sorted(set(columns) - set(needed))
        detail = f"missing {missing}; columns not in the mapping: {extra}" if missing else "all present"
        self._add_dataset_check("required_columns", "expect_table_columns_to_match_set", None, result, detail)
        if missing:
            self._fail(f"required_columns: {detail}")

    def validate(self, raw: pd.DataFrame, *, row_offset: int) -> pd.DataFrame:
        """Quarantine the chunk's bad rows; return its good rows, prepared (typed, keyed)."""
        if not self._schema_checked:
            self.check_schema(list(raw.columns))
        if self.summary.failures:
            self.finish()  # writes the report, then raises
        if sum(len(o) for o in self._pending) >= GX_BATCH_ROWS:
            self._validate_outcomes()  # before this chunk is read: GX's peak is not added to a chunk's
        prepared = engine.prepare(self.mapping, self.source_name, raw, row_offset=row_offset)
        self.summary.rows_in += len(prepared)
        bad = np.zeros(len(prepared), dtype=bool)
        if len(prepared):
            outcomes = self._outcomes(prepared)
            bad = ~outcomes.to_numpy().all(axis=1)
            if bad.any():
                reasons = self._reasons(outcomes, bad)
                self._quarantine(raw.reset_index(drop=True)[bad], prepared[engine.ROW][bad], reasons)
            self._pending.append(outcomes)
        good = prepared[~bad].reset_index(drop=True)
        self.summary.rows_good += len(good)
        self.summary.rows_quarantined += int(bad.sum())
        self._dataset.add(prepared, bad, self.source.checks.max_null_share)
        return good

    def quarantine_unparsed(self, lines: list) -> None:
        """Lines of a file that never became rows (bad encoding, wrong field count) count as
        quarantined rows too, with their line number and reason."""
        if not lines:
            return
        frame = pd.DataFrame(
            {
                "row": [b.line for b in lines],
                "reason": [f"unparseable_line: {b.reason}" for b in lines],
                "line": [b.text for b in lines],
            }
        ).astype({"reason": "string", "line": "string"})
        self._write_part(frame)
        self.summary.rows_in += len(lines)
        self.summary.rows_quarantined += len(lines)
        check = self._row_checks.setdefault(
            "unparseable_line", Check("unparseable_line", "file parsing", None, "row", True)
        )
        check.unexpected += len(lines)
        check.success = False

    def _outcomes(self, prepared: pd.DataFrame) -> pd.DataFrame:
        """One boolean column `rule_<i>` per rule (True: the row meets it), each decided in one
        vectorised pass (quality.rules), indexed by the rows' numbers. GX's own row-by-row
        comparisons and regex per expectation were most of the gate's time; a frame of booleans
        hashes fast. The row numbers are the frame's unnamed index: GX then returns the index of
        the failing rows as they are, where naming an index column makes it look up every failing
        row one by one."""
        outcomes: dict[str, np.ndarray] = {}
        for i, rule in enumerate(self._rules):
            try:
                outcomes[f"rule_{i}"] = row_rules.passes(rule, prepared[rule.column()])
            except Exception as exc:  # GX's expectation would have raised: a failed check, not bad rows
                outcomes[f"rule_{i}"] = np.ones(len(prepared), dtype=bool)
                self._check_raised(rule, exc)
        return pd.DataFrame(outcomes, index=pd.Index(prepared[engine.ROW].to_numpy()))

    def _row_check(self, rule: engine.RowRule) -> Check:
        return self._row_checks.setdefault(
            f"{rule.rule}:{rule.input}",
            Check(rule.rule, row_rules.EXPECTATION[rule.kind], rule.input, "row", True),
        )

    def _reasons(self, outcomes: pd.DataFrame, bad: np.ndarray) -> list[str]:
        """Each bad row's reasons, "rule (input)" joined by "; " in GX's reporting order (the
        rules' order); counted into each rule's check."""
        failed = ~outcomes.to_numpy()[bad]
        rows = outcomes.index.to_numpy()[bad]
        labels = []
        for i, rule in enumerate(self._rules):
            check, hits = self._row_check(rule), rows[failed[:, i]]
            check.unexpected += len(hits)
            check.success = check.success and not len(hits)
            if len(check.examples) < 5:
                check.examples.extend(int(x) for x in hits[: 5 - len(check.examples)])
            label = f"{rule.rule} ({rule.input})"
            labels.append(pa.array(np.where(failed[:, i], label, None), pa.large_string()))
        return pc.binary_join_element_wise(
            *labels, pa.scalar("; ", pa.large_string()), null_handling="skip"
        ).to_pylist()

    def _validate_outcomes(self) -> None:
        """GX validates the pending outcomes, one expectation per rule, as one suite: a rule whose
        unexpected rows are not exactly the ones the chunks quarantined for it, or whose
        expectation raised, is a failed check (the run fails)."""
        if not self._pending or not self._rules:
            self._pending = []
            return
        frame = pd.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        result = self._batch(frame).validate(
            self._row_suite(),
            result_format={
                "result_format": "COMPLETE",
                "exclude_unexpected_values": True,
                "return_unexpected_index_query": False,
            },
        )
        rows = frame.index.to_numpy()
        for r in result.results:
            meta = r.expectation_config.meta or {}
            name, column = meta.get("rule", "?"), meta.get("input")
            check = self._row_checks.setdefault(
                f"{name}:{column}",
                Check(name, meta.get("expectation", r.expectation_config.type), column, "row", True),
            )
            if r.exception_info and r.exception_info.get("raised_exception"):
                check.success = False
                check.detail = str(r.exception_info.get("exception_message"))[:500]
                self._fail(f"{name} ({column}): the check could not run: {check.detail}")
                continue
            by_gx = np.sort(np.asarray(r.result.get("unexpected_index_list") or [], dtype=np.int64))
            ours = np.sort(rows[~frame[r.expectation_config.kwargs["column"]].to_numpy()])
            if not np.array_equal(by_gx, ours):
                check.success = False
                check.detail = f"GX found {len(by_gx)} unexpected rows, the rule quarantined {len(ours)}"
                self._fail(f"{name} ({column}): {check.detail}")

    def _check_raised(self, rule: engine.RowRule, exc: Exception) -> None:
        check = self._row_check(rule)
        check.success = False
        check.detail = f"{type(exc).__name__}: {exc}"[:500]
        self._fail(f"{rule.rule} ({rule.input}): the check could not run: {check.detail}")

    def _quarantine(self, raw_bad: pd.DataFrame, rows: pd.Series, reasons: list[str]) -> None:
        out = raw_bad.astype("string").copy()
        out.insert(0, "reason", reasons)
        out.insert(0, "row", rows.to_numpy())
        self._write_part(out)

    def _write_part(self, frame: pd.DataFrame) -> None:
        self._parts.write_parquet(f"part-{len(self._parts.names()):05d}.parquet", frame)
        self._part_columns.update(dict.fromkeys(frame.columns))

    def finish(self) -> GateSummary:
        """Run the dataset-level checks, write report and quarantine; raise if the run must stop."""
        s, checks = self.summary, self.source.checks
        self._validate_outcomes()
        if self._dataset.chunks and not s.failures:
            self._dataset_checks(self._dataset)
        self._dataset = _DatasetCounts()
        if s.bad_share > s.threshold:
            self._fail(
                f"bad_row_threshold: {s.rows_quarantined} of {s.rows_in} rows quarantined "
                f"({s.bad_share:.2%}) > {checks.bad_row_threshold:.2%}"
            )
        s.checks = [c for c in s.checks if c.level == "dataset"] + list(self._row_checks.values())
        s.quarantine = str(self._write_quarantine())
        s.report = str(self.area.write_text("report.html", render_report(s)))
        self.area.write_text("result.json", pd.Series(asdict(s)).to_json(default_handler=str))
        log.info(
            "Quality gate %s.%s: %d in, %d good, %d quarantined (%.2f%%), passed=%s; report %s",
            s.mapping,
            s.source,
            s.rows_in,
            s.rows_good,
            s.rows_quarantined,
            100 * s.bad_share,
            s.passed,
            s.report,
        )
        if not s.passed:
            raise QualityGateFailed(self._message())
        return s

    def _dataset_checks(self, counts: _DatasetCounts) -> None:
        """The dataset-level expectations, decided as GX decides them (the same names, counts,
        `mostly` arithmetic and report lines) but on the chunks' counts and key hashes: GX would
        need the whole extract in one frame (+195 MiB for a 3.3M-row loyalty file, issue 19)."""
        checks = self.source.checks
        low, high = checks.row_count.min, checks.row_count.max
        rows = counts.rows
        self._decided(
            "row_count",
            "expect_table_row_count_to_be_between",
            None,
            (low is None or rows >= low) and (high is None or rows <= high),
            f"rows {rows}",
        )
        dup_share = self.source.duplicates.max_share
        if rows and dup_share < 1:  # max_share 1: many rows per key is the nature of the data
            good, duplicated = counts.good, counts.duplicated_keys()
            self._decided(
                "duplicate_keys",
                "expect_column_values_to_be_unique",
                engine.KEY,
                _mostly(good, duplicated, max(1 - dup_share, 1e-9) if dup_share else 1.0),
                _unexpected(duplicated, good),
            )
        for column, null_share in checks.max_null_share.items():
            if rows:
                nulls = counts.nulls[column]
                self._decided(
                    f"null_share_{column}",
                    "expect_column_values_to_not_be_null",
                    column,
                    _mostly(rows, nulls, max(1 - null_share, 1e-9)),
                    _unexpected(nulls, rows),
                )

    def _decided(self, name: str, expectation: str, column: str | None, success: bool, detail: str) -> None:
        self.summary.checks.append(Check(name, expectation, column, "dataset", bool(success), detail=detail))
        if not success:
            self._fail(f"{name}: {detail}")

    def _add_dataset_check(
        self, name: str, expectation: str, column: str | None, result, detail: str
    ) -> None:
        raised = bool(result.exception_info and result.exception_info.get("raised_exception"))
        if raised:
            detail = f"could not run: {result.exception_info.get('exception_message')}"
        self.summary.checks.append(
            Check(name, expectation, column, "dataset", bool(result.success) and not raised, detail=detail)
        )
        if raised:
            self._fail(f"{name}: {detail}")

    def _write_quarantine(self):
        """One CSV for people, written by `csv_for_people` like every such file: formulas are
        defused in every cell whatever the delimiter, control characters never appear raw. A
        part at a time, so the file is never in memory whole."""
        columns = list(self._part_columns) or ["row", "reason"]

        def write(f) -> None:
            f.write(csv_for_people(pd.DataFrame(columns=columns).astype("string")).encode("utf-8"))
            for frame in self._parts.iter_parquet():
                f.write(csv_for_people(frame.reindex(columns=columns), header=False).encode("utf-8"))

        path = self.area.write_stream("quarantine.csv", write)
        self._parts.clear()
        return path

    def _fail(self, failure: str) -> None:
        self.summary.passed = False
        self.summary.failures.append(failure)

    def _message(self) -> str:
        s = self.summary
        return (
            f"Quality gate failed for {s.mapping}.{s.source}: "
            + "; ".join(s.failures)
            + (f". Report: {s.report}" if s.report else "")
        )
