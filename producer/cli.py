"""`producer`: publish market ticks from a source to Kafka, as Avro.

    producer run --source binance --symbols BTC,ETH,XRP [--fallback simulated]
    producer sources

Every option has an environment equivalent (PRODUCER_SOURCE, SYMBOLS, PRODUCER_FALLBACK,
PRODUCER_METRICS_PORT), so the same command serves docker compose and the native stack.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

from cryptopulse.commands import Parser, port_or_off, positive_float, positive_int, run_command, setup_logging
from cryptopulse.errors import ConfigError, SourceError
from cryptopulse.settings import DEFAULT_SYMBOLS, Settings, env, env_number, symbols
from cryptopulse.tick import Tick
from producer.metrics import ProducerMetrics, serve
from producer.publisher import TickPublisher
from producer.sources import SOURCES, Source, make_source, reject_reason

log = logging.getLogger("producer")

SUMMARY_EVERY = 30.0  # seconds between two metric lines in the log


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="producer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser("run", help="publish ticks until stopped (or --count ticks)")
    run.add_argument("--source", choices=sorted(SOURCES), default=None, help="env PRODUCER_SOURCE, default simulated")
    run.add_argument("--symbols", type=symbols, default=None,
                     help=f"comma-separated (default {DEFAULT_SYMBOLS}; env SYMBOLS)")
    run.add_argument("--fallback", choices=["simulated"], default=None,
                     help="when the source cannot be reached, publish the simulated market instead (marked so; "
                          "env PRODUCER_FALLBACK)")
    run.add_argument("--fallback-after", type=positive_float, default=60.0,
                     help="seconds without a first tick before the source counts as unreachable")
    run.add_argument("--count", type=positive_int, default=None, help="stop after publishing this many ticks")
    run.add_argument("--metrics-port", type=port_or_off, default=None,
                     help="serve /metrics here (0: any free port; -1: off; env PRODUCER_METRICS_PORT, default 9464)")
    sim = run.add_argument_group("simulated market")
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--interval-ms", type=positive_int, default=1000,
                     help="event time between two ticks of one symbol")
    sim.add_argument("--fast", action="store_true",
                     help="publish as fast as possible; with --count, event times then end at now")
    sim.add_argument("--start-ms", type=int, default=None, help="event time of the first tick")
    sub.add_parser("sources", help="list the sources")
    return p


def simulated(args: argparse.Namespace) -> Source:
    start = args.start_ms
    if start is None and args.fast and args.count:
        start = int(time.time() * 1000) - -(-args.count // len(args.symbols)) * args.interval_ms
    return make_source("simulated", args.symbols, seed=args.seed, start_ms=start, interval_ms=args.interval_ms,
                       fast=args.fast)


async def pump(ticks: AsyncIterator[Tick], publisher: TickPublisher, metrics: ProducerMetrics,
               count: int | None) -> None:
    """Validate and publish every tick until the stream ends, `count` is reached, or we are cancelled."""
    seen_reasons: set[str] = set()
    async for tick in ticks:
        metrics.received_tick(tick)
        reason = reject_reason(tick, int(time.time() * 1000))
        if reason:
            metrics.rejected[tick.source, tick.symbol, reason] += 1
            if reason not in seen_reasons:  # once per reason; the counter has the rest
                seen_reasons.add(reason)
                log.warning("rejected a %s tick for %s (%s); further ones are only counted", tick.source,
                            tick.symbol, reason)
            continue
        await publisher.publish(tick)
        metrics.published[tick.source, tick.symbol] += 1
        if count is not None and sum(metrics.published.values()) >= count:
            return


async def reachable(source: Source, seconds: float) -> AsyncIterator[Tick] | None:
    """The source's stream if it yields a first tick within `seconds` (that tick included), else None."""
    stream = aiter(source.ticks())
    try:
        first = await asyncio.wait_for(anext(stream), seconds)
    except (TimeoutError, SourceError, StopAsyncIteration) as error:
        log.error("%s: no tick within %.0f s (%s)", source.name, seconds,
                  str(error) or ("timed out" if isinstance(error, TimeoutError) else type(error).__name__))
        return None

    async def resumed() -> AsyncIterator[Tick]:
        yield first
        async for tick in stream:
            yield tick

    return resumed()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    source = simulated(args) if args.source == "simulated" else make_source(args.source, args.symbols)
    metrics = ProducerMetrics(source)
    publisher = TickPublisher(settings, stats=metrics.deliveries)
    metrics.outages = [publisher.kafka, publisher.registry]
    if args.metrics_port >= 0:
        try:
            server = serve(metrics, "127.0.0.1", args.metrics_port)
            log.info("metrics on http://127.0.0.1:%d/metrics", server.server_address[1])
        except OSError as error:
            log.warning("no /metrics: port %d: %s (choose another with --metrics-port)", args.metrics_port, error)

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)

    async def summaries() -> None:
        while True:
            await asyncio.sleep(SUMMARY_EVERY)
            log.info("%s", metrics.summary())

    reporter = asyncio.create_task(summaries())
    status = 0
    try:
        ticks = source.ticks()
        if args.fallback and source.name != "simulated":
            ticks = await reachable(source, args.fallback_after)
            if ticks is None:
                log.error("%s cannot be reached: FALLING BACK TO THE SIMULATED MARKET (ticks say source=simulated)",
                          source.name)
                source = metrics.source = simulated(args)
                ticks = source.ticks()
        log.info("publishing %s ticks for %s from %s to %s", args.count or "endless", ",".join(source.symbols),
                 source.name, settings.prices_topic)
        await pump(ticks, publisher, metrics, args.count)
    except asyncio.CancelledError:
        log.info("stopping: flushing what is queued")
    except SourceError as error:
        log.error("%s: %s", source.name, error)
        if not args.fallback:
            log.error("not falling back to simulated prices unless asked: add --fallback simulated")
        status = 1
    finally:
        reporter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    left = await publisher.drain(60)
    log.info("done: %s, undelivered %d", metrics.summary(), left)
    return status or (0 if metrics.deliveries.failed == 0 and left == 0 else 1)


def from_environment(args: argparse.Namespace) -> argparse.Namespace:
    """Fill what the command line left out from the environment, checked: a bad value names its variable."""
    source = args.source or os.environ.get("PRODUCER_SOURCE") or "simulated"
    if source not in SOURCES:
        raise ConfigError(f"PRODUCER_SOURCE={source!r}: choose one of {', '.join(SOURCES)}")
    fallback = args.fallback or os.environ.get("PRODUCER_FALLBACK") or None
    if fallback not in (None, "simulated"):
        raise ConfigError(f"PRODUCER_FALLBACK={fallback!r}: the only fallback is 'simulated' (or leave it unset)")
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = env_number("PRODUCER_METRICS_PORT", 9464, -1, 65535, int)
    return argparse.Namespace(**{**vars(args), "source": source, "fallback": fallback, "metrics_port": metrics_port,
                                 "symbols": args.symbols or symbols(env("SYMBOLS", DEFAULT_SYMBOLS))})


def main(argv: list[str] | None = None) -> int:
    return run_command("producer", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.command == "sources":
        for name, about in SOURCES.items():
            print(f"{name:10} {about}")
        return 0
    args = from_environment(args)
    setup_logging()
    return asyncio.run(run(args, Settings()))


if __name__ == "__main__":
    sys.exit(main())
