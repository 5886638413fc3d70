"""Record prints and key buckets on 1M records: the pandas hashes they replace, side by side.

    python -m bench.bench_hashing [--rows 1000000] [--repeat 3]

The records have the dtypes the mapping engine gives destination fields (text, Float64, Int64,
boolean), 15 fields, about 10 % of values missing: the shape of a contacts night. Reported: the
median seconds over the repeats of `legacy_pandas_fingerprint` (the print until issue 20, still
computed by the diff for records whose stored print is one), `fingerprint` (blake2b),
`pd.util.hash_array` on the keys (the bucket hash until issue 20) and `key_hash` (its own
implementation, bit for bit equal; checked here too).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import write_result


def records(rows: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(20)

    def text(values, missing: float = 0.1):
        picked = pd.Series(
            np.asarray(values, dtype=object)[rng.integers(0, len(values), rows)], dtype="string"
        )
        return picked.mask(rng.random(rows) < missing)

    def flags(missing: float):
        return pd.Series(rng.random(rows) < 0.5, dtype="boolean").mask(rng.random(rows) < missing)

    def numbers(dtype: str, scale: float, missing: float = 0.1):
        values = pd.Series(rng.random(rows) * scale, dtype="Float64").round(2)
        return values.astype(dtype).mask(rng.random(rows) < missing)

    first = [f"Name{i}é" for i in range(5_000)]
    cities = [f"City {i}" for i in range(20_000)]
    frame = pd.DataFrame(
        {
            "email_address": pd.Series(
                [f"user{i}.{i * 7919 % 100_003}@example{i % 97}.com" for i in range(rows)]
            ),
            "status_if_new": text(["subscribed", "unsubscribed"], 0),
            "status": text(["unsubscribed"], 0.9),
            "language": text(["de", "en", "fr"]),
            "merge_fields.FNAME": text(first),
            "merge_fields.LNAME": text([f"Surname{i}" for i in range(20_000)]),
            "merge_fields.BIRTHDAY": text([f"{m:02d}/{d:02d}" for m in range(1, 13) for d in range(1, 29)]),
            "merge_fields.CITY": text(cities),
            "merge_fields.COUNTRY": text(["DE", "AT", "CH", "FR", "GB"]),
            "merge_fields.CLIENTID": pd.Series([f"CL-{i:08d}" for i in range(rows)], dtype="string"),
            "merge_fields.LASTORDER": text(
                [f"2026-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
            ),
            "merge_fields.LTV": numbers("Float64", 5_000),
            "merge_fields.ORDERS": numbers("Int64", 80),
            "merge_fields.VIP": flags(0.1),
            "merge_fields.OPTIN": flags(0.3),
        }
    )
    frame["email_address"] = frame["email_address"].astype("string")
    return frame


def timed(repeat: int, fn) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples), 3), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import pandas as pd

    from mailsync.mapping import engine

    frame = records(args.rows)
    fields = list(frame.columns)
    keys = frame["email_address"]
    legacy_s, _ = timed(args.repeat, lambda: engine.legacy_pandas_fingerprint(frame, fields))
    print_s, prints = timed(args.repeat, lambda: engine.fingerprint(frame, fields))
    pandas_keys_s, old = timed(
        args.repeat, lambda: pd.util.hash_array(keys.fillna("").astype(object).to_numpy())
    )
    key_s, new = timed(args.repeat, lambda: engine.key_hash(keys))
    assert (old == new).all(), "key_hash differs from pandas' hash_array"
    write_result(
        f"hashing_{args.rows}",
        {
            "rows": args.rows,
            "fields": len(fields),
            "repeat": args.repeat,
            "median_seconds": {
                "fingerprint_pandas_before": legacy_s,
                "fingerprint_blake2b_after": print_s,
                "bucket_hash_pandas_before": pandas_keys_s,
                "bucket_hash_own_siphash_after": key_s,
            },
            "ratio_fingerprint_after_to_before": round(print_s / legacy_s, 2),
            "transform_pays_until_old_prints_are_gone_seconds": round(print_s + legacy_s, 3),
            "distinct_prints": int(prints.nunique()),
        },
    )


if __name__ == "__main__":
    main()
