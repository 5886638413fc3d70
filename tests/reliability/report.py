"""bench/results/RELIABILITY.md from the suite's result rows (and the soak's totals).

    python -m tests.reliability.report RESULTS.jsonl [--out bench/results/RELIABILITY.md]

The file has two sections, each rewritten by its own producer: the fast cases (this module,
from the JSON lines the pytest session wrote) and the soak (tests/reliability/soak.py). A
producer leaves the other's section as it was.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT = PROJECT / "bench" / "results" / "RELIABILITY.md"
HEADER = """# Reliability: faults and bad input

Written by `tests/reliability/` (the fast cases run in `make test`) and `make soak`. Every case
runs whole DAG runs with `dag.test()` against the sandbox and checks the end state against the
independent reference of what the mappings prescribe (`tests/integration/dags/expected_*.py`):
*lost* = records the mapping prescribes that the destination does not hold, or holds with another
status or field value; *duplicates* = records written with success more than once (from the
sandbox's request log; re-sends of the one batch whose answer a client timeout lost are counted
apart); *wrongful subs* = members subscribed although unsubscribed/cleaned before, or without
consent. Emails in examples are masked.
"""


def _section(name: str, body: str) -> str:
    return f"<!-- {name}:begin -->\n{body.rstrip()}\n<!-- {name}:end -->\n"


def replace_section(target: Path, name: str, body: str) -> None:
    text = target.read_text(encoding="utf-8") if target.exists() else HEADER
    block = _section(name, body)
    pattern = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def cases_table(rows: list[dict]) -> str:
    lines = [
        "## Fast cases (`make test`, `pytest tests/reliability`)",
        "",
        "| case | run | inputs / fault hits | runs | records expected | found | lost | duplicates "
        "| resent after timeout | wrongful subs | outcome | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[r.get("passed")]
        if r.get("passed") is False and r.get("examples"):
            verdict += " (" + "; ".join(r["examples"][:2]) + ")"
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    r["case"],
                    r["group"],
                    r.get("inputs", ""),
                    r.get("runs", ""),
                    r.get("expected", ""),
                    r.get("found", ""),
                    r.get("lost", ""),
                    r.get("duplicates", ""),
                    r.get("resent_after_timeout", ""),
                    r.get("wrongful_subscriptions", ""),
                    r.get("outcome", ""),
                    verdict,
                )
            )
            + " |"
        )
    failed = [r["case"] for r in rows if r.get("passed") is False]
    lines += [
        "",
        f"{len(rows)} rows; {sum(r.get('passed') is True for r in rows)} pass"
        + (f"; failing: {'; '.join(failed)}." if failed else "."),
    ]
    return "\n".join(lines)


def read_rows(results: Path) -> list[dict]:
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    latest: dict[str, dict] = {}
    for r in rows:  # a case run twice in one session: its last result counts
        latest[r["case"]] = r
    return list(latest.values())


_DATA = re.compile(r"<!-- rows (\[.*?\]) -->", re.S)


def _previous_rows(target: Path) -> list[dict]:
    """Rows an earlier session wrote (kept in the file itself, so `make test` and the soak's
    pytest cases, run at different times, add up to one table)."""
    found = _DATA.search(target.read_text(encoding="utf-8")) if target.exists() else None
    return json.loads(found.group(1).replace("- -", "--")) if found else []


def write(results: Path, target: Path = DEFAULT) -> Path:
    rows = {r["case"]: r for r in _previous_rows(target)}
    rows.update({r["case"]: r for r in read_rows(results)})
    kept = [{k: v for k, v in r.items() if k != "details"} for r in rows.values()]
    data = json.dumps(kept, ensure_ascii=False).replace("--", "- -")  # no "--" inside a comment
    replace_section(target, "cases", cases_table(list(rows.values())) + f"\n\n<!-- rows {data} -->")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT)
    args = parser.parse_args()
    sys.stdout.write(f"{write(args.results, args.out)}\n")


if __name__ == "__main__":
    main()
