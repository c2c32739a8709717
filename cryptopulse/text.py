"""Text from data, made safe to print: on a terminal, in a log line, in a spreadsheet.

Data comes from exchanges, foreign producers and whoever can write a topic: a symbol, a source or a rule id may
hold terminal escape sequences (ESC [2J clears the screen, OSC 52 writes the clipboard), a carriage return that
hides what came before, or bidi controls that reorder what is shown. Every command and log line that prints data
goes through `terminal_safe`; every text cell of a CSV the API writes through `csv_safe`.
"""

from __future__ import annotations

RAW_LIMIT = 512


def terminal_safe(text: str) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, ESC, DEL, CR, LF, tab, line and
    paragraph separators, bidi and other format characters) written as an escape (\\x1b, \\u202e), and a backslash
    doubled, so the escapes cannot be forged: what a terminal shows is what the data holds."""
    if text.isprintable() and "\\" not in text:
        return text  # the usual case, at the cost of one scan
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_bytes(data: bytes, limit: int = RAW_LIMIT) -> str:
    """Bytes shown safely: printable ASCII as is (a backslash doubled), every other byte as \\xNN; cut after
    `limit` bytes."""
    shown = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else ("\\\\" if b == 0x5C else f"\\x{b:02x}")
                    for b in data[:limit])
    return shown + (f"... ({len(data)} bytes)" if len(data) > limit else "")


# What a spreadsheet reads as the start of a formula (CSV injection): = + - @, and tab and CR which some of them
# strip first (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A CSV cell: a text that a spreadsheet would take for a formula gets a leading apostrophe (shown as text,
    not run); numbers, and any other value, stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
