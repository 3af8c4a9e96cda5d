"""Durations as people write them (``30``, ``30s``, ``500ms``, ``2m``, ``1h``, ``1m30s``)
and as mg shows elapsed time (``5s``, ``1m05s``, ``2h03m``)."""

from __future__ import annotations

import re

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|s|m|h)\s*")


# PostgreSQL's lock_timeout and statement_timeout are int milliseconds: about 24.8 days.
_SERVER_TIMEOUT_MAX_MS = 2_147_483_647


def parse_server_timeout(text: str | float | int) -> float:
    """Seconds for a timeout PostgreSQL applies (``table_lock_timeout``,
    ``statement_timeout``): a duration it can hold, else ValueError."""
    seconds = parse_duration(text)
    if round(seconds * 1000) > _SERVER_TIMEOUT_MAX_MS:
        raise ValueError(
            f"duration {text!r} is longer than PostgreSQL allows "
            f"({_SERVER_TIMEOUT_MAX_MS}ms, about 24 days)"
        )
    return seconds


def parse_duration(text: str | float | int) -> float:
    """Seconds; raises ValueError for anything else, including negative values."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text != text:  # NaN: every comparison with it is false, so a wait would never end
            raise ValueError(f"invalid duration {text!r}: not a number")
        if text == float("inf"):
            raise ValueError(f"invalid duration {text!r}: infinite")
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: negative")
        return float(text)
    text = str(text)
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty duration")
    if re.fullmatch(_NUMBER, stripped):
        return float(stripped)
    total = 0.0
    position = 0
    while position < len(text):
        part = _PART.match(text, position)
        if part is None or part.end() == position:
            raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 500ms, 2m or 1h)")
        total += float(part.group(1)) * _UNITS[part.group(2)]
        position = part.end()
    return total


def format_elapsed(seconds: float) -> str:
    """Elapsed time for progress lines: ``5s``, ``1m05s``, ``2h03m`` (whole units, cut)."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"
