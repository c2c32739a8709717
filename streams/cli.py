"""`streams`: roll the prices topic up into 1-minute candles on the candles topic, and apply retention.

    streams run [--group cryptopulse-streams] [--grace-seconds 10] [--from-end] [--no-retention]
    streams alerts [--group cryptopulse-alerts] [--from-beginning]
    streams retention [--ticks-hours 48] [--candles-days 30]

Stop it with Ctrl-C or SIGTERM: it delivers what it has, commits, and a restart goes on from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta

from cryptopulse import store
from cryptopulse.commands import Parser, non_negative_float, positive_float, run_command, setup_logging
from cryptopulse.kafka import run_until_signalled
from cryptopulse.settings import Settings, env_number
from streams import retention
from streams.alerts import AlertOptions, AlertProcessor
from streams.processor import Processor, ProcessorOptions

log = logging.getLogger("streams")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="streams", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser("run", help="consume ticks and publish candles until stopped")
    run.add_argument("--group", default=None, help="consumer group (env STREAMS_GROUP, default cryptopulse-streams)")
    run.add_argument("--grace-seconds", type=non_negative_float, default=None,
                     help="how long after a minute ends its late ticks still count (event time; "
                          "env STREAMS_GRACE_SECONDS, default 10)")
    run.add_argument("--idle-close-seconds", type=positive_float, default=None,
                     help="close the open minutes of a (symbol, source) that has been silent this long (wall clock; "
                          "env STREAMS_IDLE_CLOSE_SECONDS, default 30)")
    run.add_argument("--update-seconds", type=positive_float, default=1.0,
                     help="at most one update per open candle this often")
    run.add_argument("--from-end", action="store_true",
                     help="a group with no committed offsets starts at the end of the topic, not its beginning")
    run.add_argument("--close-on-stop", action="store_true", help="publish every open minute as final when stopping")
    run.add_argument("--only-symbols", default=None,
                     help="comma-separated: roll up only these symbols (a test processor beside the real one)")
    run.add_argument("--no-retention", action="store_true", help="do not run the retention job")
    run.add_argument("--retention-minutes", type=positive_float, default=10.0, help="how often the retention job runs")
    alerts = sub.add_parser("alerts", help="evaluate ticks against the alert rules and publish the alerts, until "
                            "stopped (docs/alerts.md)")
    alerts.add_argument("--group", default=None,
                        help="consumer group and transactional id: one process per group (env ALERTS_GROUP, "
                             "default cryptopulse-alerts)")
    alerts.add_argument("--from-beginning", action="store_true",
                        help="a group with no committed offsets starts at the beginning of the prices topic, not "
                             "its end (rules watch ticks from their creation on either way)")
    ret = sub.add_parser("retention", help="apply retention once and say what was deleted")
    ret.add_argument("--ticks-hours", type=positive_float, default=None, help="env RETENTION_TICKS_HOURS, default 48")
    ret.add_argument("--candles-days", type=positive_float, default=None, help="env RETENTION_CANDLES_DAYS, default 30")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("streams", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run":
        if args.grace_seconds is None:
            args.grace_seconds = env_number("STREAMS_GRACE_SECONDS", 10, 0, 86_400)
        if args.idle_close_seconds is None:
            args.idle_close_seconds = env_number("STREAMS_IDLE_CLOSE_SECONDS", 30, 0.001, 86_400)
    setup_logging()
    settings = Settings()
    if args.command == "retention":
        policy = retention.RetentionPolicy()
        policy = retention.RetentionPolicy(
            timedelta(hours=args.ticks_hours) if args.ticks_hours is not None else policy.ticks,
            timedelta(days=args.candles_days) if args.candles_days is not None else policy.candles)
        with store.database(settings) as db:
            print(json.dumps(retention.run_once(db, policy)))
        return 0

    if args.command == "alerts":
        alerts = AlertProcessor(settings, AlertOptions(group=args.group or "",
                                                       from_end=not args.from_beginning))
        return run_until_signalled(alerts)

    only = frozenset(s.strip().upper() for s in args.only_symbols.split(",")) if args.only_symbols else None
    options = ProcessorOptions(
        group=args.group or "", grace_ms=int(args.grace_seconds * 1000), update_every=args.update_seconds,
        idle_close=args.idle_close_seconds,
        only_symbols=only, from_end=args.from_end, close_on_stop=args.close_on_stop,
        retention_every=None if args.no_retention else args.retention_minutes * 60)
    processor = Processor(settings, options)
    return run_until_signalled(processor)


if __name__ == "__main__":
    sys.exit(main())
