"""The console scripts' contract (cryptopulse/commands.py): a bad option, a bad environment value, a busy port
or an unresolvable host ends the command with one line on stderr and a non-zero exit, never a traceback.

Every case fails before anything is started or reached, so no service is needed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess

import pytest

from cryptopulse.errors import ConfigError, SourceError
from cryptopulse.settings import check_urls
from producer.cli import reachable
from tests import children


def run(*cmd: str, **env: str) -> children.Finished:
    return children.run(cmd, timeout=60, env={**os.environ, **env}, stdin=subprocess.DEVNULL)


BAD = [
    (["producer", "run", "--count", "0"], {}),
    (["producer", "run", "--count", "-1"], {}),
    (["producer", "run", "--fallback-after", "-5"], {}),
    (["producer", "run", "--metrics-port", "70000"], {}),
    (["producer", "run"], {"PRODUCER_METRICS_PORT": "abc"}),
    (["producer", "run"], {"PRODUCER_FALLBACK": "yes"}),
    (["producer", "run"], {"PRODUCER_SOURCE": "kraken"}),
    (["producer", "run"], {"SYMBOLS": ","}),
    (["producer", "run", "--symbols", "BTC;ETH"], {}),
    (["producer", "run", "--interval-ms", "0"], {}),
    (["producer", "nonsense"], {}),
    (["producer", "run", "--source", "binance"], {"BINANCE_WS_URL": "not-a-url"}),
    (["producer", "run", "--source", "coinbase"], {"COINBASE_WS_URL": "https://ws-feed.exchange.coinbase.com"}),
    (["producer", "run"], {"SCHEMA_REGISTRY_URL": "127.0.0.1:8081"}),
    (["control", "status"], {"CONNECT_URL": "http://127.0.0.1:99999"}),
    (["control", "backfill", "--source", "coingecko"], {"COINGECKO_URL": "api.coingecko.com"}),
    (["control", "backfill", "--give-up-after", "0"], {}),
    (["control", "backfill"], {"BACKFILL_GIVE_UP_SECONDS": "soon"}),
    (["streams", "run"], {"STREAMS_GRACE_SECONDS": "soon"}),
    (["streams", "run"], {"STREAMS_IDLE_CLOSE_SECONDS": "-3"}),
    (["streams", "run", "--grace-seconds", "-1"], {}),
    (["streams", "retention", "--ticks-hours", "0"], {}),
    (["webui", "--port", "70000"], {}),
    (["webui", "--port", "http"], {}),
    (["webui"], {"WEBUI_PORT": "eighty"}),
    (["webui"], {"WEBUI_MAX_POINTS": "many"}),
    (["control", "backfill", "--hours", "-2"], {}),
    (["control", "backfill"], {"SYMBOLS": ","}),
    (["control", "backfill"], {"PRODUCER_SOURCE": "cmc"}),
    (["control", "stack", "logs", "kafka", "-n", "0"], {}),
    (["control", "frobnicate"], {}),
    (["control", "alerts", "add", "BTC", "sideways", "5"], {}),
    (["control", "alerts", "add", "BTC", "above", "-5"], {}),
    (["control", "alerts", "add", "BTC", "above", "lots"], {}),
    (["control", "alerts", "add", "BTC;ETH", "above", "5"], {}),
    (["control", "alerts", "add", "BTC", "move", "5"], {}),
    (["control", "alerts", "add", "BTC", "move", "5", "--minutes", "0"], {}),
    (["control", "alerts", "add", "BTC", "above", "5", "--minutes", "3"], {}),
    (["control", "alerts", "add", "BTC", "above", "5", "--source", "Bad Source"], {}),
    (["control", "alerts", "rm", "not-an-id"], {}),
    (["control", "alerts"], {}),
    (["control", "topics", "tail", "crypto-prices", "--n", "0"], {}),
    (["streams", "alerts", "--group"], {}),
]


@pytest.mark.parametrize(("cmd", "env"), BAD, ids=[" ".join(c) + "".join(f" {k}={v}" for k, v in e.items())
                                                   for c, e in BAD])
def test_a_bad_option_or_environment_value_is_one_line_and_a_non_zero_exit(cmd, env):
    result = run(*cmd, **env)
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(cmd[0]), result.stderr


@pytest.mark.parametrize("cmd", [["producer", "sources"], ["control", "stack", "status"]])
def test_a_bad_symbol_list_does_not_break_commands_that_do_not_use_it(cmd):
    result = run(*cmd, SYMBOLS=",")
    assert "Traceback" not in result.stderr and result.returncode in (0, 3), str(result)


def test_a_busy_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("webui", "--port", str(taken.getsockname()[1]), WEBUI_VIEWS="0",
                     KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "address already in use" in result.stderr.lower(), result.stderr


def test_an_unresolvable_host_is_one_line():
    result = run("webui", "--port", "0", WEBUI_HOST="no-such-host.invalid", WEBUI_VIEWS="0",
                 KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr


# Nothing listens on port 1: every service is down at once (what `control status` reports is beside the point here).
UNREACHABLE = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
               "CONNECT_URL": "http://127.0.0.1:1", "MONGODB_URI": "mongodb://127.0.0.1:1"}


def test_a_reader_that_went_away_ends_control_status_quietly(tmp_path):
    """`control status | head`: the pipe is closed before the report is written."""
    stderr = tmp_path / "status.stderr"
    proc = children.start(["control", "status"], stderr, stdout=subprocess.PIPE, env={**os.environ, **UNREACHABLE})
    proc.stdout.close()
    status = children.wait(proc, 60)
    error = stderr.read_text()
    assert status == 0 and "Traceback" not in error and not error.strip(), error


@pytest.mark.parametrize("value", ["https://api.coingecko.com/api/v3", "http://127.0.0.1:8081/apis/ccompat/v7",
                                   "http://a:8081,http://b:8081", ""])
def test_a_url_of_the_right_kind_passes(monkeypatch, value):
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", value)
    monkeypatch.setenv("BINANCE_WS_URL", "wss://stream.binance.com:9443")
    check_urls()


@pytest.mark.parametrize("value", ["not-a-url", "ws://127.0.0.1:8081", "http://", "http://h:port", "http://h:70000"])
def test_a_url_of_the_wrong_kind_names_its_variable(monkeypatch, value):
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", value)
    with pytest.raises(ConfigError, match="^SCHEMA_REGISTRY_URL="):
        check_urls()


class Silent:
    """A source that never yields (an exchange that accepted the connection and says nothing)."""

    name = "silent"

    async def ticks(self):
        await asyncio.sleep(3600)
        yield


class Refusing:
    """A source that stops at once with an error that has no message."""

    name = "refusing"

    async def ticks(self):
        raise SourceError("")
        yield


@pytest.mark.parametrize(("source", "cause"), [(Silent(), "(timed out)"), (Refusing(), "(SourceError)")])
def test_the_fallback_message_names_its_cause(caplog, source, cause):
    """It read "no tick within 60 s ()" when the error had no message."""
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(reachable(source, 0.05)) is None
    (message,) = [r.getMessage() for r in caplog.records if "no tick within" in r.getMessage()]
    assert message.endswith(cause) and "()" not in message, message
