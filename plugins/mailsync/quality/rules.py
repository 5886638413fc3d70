"""The row rules of a mapping decided vectorised, as Great Expectations decides them.

GX's pandas expectations test each column with pandas (`~isnull()`, `astype(str).str.contains`,
`isin`, `str.len()`), but a column of nullable floats is compared value by value in Python and
every expectation costs ~7 ms of graph building per chunk before it reads a row. Here each rule
is the same pandas operation on the same (non-null, for all but `not_null`) values, in one pass;
the gate then hands GX one boolean column per rule to validate (issue 22). `passes` says, for
every row, whether the rule's expectation would count it as expected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mailsync.mapping.engine import RowRule

# The expectation each rule kind is (the name the report shows).
EXPECTATION = {
    "not_null": "expect_column_values_to_not_be_null",
    "regex": "expect_column_values_to_match_regex",
    "parsed": "expect_column_values_to_be_in_set",
    "clean": "expect_column_values_to_be_in_set",
    "between": "expect_column_values_to_be_between",
    "in_set": "expect_column_values_to_be_in_set",
    "max_length": "expect_column_value_lengths_to_be_between",
}


def gx_order(rules: list[RowRule]) -> list[RowRule]:
    """The order GX reports results in: grouped by column, columns in order of first mention
    (`Validator.process_expectations_for_validation`); a row's reasons are listed in it."""
    groups: dict[str, list[RowRule]] = {}
    for r in rules:
        groups.setdefault(r.column(), []).append(r)
    return [r for group in groups.values() for r in group]


def passes(rule: RowRule, column: pd.Series) -> np.ndarray:
    """True where the row meets the rule; nulls meet every rule but `not_null` (GX leaves them
    out of a column map expectation). Raises where GX's expectation would raise."""
    if rule.kind == "not_null":
        return column.notna().to_numpy(dtype=bool)
    present = column.notna().to_numpy(dtype=bool)
    ok = np.ones(len(column), dtype=bool)
    if not present.any():
        return ok
    values = column[present]
    if rule.kind == "regex":  # Arrow text is matched by the same kernel after `astype(str)`: no copy
        text = values if isinstance(values.array, pd.arrays.ArrowStringArray) else values.astype(str)
        met = text.str.contains(rule.params["regex"])
    elif rule.kind in ("parsed", "clean"):
        met = values.isin([True])
    elif rule.kind == "in_set":
        met = values.isin(rule.params["values"])
    elif rule.kind == "max_length":
        met = values.str.len() <= rule.params["max"]
    elif rule.kind == "between":
        met = _between(values, rule.params["min"], rule.params["max"])
    else:
        raise ValueError(f"unknown row rule kind {rule.kind!r}")
    ok[present] = np.asarray(met, dtype=bool)
    return ok


_EXACT_IN_FLOAT = 2**53  # integers up to this size compare with a float bound exactly as floats


def _between(values: pd.Series, low: float | None, high: float | None) -> np.ndarray:
    """GX's `column_values.between` with inclusive bounds: `low <= value <= high`, compared as
    Python compares the values (floats as floats, integers exactly)."""
    if low is None and high is None:
        raise ValueError("min_value and max_value cannot both be None")
    if low is not None and high is not None and low > high:
        raise ValueError("min_value cannot be greater than max_value")
    dtype = values.dtype
    numbers: np.ndarray | None = None
    if pd.api.types.is_float_dtype(dtype):
        numbers = values.to_numpy(dtype="float64")
    elif pd.api.types.is_integer_dtype(dtype):
        ints = values.to_numpy(dtype="int64")
        if not len(ints) or np.abs(ints).max() <= _EXACT_IN_FLOAT:
            numbers = ints.astype("float64")
    if numbers is None:  # anything else, one by one as GX does
        return np.array([_is_between(v, low, high) for v in values.to_numpy(dtype=object)], dtype=bool)
    ok = np.ones(len(numbers), dtype=bool)
    with np.errstate(invalid="ignore"):
        if low is not None:
            ok &= numbers >= low
        if high is not None:
            ok &= numbers <= high
    return ok


def _is_between(value: Any, low: Any, high: Any) -> bool:
    for bound in (low, high):
        if bound is not None and isinstance(value, str) != isinstance(bound, str):
            raise TypeError(
                "Column values, min_value, and max_value must either be None or of the same type."
            )
    if isinstance(value, float) and math.isnan(value):
        return False
    return (low is None or value >= low) and (high is None or value <= high)
