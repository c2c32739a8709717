"""The console scripts' contract (cryptopulse/commands.py): a bad option, a bad environment value, a busy port
or an unresolvable host ends the command with one line on stderr and a non-zero exit, never a traceback.

Every case fails before anything is started or reached, so no service is needed.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


def run(*cmd: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environment, stdin=subprocess.DEVNULL)


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
]


@pytest.mark.parametrize(("cmd", "env"), BAD, ids=[" ".join(c) + "".join(f" {k}={v}" for k, v in e.items())
                                                   for c, e in BAD])
def test_a_bad_option_or_environment_value_is_one_line_and_a_non_zero_exit(cmd, env):
    result = run(*cmd, **env)
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(cmd[0]), result.stderr


@pytest.mark.parametrize("cmd", [["producer", "sources"], ["control", "stack", "status"]])
def test_a_bad_symbol_list_does_not_break_commands_that_do_not_use_it(cmd):
    result = run(*cmd, SYMBOLS=",")
    assert "Traceback" not in result.stderr and result.returncode in (0, 3), result


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
