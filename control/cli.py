"""`control`: the operator's command line for CryptoPulse."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from control import connectors, stack
from cryptopulse.settings import Settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="control", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    stack_p = sub.add_parser("stack", help="the native stack: Kafka, registry, Connect, FerretDB")
    stack_sub = stack_p.add_subparsers(dest="action", required=True)
    stack_sub.add_parser("up", help="install on first use, start what is not running, wait until ready")
    stack_sub.add_parser("down", help="stop every component (data is kept)")
    status_p = stack_sub.add_parser("status", help="what runs where, and its memory")
    status_p.add_argument("--json", action="store_true")
    logs_p = stack_sub.add_parser("logs", help="a component's log")
    logs_p.add_argument("component", choices=[c.name for c in stack.components(Settings())])
    logs_p.add_argument("-n", "--lines", type=int, default=50)
    logs_p.add_argument("-f", "--follow", action="store_true")

    sub.add_parser("deploy-connectors", help="create or update every connectors/*.json and wait until RUNNING")
    return p


def _print_status(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    total = 0.0
    for row in rows:
        memory = f"{row['rss_mib']:.0f} MiB" if row["rss_mib"] else "-"
        total += row["rss_mib"] or 0
        print(f"{row['name']:9} {row['state']:8} {row['address']:16} pid {row['pid'] or '-':<8} {memory:>9}  "
              f"{row['log']}")
    print(f"{'total':9} {'':8} {'':16} {'':12} {total:>5.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    settings = Settings()
    try:
        if args.command == "stack":
            if args.action == "up":
                stack.up(settings)
            elif args.action == "down":
                stack.down(settings)
            elif args.action == "status":
                rows = stack.status(settings)
                _print_status(rows, args.json)
                return 0 if all(r["state"] == "ready" for r in rows) else 3
            elif args.action == "logs":
                stack.logs(settings, args.component, args.lines, args.follow)
        elif args.command == "deploy-connectors":
            connectors.deploy(settings)
    except (stack.StackError, connectors.ConnectError) as error:
        print(f"control: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
