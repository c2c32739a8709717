"""`producer`: publish market ticks from a source to Kafka."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from itertools import islice

from cryptopulse.settings import Settings
from producer.publisher import TickPublisher
from producer.sources.simulated import SimulatedMarket

log = logging.getLogger("producer")

SOURCES = {"simulated": "a seeded random walk per symbol (offline, the default)"}
DEFAULT_SYMBOLS = "BTC,ETH,XRP"


def _symbols(text: str) -> list[str]:
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("give at least one symbol, e.g. BTC,ETH,XRP")
    return symbols


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="producer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="publish ticks until stopped (or --count ticks)")
    run.add_argument("--source", choices=sorted(SOURCES), default="simulated")
    run.add_argument("--symbols", type=_symbols, default=_symbols(DEFAULT_SYMBOLS),
                     help=f"comma-separated (default {DEFAULT_SYMBOLS})")
    run.add_argument("--seed", type=int, default=42, help="simulated market: random seed")
    run.add_argument("--interval-ms", type=int, default=1000,
                     help="simulated market: event time between two ticks of one symbol")
    run.add_argument("--count", type=int, default=None, help="stop after this many ticks")
    run.add_argument("--fast", action="store_true",
                     help="simulated market: publish as fast as possible; event times then end at now")
    run.add_argument("--start-ms", type=int, default=None, help="simulated market: event time of the first tick")
    sub.add_parser("sources", help="list the sources")
    return p


def run(args: argparse.Namespace, settings: Settings) -> int:
    now = int(time.time() * 1000)
    start = args.start_ms
    if start is None:
        steps = -(-args.count // len(args.symbols)) if (args.fast and args.count) else 0
        start = now - steps * args.interval_ms
    market = SimulatedMarket(args.symbols, seed=args.seed, start_ms=start, interval_ms=args.interval_ms)
    publisher = TickPublisher(settings)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("%s received: flushing and stopping", signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    log.info("publishing %s ticks for %s from source %s to %s",
             args.count or "endless", ",".join(args.symbols), args.source, settings.prices_topic)
    last_report = time.monotonic()
    for tick in islice(market.ticks(), args.count):
        if stopping:
            break
        if not args.fast:
            delay = (tick.ts - time.time() * 1000) / 1000
            if delay > 0:
                time.sleep(delay)
        publisher.publish(tick)
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            log.info("queued %d, delivered %d, failed %d", publisher.stats.queued,
                     publisher.stats.delivered, publisher.stats.failed)
    left = publisher.flush(60)
    stats = publisher.stats
    log.info("done: queued %d, delivered %d, failed %d, undelivered %d",
             stats.queued, stats.delivered, stats.failed, left)
    return 0 if stats.failed == 0 and left == 0 else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if args.command == "sources":
        for name, about in SOURCES.items():
            print(f"{name:12} {about}")
        return 0
    return run(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
