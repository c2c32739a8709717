"""Secrets of the channels (cryptopulse/secrets.py): read from a variable or a file, and scrubbed from every text
the process writes, log lines of other libraries and tracebacks included."""

from __future__ import annotations

import logging

import pytest

from cryptopulse.errors import ConfigError
from cryptopulse.retries import failure_reason, retry_after_seconds
from cryptopulse.secrets import (
    Scrubber,
    ScrubFilter,
    check_reference,
    env_reference,
    file_reference,
    fill_placeholders,
    read_secret,
)


def test_a_secret_is_read_from_its_variable_or_file(monkeypatch, tmp_path):
    scrubber = Scrubber()
    monkeypatch.setenv("HOOK_SECRET", "abcd-1234-secret")
    assert read_secret("env:HOOK_SECRET", scrubber) == "abcd-1234-secret"
    path = tmp_path / "token"
    path.write_text("tok-from-file\n")
    assert read_secret(file_reference(str(path)), scrubber) == "tok-from-file"
    monkeypatch.delenv("HOOK_SECRET")
    with pytest.raises(ConfigError, match="HOOK_SECRET is not set") as said:
        read_secret("env:HOOK_SECRET", scrubber)
    assert "abcd" not in str(said.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_secret(f"file:{tmp_path}/missing", scrubber)
    with pytest.raises(ConfigError, match="NAME, never its value"):
        env_reference("abc def")
    with pytest.raises(ConfigError):
        check_reference("vault:x")


def test_every_remembered_value_is_scrubbed_from_text_and_placeholders_filled(monkeypatch):
    scrubber = Scrubber()
    monkeypatch.setenv("PATH_TOKEN", "T0KEN-in-the-path")
    url = fill_placeholders("https://hooks.example.com/${PATH_TOKEN}/x", scrubber)
    assert url == "https://hooks.example.com/T0KEN-in-the-path/x"
    assert scrubber.scrub(f"POST {url} failed") == "POST https://hooks.example.com/***/x failed"
    scrubber.remember("abc")  # too short to scrub safely: left alone
    assert scrubber.scrub("abcdef") == "abcdef"


def test_log_lines_and_tracebacks_are_scrubbed(caplog):
    scrubber = Scrubber()
    scrubber.remember("bot123:SECRET")
    handler = logging.Handler()
    lines: list[str] = []
    handler.emit = lambda record: lines.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(ScrubFilter(scrubber))
    logger = logging.getLogger("test.secrets")
    logger.addHandler(handler)
    try:
        logger.warning("POST /%s/sendMessage failed: %s", "bot123:SECRET", "refused")
        try:
            raise RuntimeError("url /bot123:SECRET/sendMessage")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert lines[0] == "POST /***/sendMessage failed: refused"
    assert "bot123:SECRET" not in "\n".join(lines) and "RuntimeError: url /***/sendMessage" in lines[1]


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("-3") == 0.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_a_failure_reason_is_the_networks_not_the_url():
    import requests

    try:
        requests.post("http://127.0.0.1:9/bot123:SECRET/sendMessage", timeout=2)
    except requests.RequestException as error:
        reason = failure_reason(error)
    assert "SECRET" not in reason and "Connection refused" in reason
