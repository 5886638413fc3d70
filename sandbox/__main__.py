"""Command line: ``python -m sandbox serve|generate|stop|legacy-members`` (see sandbox/README.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sandbox import store
from sandbox.config import DEFAULT_NOW, LEGACY_DSN, SERVED_PORTS, GenParams, Settings, read_ready
from sandbox.world import RATES

#: Settings fields that ``--esp-api-key`` etc. override.
_CREDENTIALS = (
    "esp_api_key",
    "crm_token",
    "shop_token",
    "sftp_user",
    "sftp_password",
    "smtp_user",
    "smtp_password",
)


def _option(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in RATES:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of: {', '.join(sorted(RATES))}")
    return name, float(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "generate", "legacy-members"):
        cmd = commands.add_parser(name)
        cmd.add_argument("--data-dir", type=Path, required=name != "legacy-members")
        cmd.add_argument("--seed", type=int, default=42)
        cmd.add_argument("--contacts", type=int, default=1000)
        cmd.add_argument("--days", type=int, default=7)
        cmd.add_argument("--now", default=DEFAULT_NOW, help="the generated world's now (ISO 8601)")
        cmd.add_argument(
            "--set",
            dest="options",
            type=_option,
            action="append",
            default=[],
            metavar="RATE=VALUE",
            help="override a generator rate (repeatable)",
        )
    serve = commands.choices["serve"]
    serve.add_argument("--host", default="127.0.0.1")
    for system, port in SERVED_PORTS.items():
        serve.add_argument(
            f"--{system}-port", type=int, default=port, help=f"default {port}; 0 = any free port"
        )
    serve.add_argument("--parent-pid", type=int, help="exit within ~1 s after this process is gone")
    serve.add_argument(
        "--faults", type=Path, help='JSON file {"esp": {...switches}, "crm": ..., "shop": ...}'
    )
    serve.add_argument("--no-generate", action="store_true", help="keep the data already in --data-dir")
    for name in _CREDENTIALS:
        serve.add_argument(f"--{name.replace('_', '-')}")
    legacy = commands.choices["legacy-members"]
    legacy.description = (
        "(Re)fill the legacy club-member table in PostgreSQL from the world of the sandbox in "
        "--data-dir (its ready.json, else its sandbox.db), or of --seed/--contacts/... without it."
    )
    legacy.add_argument("--dsn", default=LEGACY_DSN, help=f"PostgreSQL URL; default {LEGACY_DSN}")
    legacy.add_argument("--mutate", type=float, metavar="FRACTION", help="change this share instead")
    legacy.add_argument("--mutate-seed", type=int, default=1)
    legacy.add_argument("--at", default="2026-11-20T03:00:00Z", help="updated_at of the mutated rows")
    stop = commands.add_parser("stop")
    stop.add_argument("--data-dir", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "stop":
        from sandbox.process import stop_running

        return 0 if stop_running(args.data_dir) else 1
    params = GenParams(args.seed, args.contacts, args.days, args.now, dict(args.options))
    if args.command == "legacy-members":
        return _legacy_members(args, params)
    if args.command == "generate":
        from sandbox import generator

        args.data_dir.mkdir(parents=True, exist_ok=True)
        conn = store.connect(args.data_dir / "sandbox.db")
        print(json.dumps(generator.generate(conn, args.data_dir / "sftp", params)))  # noqa: T201 - CLI output
        conn.close()
        return 0
    import uvloop

    from sandbox.server import serve

    settings = Settings(
        args.data_dir.resolve(),
        host=args.host,
        ports={s: getattr(args, f"{s}_port") for s in SERVED_PORTS},
    )
    for flag in _CREDENTIALS:
        if getattr(args, flag):
            setattr(settings, flag, getattr(args, flag))
    faults = json.loads(args.faults.read_text()) if args.faults else None
    uvloop.run(
        serve(settings, params, regenerate=not args.no_generate, faults=faults, parent_pid=args.parent_pid)
    )
    return 0


def _legacy_members(args: argparse.Namespace, params: GenParams) -> int:
    from sandbox import legacy_members

    if args.data_dir:
        if (args.data_dir / "ready.json").exists():
            params = GenParams(**read_ready(args.data_dir)["generated"])
        else:
            conn = store.connect(args.data_dir / "sandbox.db", readonly=True)
            params = GenParams(**store.meta_get(conn, "params"))
            conn.close()
    if args.mutate is not None:
        changed = legacy_members.mutate(args.dsn, args.mutate, args.mutate_seed, args.at)
        print(json.dumps({"mutated": len(changed)}))  # noqa: T201 - CLI output
        return 0
    legacy_members.create_database(args.dsn)
    print(json.dumps(legacy_members.reset(args.dsn, params)))  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":
    sys.exit(main())
