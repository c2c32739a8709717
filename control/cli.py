"""`control`: the operator's command line for CryptoPulse."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from pymongo.errors import PyMongoError

from control import alerts, backfill, channels, connectors, schemas, status, supervisor, tail, users
from control.stack import processes
from control.stack.components import components as stack_components
from cryptopulse import accounts, alert_channels, alert_rules, audit, topics
from cryptopulse.alert import KINDS, new_rule, rule_id, rule_kind, rule_minutes, rule_source, rule_symbol, rule_value
from cryptopulse.candle import INTERVALS
from cryptopulse.channel import KINDS as CHANNEL_KINDS
from cryptopulse.channel import Channel, channel_kind, channel_name, channel_names, new_channel, secret_option
from cryptopulse.commands import Parser, positive_float, positive_int, run_command, setup_logging
from cryptopulse.errors import ConfigError
from cryptopulse.kafka import error_text
from cryptopulse.redact import redact
from cryptopulse.secrets import placeholders, scrub_logs
from cryptopulse.settings import DEFAULT_SYMBOLS, Settings, StackLayout, env, env_number, symbols
from cryptopulse.text import terminal_safe

BACKFILL_SOURCES = ["simulated", "coingecko", "binance", "coinbase"]


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="control", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    stack_p = sub.add_parser("stack", help="the native stack: Kafka, registry, Connect, FerretDB")
    stack_sub = stack_p.add_subparsers(dest="action", required=True)
    stack_up = stack_sub.add_parser("up", help="install on first use, start what is not running, wait until ready")
    stack_up.add_argument("--brokers", type=positive_int, help="Kafka nodes (3: a cluster, topics replicated 3 "
                          "times); a state folder keeps the layout it first ran with (docs/scaling.md)")
    stack_up.add_argument("--connect-workers", type=positive_int, help="Kafka Connect workers in one group")
    stack_up.add_argument("--port-offset", type=int, help="move every port of the stack by this much (another "
                          "stack beside the default one)")
    stack_sub.add_parser("down", help="stop every component (data is kept)")
    stack_status = stack_sub.add_parser("status", help="what runs where, and its memory")
    stack_status.add_argument("--json", action="store_true")
    for action, about in (("hold", "keep a component down on purpose: the supervisor leaves it until `release`"),
                          ("release", "let the supervisor start a held component again")):
        held = stack_sub.add_parser(action, help=about)
        held.add_argument("component", choices=[c.name for c in stack_components(Settings())])
    logs_p = stack_sub.add_parser("logs", help="a component's log")
    logs_p.add_argument("component", choices=[c.name for c in stack_components(Settings())])
    logs_p.add_argument("-n", "--lines", type=positive_int, default=50)
    logs_p.add_argument("-f", "--follow", action="store_true")

    supervise = sub.add_parser("supervise", help="restart dead stack processes and FAILED connectors (runs until "
                               "stopped; `control stack up` starts it)")
    supervise.add_argument("--connectors-only", action="store_true",
                           help="only the connectors (under docker compose, restart policies keep the containers)")

    deploy = sub.add_parser("deploy-connectors", help="validate, then create or update every connectors/*.json")
    deploy.add_argument("--dry-run", action="store_true", help="validate and say what would change; apply nothing")

    status_p = sub.add_parser("status", help="services, connectors, lag, record counts, last ticks: one screen")
    status_p.add_argument("--json", action="store_true")

    schemas_p = sub.add_parser("schemas", help="inspect the schema registry")
    schemas_sub = schemas_p.add_subparsers(dest="action", required=True)
    schemas_sub.add_parser("list", help="subjects, versions, ids, compatibility level")
    show = schemas_sub.add_parser("show", help="one version, pretty-printed")
    show.add_argument("subject")
    show.add_argument("--version", default="latest")
    diff = schemas_sub.add_parser("diff", help="what changed between two versions, field by field")
    diff.add_argument("subject")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    check = schemas_sub.add_parser("check", help="may this .avsc be registered? (and why not)")
    check.add_argument("file", type=Path)
    check.add_argument("--subject", help="default: the prices topic's value subject for tick.avsc")

    backfill_p = sub.add_parser("backfill", help="fill the gaps of the last hours or days from a source's history, "
                                "at an interval: --days 365 --interval 1d for years of days")
    span = backfill_p.add_mutually_exclusive_group()
    span.add_argument("--hours", type=positive_float, default=None, help="the last H hours (the default: 24)")
    span.add_argument("--days", type=positive_float, default=None, help="the last D days")
    backfill_p.add_argument("--interval", choices=INTERVALS, default=INTERVALS[0],
                            help="the candles to fill (default 1m, with ticks); the coarser ones are rolled up from "
                            "them. Bounded by the interval's retention and the source's reach (docs/control.md)")
    backfill_p.add_argument("--symbols", type=symbols, default=None, help=f"default: env SYMBOLS or {DEFAULT_SYMBOLS}")
    backfill_p.add_argument("--source", default=None, choices=BACKFILL_SOURCES,
                            help="default: env PRODUCER_SOURCE or simulated")
    backfill_p.add_argument("--give-up-after", type=positive_float, default=None, metavar="SECONDS",
                            help="stop when the source has given no history for this long (default: env "
                            f"BACKFILL_GIVE_UP_SECONDS or {backfill.GIVE_UP_AFTER:g})")

    topics_p = sub.add_parser("topics", help="the project's topics")
    topics_sub = topics_p.add_subparsers(dest="action")
    topics_sub.add_parser("list", help="partitions, retention, records and size (the default)")
    topics_sub.add_parser("create", help="create the missing ones with the configured settings")
    partitions_p = topics_sub.add_parser(
        "partitions", help="raise a topic's partition count to N (never lower: Kafka cannot); docs/scaling.md")
    partitions_p.add_argument("topic")
    partitions_p.add_argument("count", type=positive_int, metavar="N")
    tail_p = topics_sub.add_parser("tail", help="a topic's last records decoded through the registry, one JSON "
                                   "object a line (key, partition, offset, timestamp, headers, value)")
    tail_p.add_argument("topic")
    tail_p.add_argument("--from-beginning", action="store_true", help="the first records instead of the last")
    tail_p.add_argument("--n", "-n", type=positive_int, default=10, help="how many records (default 10)")
    tail_p.add_argument("--follow", "-f", action="store_true", help="then print new records until Ctrl-C")

    alerts_p = sub.add_parser("alerts", help="price-alert rules (kept in Kafka; `streams alerts` evaluates them)")
    alerts_sub = alerts_p.add_subparsers(dest="action", required=True, parser_class=Parser)
    add = alerts_sub.add_parser("add", help="SYMBOL above|below PRICE, or SYMBOL move PCT --minutes N")
    # the checks are cryptopulse/alert.py's, shared with the dashboard's rule form (webui/rules.py)
    add.add_argument("symbol", type=checked(rule_symbol, "symbol"), help="the coin's ticker: BTC, ETH, ...")
    add.add_argument("condition", type=checked(rule_kind, "condition"), metavar="{" + ",".join(KINDS) + "}",
                     help="above or below a price, or a move of more than a percent within --minutes")
    add.add_argument("value", type=checked(rule_value, "value"), help="the price (above/below) or the percent (move)")
    add.add_argument("--minutes", type=checked(rule_minutes, "minutes"), default=None,
                     help="move: the window, in minutes")
    add.add_argument("--source", type=checked(rule_source, "source"), default=None,
                     help="only ticks of this source (default: any)")
    add.add_argument("--user", type=checked(accounts.user_name, "user"), default=None,
                     help="the dashboard account it belongs to (default: nobody's; with accounts only admins see it)")
    add.add_argument("--notify", type=checked(channel_names, "notify"), default=(), metavar="CHANNEL,...",
                     help="deliver its alerts to these channels (control channels list; `streams notify` delivers)")
    alerts_sub.add_parser("list", help="the rules in force")
    rm = alerts_sub.add_parser("rm", help="remove a rule by its id (any key `control alerts list` shows, even of a "
                               "record no processor takes)")
    rm.add_argument("id", help="the rule's id, as `control alerts list` shows it")
    deliveries = alerts_sub.add_parser("deliveries", help="what became of each alert on each channel, newest first "
                                       "(from MongoDB: crypto_db.alert_deliveries)")
    deliveries.add_argument("--rule", type=checked(rule_id, "rule"), default=None, help="only this rule's alerts")
    deliveries.add_argument("--n", "-n", type=positive_int, default=20, help="how many (alert, channel) (default 20)")

    channels_p = sub.add_parser("channels", help="where alerts are delivered: webhook, ntfy, telegram, email "
                                "(kept in Kafka; `streams notify` delivers)")
    channels_sub = channels_p.add_subparsers(dest="action", required=True, parser_class=Parser)
    add_channel = channels_sub.add_parser(
        "add", help="NAME webhook URL [--secret-env VAR] | NAME ntfy TOPIC_URL [--token-env VAR] | "
                    "NAME telegram --token-env VAR --chat ID | NAME email ADDRESS --smtp URL --password-env VAR")
    add_channel.add_argument("name", type=checked(channel_name, "name"))
    add_channel.add_argument("kind", type=checked(channel_kind, "kind"), metavar="{" + ",".join(CHANNEL_KINDS) + "}")
    add_channel.add_argument("target", nargs="?", default=None,
                             help="webhook: the URL; ntfy: the topic's URL; email: the address (telegram: --chat)")
    for stem, kinds in (("secret", "webhook: the key its bodies are signed with (HMAC-SHA256)"),
                        ("token", "ntfy: an access token (optional); telegram: the bot token"),
                        ("password", "email: the SMTP password")):
        add_channel.add_argument(f"--{stem}-env", metavar="VAR", default=None,
                                 help=f"{kinds}, read from this environment variable (its NAME is stored, never "
                                      "its value)")
        add_channel.add_argument(f"--{stem}-file", metavar="PATH", default=None, help=f"{kinds}, read from a file")
    add_channel.add_argument("--chat", default=None, help="telegram: the chat's id (or a public channel's @name)")
    add_channel.add_argument("--smtp", default=None, help="email: smtp://[user@]host[:port] (STARTTLS, port 587) or "
                             "smtps://[user@]host[:port] (TLS, 465); a user with @ is written %%40")
    add_channel.add_argument("--user", default=None,
                             help="the account it belongs to: only that account's rules may name it, only its pages "
                                  "(and admins') offer it; default: the operator's (admins and this command)")
    add_channel.add_argument("--from", dest="sender", default=None,
                             help="email: the From address (default: the SMTP user if it is an address, else the "
                                  "recipient)")
    channels_sub.add_parser("list", help="the channels, and the rules that name each")
    rm_channel = channels_sub.add_parser("rm", help="remove a channel no rule names any more")
    rm_channel.add_argument("name", type=checked(channel_name, "name"))
    test_channel = channels_sub.add_parser("test", help="send a test message and say what the receiver answered")
    test_channel.add_argument("name", type=checked(channel_name, "name"))
    users.add_parsers(sub, checked, Parser)
    return p


def checked(check: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type from one of cryptopulse.alert's checks (its ConfigError: argparse's one-line error)."""
    def parse(text: str) -> Any:
        try:
            return check(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = what
    return parse


def _print_stack(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    total = 0.0
    for row in rows:
        memory = f"{row['rss_mib']:.0f} MiB" if row["rss_mib"] else "-"
        total += row["rss_mib"] or 0
        print(f"{row['name']:10} {row['state']:10} {row['address']:16} pid {row['pid'] or '-':<8} {memory:>9}  "
              f"restarts {row['restarts']:<3} {row['log']}")
        if row["last_error"]:
            print(f"{'':10} {row['last_error']}")
    print(f"{'total':10} {'':10} {'':16} {'':12} {total:>5.0f} MiB")


def _schemas(args: argparse.Namespace, settings: Settings) -> int:
    registry = schemas.registry(settings)
    if args.action == "list":
        for row in registry.subjects():
            print(f"{row['subject']:44} versions {','.join(map(str, row['versions'])):10} "
                  f"latest v{row['latest_version']} id {row['latest_id']:<5} {row['compatibility']}")
    elif args.action == "show":
        version = registry.version(args.subject, args.version)
        print(f"# {version['subject']} version {version['version']}, id {version['id']}")
        print(json.dumps(version["schema"], indent=2))
    elif args.action == "diff":
        old, new = (registry.version(args.subject, v)["schema"] for v in (args.a, args.b))
        print("\n".join(schemas.diff(old, new)) or "no difference in fields")
    elif args.action == "check":
        subject = args.subject or f"{settings.prices_topic}-value"
        compatible, reasons = schemas.check(registry, subject, args.file)
        if compatible:
            print(f"{args.file} is compatible with the latest version of {subject}")
            return 0
        print(f"{args.file} is NOT compatible with the latest version of {subject}:")
        print("\n".join(f"  - {reason}" for reason in reasons))
        return 1
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "tail":
        tail.tail(settings, args.topic, args.n, args.from_beginning, args.follow)
        return 0
    if args.action == "partitions":
        before = topics.add_partitions(settings, args.topic, args.count)
        if before == args.count:
            print(f"{args.topic} has {before} partitions already")
        else:
            print(f"{args.topic}: {before} -> {args.count} partitions. Keys now hash to other partitions: "
                  "a symbol's new ticks may go to another one than its earlier ticks (docs/scaling.md)")
        return 0
    if args.action == "create":
        created = topics.create_missing(settings)
        print(f"created: {', '.join(created)}" if created else "every topic exists")
        return 0
    for row in topics.describe(settings):
        if not row["exists"]:
            print(f"{row['topic']:24} missing (control topics create)  {row['about']}")
            continue
        size = f"{row['bytes'] / 2**20:.1f} MiB" if row["bytes"] is not None else "size n/a"
        print(f"{row['topic']:24} {row['partitions']} partition(s)  retention {row['retention']:>6}  "
              f"{row['cleanup.policy']:7} {row['records']:>10,} records  {size:>10}  {row['about']}")
    return 0


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "add":
        if args.user is not None:
            accounts.existing_user(settings, args.user)
        rule = alert_rules.add(settings, new_rule(args.symbol, args.condition, args.value, args.minutes, args.source,
                                                  channels=args.notify, owner=args.user))
        audit.record(settings, "rule_added", target=rule.id, user=rule.owner, detail=rule.describe())
        print(f"rule {rule.id}: {rule.describe()} (on {settings.alert_rules_topic}; `streams alerts` evaluates it"
              + ("; `streams notify` delivers its alerts)" if rule.channels else ")"))
    elif args.action == "list":
        print(alerts.render(alert_rules.read(settings)))
    elif args.action == "rm":
        key, rule = alert_rules.remove(settings, args.id)
        said = f": {rule.describe()}" if rule else " (a record no processor took)"
        audit.record(settings, "rule_removed", target=terminal_safe(key), user=rule.owner if rule else None,
                     detail=rule.describe() if rule else "a record no processor took")
        print(f"rule {terminal_safe(key)} removed{said}")
    elif args.action == "deliveries":
        print(channels.render_deliveries(channels.deliveries(settings, args.rule, args.n)))
    return 0


def _channels(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "add":
        stem = secret_option(args.kind)
        others = [f"--{o}-{w}" for o in ("secret", "token", "password") if o != stem for w in ("env", "file")
                  if getattr(args, f"{o}_{w}") is not None]
        if others:
            raise ConfigError(f"{args.kind}: {', '.join(others)} is not for this kind; give --{stem}-env "
                              f"(or --{stem}-file)")
        if args.user is not None:
            accounts.existing_user(settings, args.user)
        channel = alert_channels.add(settings, new_channel(
            args.name, args.kind, args.target, secret_env=getattr(args, f"{stem}_env"),
            secret_file=getattr(args, f"{stem}_file"), chat=args.chat, smtp=args.smtp, sender=args.sender,
            owner=args.user))
        audit.record(settings, "channel_added", target=channel.name, user=channel.owner, detail=channel.describe())
        print(f"channel {channel.name}: {channel.describe()} (on {settings.alert_channels_topic}; name it in a rule: "
              f"control alerts add BTC above 70000 --notify {channel.name})")
        missing = [n for n in _secret_variables(channel) if not os.environ.get(n)]
        if missing:
            print(f"note: {', '.join(missing)} is not set in this shell; `streams notify` reads it from its own "
                  "environment", file=sys.stderr)
    elif args.action == "list":
        used_by: dict[str, list[str]] = {}
        for rule in alert_rules.rules(settings):
            for name in rule.channels:
                used_by.setdefault(name, []).append(rule.id)
        print(channels.render(alert_channels.channels(settings), used_by))
    elif args.action == "rm":
        naming = [r.id for r in alert_rules.rules(settings) if args.name in r.channels]
        if naming:
            raise ConfigError(f"rules {', '.join(naming)} notify {args.name}: remove them first (control alerts rm "
                              "ID), then the channel")
        channel = alert_channels.remove(settings, args.name)
        audit.record(settings, "channel_removed", target=channel.name, user=channel.owner,
                     detail=channel.describe())
        print(f"channel {channel.name} removed: {channel.describe()}")
    elif args.action == "test":
        channel = alert_channels.find(settings, args.name)
        answer = channels.test(channel)
        print(channels.test_report(channel, answer))
        return 0 if answer.ok else 1
    return 0


def _secret_variables(channel: Channel) -> list[str]:
    """The environment variables a channel reads its secrets from."""
    names = placeholders(channel.target)
    if channel.secret_from is not None and channel.secret_from.startswith("env:"):
        names.append(channel.secret_from.removeprefix("env:"))
    return names


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "stack":
        if args.action == "up":
            current = StackLayout.of(settings.state_dir)
            wanted = StackLayout(brokers=args.brokers or current.brokers,
                                 connect_workers=args.connect_workers or current.connect_workers,
                                 port_offset=current.port_offset if args.port_offset is None else args.port_offset)
            processes.up(processes.set_layout(settings, wanted))
        elif args.action == "down":
            processes.down(settings)
        elif args.action == "status":
            rows = processes.status(settings)
            _print_stack(rows, args.json)
            return 0 if all(r["state"] == "ready" for r in rows) else 3
        elif args.action == "logs":
            processes.logs(settings, args.component, args.lines, args.follow)
        elif args.action == "hold":
            processes.hold(settings, args.component)
            print(f"{args.component}: held; the supervisor will not restart it until `control stack release "
                  f"{args.component}`")
        elif args.action == "release":
            processes.release(settings, args.component)
            print(f"{args.component}: released; the supervisor starts it within a few seconds if it is down")
    elif args.command == "supervise":
        return supervisor.main(settings, native=not args.connectors_only)
    elif args.command == "deploy-connectors":
        connectors.deploy(settings, dry_run=args.dry_run)
    elif args.command == "status":
        report = status.gather(settings)
        print(json.dumps(report, indent=2) if args.json else status.render(report))
    elif args.command == "schemas":
        return _schemas(args, settings)
    elif args.command == "topics":
        return _topics(args, settings)
    elif args.command == "alerts":
        return _alerts(args, settings)
    elif args.command == "channels":
        return _channels(args, settings)
    elif args.command in ("users", "tokens", "audit"):
        return users.run(args, settings)
    elif args.command == "backfill":
        args.symbols = args.symbols or symbols(env("SYMBOLS", DEFAULT_SYMBOLS))
        args.source = args.source or env("PRODUCER_SOURCE", "simulated")
        if args.source not in BACKFILL_SOURCES:
            raise ConfigError(f"PRODUCER_SOURCE={args.source!r}: back-fill from one of {', '.join(BACKFILL_SOURCES)}")
        give_up_after = args.give_up_after or env_number("BACKFILL_GIVE_UP_SECONDS", backfill.GIVE_UP_AFTER, 1, 1e6)
        hours = args.days * 24 if args.days else args.hours or 24
        filled = asyncio.run(backfill.backfill(settings, args.source, args.symbols, hours, give_up_after=give_up_after,
                                               interval=args.interval))
        print(backfill.summary(filled, args.interval))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("control", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.command == "supervise":  # a long-running process: its log lines carry times
        setup_logging(logging.INFO)
    else:
        setup_logging(logging.WARNING, times=False)
    scrub_logs()  # a channel's secret read by `control channels test` never reaches a log line
    settings = Settings()
    try:
        return run(args, settings)
    except KafkaException as error:
        print(f"control: Kafka at {settings.kafka_bootstrap} did not answer ({terminal_safe(error_text(error))}); "
              "start the stack with `control stack up`", file=sys.stderr)
    except PyMongoError as error:
        print(f"control: MongoDB at {redact(settings.mongodb_uri)} did not answer ({type(error).__name__}); "
              "start the stack with `control stack up`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
