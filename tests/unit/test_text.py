"""cryptopulse/text.py: text from data made safe for a terminal and for a spreadsheet."""

from __future__ import annotations

import pytest

from cryptopulse.text import csv_safe, terminal_safe


@pytest.mark.parametrize(("text", "shown"), [
    ("BTC", "BTC"),
    ("€uro ünïcode 日本", "€uro ünïcode 日本"),  # printable letters of any script stay
    ("\x1b[2J", "\\x1b[2J"),  # clear the screen
    ("\x1b]52;c;cm0gLXJmIH4=\x07", "\\x1b]52;c;cm0gLXJmIH4=\\x07"),  # OSC 52: write the clipboard
    ("ok\rFAKE", "ok\\x0dFAKE"),  # a carriage return that would hide "ok"
    ("a\nb\tc", "a\\x0ab\\x09c"),
    ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
    ("\u202eevil", "\\u202eevil"),  # a bidi override
    ("\u2028", "\\u2028"),
    ("back\\slash", "back\\\\slash"),  # doubled: an escape cannot be forged
    ("\\x1b", "\\\\x1b"),
])
def test_terminal_safe_escapes_what_a_terminal_would_act_on(text, shown):
    assert terminal_safe(text) == shown
    assert all(ch.isprintable() for ch in terminal_safe(text))


@pytest.mark.parametrize(("value", "cell"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1", "'+1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("binance", "binance"), ("", ""),
    (-1.5, -1.5), (0, 0), (None, None),  # numbers stay numbers
])
def test_csv_safe_neutralises_text_a_spreadsheet_would_run(value, cell):
    assert csv_safe(value) == cell
