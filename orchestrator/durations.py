"""Durations as people type them: 30s, 10m, 2h, 30d."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(\d{1,9})(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse(text: str) -> timedelta:
    """ValueError for anything else; OverflowError for one too long to compute with."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use 30s, 10m, 2h or 1d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})
