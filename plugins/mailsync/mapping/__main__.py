"""Check mapping files without Airflow: `python -m mailsync.mapping check [PATH ...]`.

Exit status 1 and one line per problem (file:line: key: what is wrong) when a mapping is
invalid; used by `make lint` and by the DAG integrity tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailsync.mapping.check import check_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailsync.mapping")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate mapping YAML files (folders are searched for *.yaml)")
    check.add_argument("paths", nargs="*", type=Path, default=[])
    args = parser.parse_args(argv)
    problems, checked = check_paths(args.paths)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"{checked} mapping(s) checked, {len(problems)} invalid", file=sys.stderr if problems else sys.stdout
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
