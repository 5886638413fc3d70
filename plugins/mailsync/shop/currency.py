"""Net amounts of orders and their value in the reporting currency (EUR at the rate of the
order's creation day, from the rates file the orders mapping names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from mailsync.settings import INCLUDE_DIR

if TYPE_CHECKING:
    from mailsync.mapping.spec import Mapping

RATE_TOLERANCE_DAYS = 4  # a rate older than this is no rate: the run fails and names the file


def amounts(orders: pd.DataFrame, mapping: Mapping) -> pd.DataFrame:
    """Net amounts (total - refunds, zero when cancelled or voided) and their reporting value."""
    return with_rates(net_amounts(orders), rates(mapping), mapping)


def net_amounts(orders: pd.DataFrame) -> pd.DataFrame:
    """`net_total` (total - refunds, never below zero; zero when cancelled or voided) and
    `counted` (the order counts: not cancelled and worth something)."""
    out = orders.copy()
    cancelled = out["cancelled_at"].notna() | out["financial_status"].eq("voided").fillna(False)
    net = (out["total_price"].fillna(0) - out["refunded"].fillna(0)).clip(lower=0)
    out["counted"] = ~cancelled.to_numpy() & (net > 0).to_numpy()
    out["net_total"] = net.where(~cancelled, 0.0).round(2)
    return out


def with_rates(orders: pd.DataFrame, table: pd.DataFrame, mapping: Mapping) -> pd.DataFrame:
    """`net_reporting`: the net total at the latest rate of the order's currency on or before
    its creation day (UTC). A counted order without a rate fails, naming the rates file."""
    out = orders.copy()
    day = out["created_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize().astype("datetime64[us]")
    left = pd.DataFrame(
        {
            "row": range(len(out)),
            "day": day.to_numpy(),
            # the rates' own dtype: an empty day's column would be object and merge_asof refuses it
            "currency": pd.array(out["currency"].astype(str).to_numpy(), dtype=table["currency"].dtype),
        }
    )
    joined = pd.merge_asof(
        left.sort_values("day"),
        table,
        on="day",
        by="currency",
        direction="backward",
        tolerance=pd.Timedelta(days=RATE_TOLERANCE_DAYS),
    )
    rate = joined.set_index("row")["rate"].reindex(range(len(out))).to_numpy()
    out["net_reporting"] = (out["net_total"].to_numpy(dtype=float) * rate).round(2)
    missing = out["net_reporting"].isna() & out["counted"]
    if missing.any():
        raise ValueError(
            f"no {mapping.reporting.currency} rate for {missing.sum()} order(s): "
            f"extend {mapping.reporting.rates_file}"
        )
    return out


def rates(mapping: Mapping) -> pd.DataFrame:
    """The rates file of the mapping's `reporting` section: day, currency, rate, by day."""
    spec = mapping.reporting
    table = pd.read_csv(INCLUDE_DIR / spec.rates_file, dtype={"currency": str})
    return pd.DataFrame(
        {
            "day": pd.to_datetime(table["date"]).astype("datetime64[us]"),
            "currency": table["currency"],
            "rate": table[spec.rate_column].astype(float),
        }
    ).sort_values("day")
