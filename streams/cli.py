"""`streams`: the stream processors. `run` rolls the prices topic up into 1-minute candles and those into 5m, 15m,
1h, 4h, 1d and 1w (one topic and collection each), and applies retention; `alerts` evaluates the alert rules;
`notify` delivers the alerts to the channels their rules name.

    streams run [--group cryptopulse-streams] [--grace-seconds 10] [--from-end] [--no-retention]
    streams alerts [--group cryptopulse-alerts] [--from-beginning]
    streams notify [--group cryptopulse-notify] [--cap-per-minute 30] [--give-up-hours 24] [--timeout-seconds 10]
    streams retention [--ticks-hours 48] [--candles-days N]

Stop it with Ctrl-C or SIGTERM: it delivers what it has, commits, and a restart goes on from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from cryptopulse import store
from cryptopulse.candle import INTERVALS
from cryptopulse.commands import Parser, non_negative_float, positive_float, positive_int, run_command, setup_logging
from cryptopulse.kafka import run_until_signalled
from cryptopulse.secrets import scrub_logs
from cryptopulse.settings import Settings, env, env_number
from cryptopulse.store import Retention
from streams.alerts import AlertOptions, AlertProcessor
from streams.cascade import CascadeBook, default_update_every
from streams.cascade_processor import CascadeProcessor
from streams.delivery import Policy
from streams.notify import NotifyOptions, NotifyProcessor
from streams.processor import Processor, ProcessorOptions
from streams.retention import RetentionJob, RetentionReport
from streams.senders import TELEGRAM_API

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
    run.add_argument("--cascade-update-seconds", type=positive_float, default=None,
                     help="at most one update of an open 5m..1w candle this often (default: a second for 5m, up to a "
                          "minute for 1h and above)")
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
    notify = sub.add_parser("notify", help="deliver every alert to the channels its rule names (webhook, ntfy, "
                            "telegram, email), until stopped (docs/alerts.md)")
    notify.add_argument("--group", default=None,
                        help="the prefix of its consumer groups and transactional ids: one process per group (env "
                             "NOTIFY_GROUP, default cryptopulse-notify)")
    notify.add_argument("--cap-per-minute", type=positive_int, default=None,
                        help="messages a minute per channel; beyond it one summary (env NOTIFY_CAP_PER_MINUTE, "
                             "default 30)")
    notify.add_argument("--give-up-hours", type=positive_float, default=None,
                        help="an alert still failing this long after it fired goes to the dead-letter topic (env "
                             "NOTIFY_GIVE_UP_HOURS, default 24)")
    notify.add_argument("--timeout-seconds", type=positive_float, default=None,
                        help="how long a receiver has to answer (env NOTIFY_TIMEOUT_SECONDS, default 10)")
    ret = sub.add_parser("retention", help="apply retention to every collection once and say what was deleted")
    ret.add_argument("--ticks-hours", type=positive_float, default=None, help="env RETENTION_TICKS_HOURS, default 48")
    ret.add_argument("--candles-days", type=positive_float, default=None,
                     help="every interval's candles (else each its own: env RETENTION_1M_DAYS ... RETENTION_1W_DAYS; "
                          "defaults 1m 30, 5m and 15m 180, 1h 730, 4h 1d 1w for ever)")
    return p


def notify_options(args: argparse.Namespace) -> NotifyOptions:
    """`streams notify`'s options, each from its flag, else its variable, else the default."""
    policy = Policy(
        cap_per_minute=args.cap_per_minute or int(env_number("NOTIFY_CAP_PER_MINUTE", 30, 1, 100_000, int)),
        give_up_after=3600 * (args.give_up_hours or env_number("NOTIFY_GIVE_UP_HOURS", 24, 0.0001, 24 * 365)),
        max_retry=env_number("NOTIFY_RETRY_MAX_SECONDS", 300, 1, 86_400))
    return NotifyOptions(group=args.group or "", policy=policy,
                         timeout=args.timeout_seconds or env_number("NOTIFY_TIMEOUT_SECONDS", 10, 0.1, 600),
                         telegram_api=env("TELEGRAM_API_URL", TELEGRAM_API))


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
    scrub_logs()  # the channels' secrets never reach a log line (cryptopulse/secrets.py)
    settings = Settings()
    if args.command == "retention":
        policy = Retention()
        policy = Retention(args.ticks_hours or policy.ticks_hours,
                           dict.fromkeys(INTERVALS, args.candles_days) if args.candles_days else policy.candle_days)
        job = RetentionJob(policy, RetentionReport(settings))
        with store.database(settings) as db:
            runs = job.run_due(db, everything=True)
        failed = [run for run in runs if run.error]
        for run in failed:
            print(f"streams: retention of {run.collection} failed: {run.error}", file=sys.stderr)
        print(json.dumps({run.collection: run.deleted for run in runs}))
        return 1 if failed else 0

    if args.command == "alerts":
        options = AlertOptions(group=args.group or "", from_end=not args.from_beginning)
        return run_until_signalled(lambda: AlertProcessor(settings, options))

    if args.command == "notify":
        return run_until_signalled(lambda: NotifyProcessor(settings, notify_options(args)))

    only = frozenset(s.strip().upper() for s in args.only_symbols.split(",")) if args.only_symbols else None
    options = ProcessorOptions(
        group=args.group or "", grace_ms=int(args.grace_seconds * 1000), update_every=args.update_seconds,
        idle_close=args.idle_close_seconds,
        only_symbols=only, from_end=args.from_end, close_on_stop=args.close_on_stop,
        retention_every=None if args.no_retention else args.retention_minutes * 60)
    every = args.cascade_update_seconds
    group = options.group or settings.streams_group

    def cascade() -> CascadeProcessor:
        book = CascadeBook(update_every=(lambda _interval: every) if every else default_update_every)
        return CascadeProcessor(settings, f"{group}-cascade", from_end=args.from_end, only_symbols=only, book=book,
                                close_on_stop=args.close_on_stop)

    return run_until_signalled(lambda: Processor(settings, options), cascade)


if __name__ == "__main__":
    sys.exit(main())
