"""The gate decides each row rule in one vectorised pass (mailsync.quality.rules) and hands GX
the outcomes: for any prepared rows, each rule must fail exactly the rows GX's own expectation
fails when it runs on the column itself (the suite the gate ran before issue 22)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from mailsync.mapping import engine
from mailsync.quality import rules
from mailsync.quality.gate import _gx, _gx_context
from tests.unit.test_mapping_properties import MAPPING, frame, rows

RULES = engine.row_rules(MAPPING.sources["contacts"])


def gx_expectation(r: engine.RowRule):
    """The expectation GX runs for a rule on the column itself."""
    _, gxe = _gx()
    if r.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=r.input)
    if r.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=r.input, regex=r.params["regex"])
    if r.kind in ("parsed", "clean"):
        return gxe.ExpectColumnValuesToBeInSet(column=r.column(), value_set=[True])
    if r.kind == "between":
        low, high = r.params["min"], r.params["max"]
        return gxe.ExpectColumnValuesToBeBetween(column=r.input, min_value=low, max_value=high)
    if r.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=r.input, value_set=r.params["values"])
    return gxe.ExpectColumnValueLengthsToBeBetween(column=r.input, max_value=r.params["max"])


@pytest.fixture(scope="module")
def batch_of():
    asset = _gx_context().data_sources.add_pandas("rules_test").add_dataframe_asset("rows")
    whole = asset.add_batch_definition_whole_dataframe("whole")
    return lambda df: whole.get_batch(batch_parameters={"dataframe": df})


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rows)
def test_each_rule_fails_the_rows_gx_fails(batch_of, data):
    prepared = engine.prepare(MAPPING, "contacts", frame(data))
    if prepared.empty:
        return
    batch = batch_of(prepared.reset_index(drop=True))
    for r in RULES:
        result = batch.validate(gx_expectation(r), result_format={"result_format": "COMPLETE"})
        by_gx = set(result.result.get("unexpected_index_list") or [])
        passes = rules.passes(r, prepared[r.column()].reset_index(drop=True))
        by_rules = set(pd.Index(range(len(prepared)))[~passes])
        assert by_rules == by_gx, (r.rule, r.input, r.kind)
