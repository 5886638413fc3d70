"""The ESP store's products, built from every order line seen so far."""

from __future__ import annotations

import json

import pandas as pd


def products(lines: pd.DataFrame) -> pd.DataFrame:
    """One product doc per product: every variant sold, titles and prices of its latest sale
    (deterministic whatever the order of the lines, so unchanged products diff as unchanged and
    order lines always find their product and variant)."""
    rows = []
    ordered = lines.assign(_n=pd.to_numeric(lines["line_id"], errors="coerce")).sort_values(["_n", "line_id"])
    for product_id, group in ordered.groupby("product_id", sort=True):
        variants = group.drop_duplicates("variant_id", keep="last").sort_values("variant_id")
        rows.append(
            {
                "id": product_id,
                "doc": json.dumps(
                    {
                        "id": product_id,
                        "title": str(group["title"].iloc[-1] or product_id),
                        "variants": [
                            {
                                "id": v.variant_id,
                                "title": str(v.variant_title or v.title or v.variant_id),
                                "price": float(v.price),
                            }
                            for v in variants.itertuples(index=False)
                        ],
                    },
                    sort_keys=True,
                ),
            }
        )
    return pd.DataFrame(rows, columns=["id", "doc"])
