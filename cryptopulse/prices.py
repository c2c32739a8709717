"""A price as people write it, for every place that prints one as text: rule descriptions (`control alerts`, the
dashboard's rule list, the logs) and alert messages.

`:g` wrote a rule at 10,000,000 as `1e+07` and one at a small coin's price as `1.234e-05`. Here: thousands grouped,
never an exponent, six significant digits (what a small coin needs: 0.00001234; 1.2345) but never less precise than
a cent (70,123.46, not 70,123.5), and no zeros that say nothing: a whole price is written whole (70,000, not
70,000.00), any other to its cents at least and no further zeros (3,345.70, 1.2345, not 1.234500).
"""

from __future__ import annotations

import math
from decimal import Decimal

SIGNIFICANT_DIGITS = 6
CENT_DECIMALS = 2


def price_text(value: float) -> str:
    """`10_000_000` -> `10,000,000`; `0.00001234` -> `0.00001234`; `1.2345` -> `1.2345`; `-1234.5` -> `-1,234.50`."""
    if not math.isfinite(value):
        return str(value)  # "nan", "inf": a bad value is named, never written as a made-up number
    if value == 0:
        return "0"  # also -0.0
    # the position of the first significant digit, from the shortest text that reads back as this float (exact,
    # where math.log10 may land a hair below a power of ten)
    first_digit = Decimal(repr(abs(value))).adjusted()
    decimals = max(CENT_DECIMALS, SIGNIFICANT_DIGITS - 1 - first_digit)
    whole, _, fraction = f"{value:,.{decimals}f}".partition(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction.ljust(CENT_DECIMALS, '0')}" if fraction else whole
