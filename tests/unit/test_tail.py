"""`control topics tail` (control/tail.py): bytes shown safely, records described without a registry for non-Avro."""

from __future__ import annotations

import json

from control.tail import describe, text_or_safe
from cryptopulse.text import safe_bytes


class FakeMessage:
    def __init__(self, value, key=b"k", headers=None) -> None:
        self._value, self._key, self._headers = value, key, headers

    def topic(self):
        return "t"

    def partition(self):
        return 0

    def offset(self):
        return 7

    def timestamp(self):
        return (1, 1_700_000_000_000)

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers


class NoRegistry:
    def decode(self, data):
        raise ValueError(f"not Confluent-framed Avro ({len(data)} bytes)")


def test_only_printable_ascii_is_shown_as_is():
    assert safe_bytes(b"ok \x1b[2J\x00\xff\\") == "ok \\x1b[2J\\x00\\xff\\\\"
    assert safe_bytes(b"a" * 600).endswith("... (600 bytes)")
    assert text_or_safe("€uro".encode()) == "€uro" and text_or_safe(b"\x07bell") == "\\x07bell"
    assert text_or_safe(None) is None


def test_a_dead_letter_is_described_with_its_headers_and_escaped_bytes():
    message = FakeMessage(b"\x1b]0;pwned\x07", headers=[("__connect.errors.exception.message", b"boom\n")])
    row = describe(message, NoRegistry())
    text = json.dumps(row, ensure_ascii=True)
    assert "\x1b" not in text and "\x07" not in text
    assert row["raw"] == "\\x1b]0;pwned\\x07" and row["value_error"].startswith("not Confluent-framed")
    assert row["headers"]["__connect.errors.exception.message"] == "boom\\x0a"
    assert row["timestamp"] == "2023-11-14T22:13:20.000Z" and row["offset"] == 7


def test_a_tombstone_has_a_null_value():
    assert describe(FakeMessage(None), NoRegistry())["value"] is None


class FakeRegistry:
    def __init__(self, record) -> None:
        self.record = record

    def decode(self, data):
        return 42, self.record


def test_decoded_strings_and_header_names_reach_the_terminal_escaped():
    # A symbol or source holding OSC 52 (write the clipboard), ESC[2J (clear) or a CR, and a header name with ESC:
    # `jq -r` prints JSON strings raw, so the line itself must hold none of them.
    record = {"symbol": "BTC\x1b]52;c;cm0gLXJmIH4=\x07", "source": "\x1b[2J\rbinance",
              "nested": {"\x1bkey": ["\u202eevil"]}, "price": 1.5}
    message = FakeMessage(b"\x00avro", headers=[("name\x1b[31m", b"v")])
    row = describe(message, FakeRegistry(record))
    decoded = json.loads(json.dumps(row))  # what jq -r would print
    for text in _strings(decoded):
        assert not any(ch in text for ch in ("\x1b", "\x07", "\r", "\u202e")), text
    assert row["value"]["symbol"] == "BTC\\x1b]52;c;cm0gLXJmIH4=\\x07" and row["value"]["price"] == 1.5
    assert row["value"]["nested"] == {"\\x1bkey": ["\\u202eevil"]}
    assert list(row["headers"]) == ["name\\x1b[31m"]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
