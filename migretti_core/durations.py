"""Durations as people write them: ``30``, ``30s``, ``2m``, ``1h``, ``500ms``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|)\s*$", re.IGNORECASE)


def parse_duration(value: str | float | int) -> float:
    """Seconds for a duration; raises ValueError with a readable message."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 1h, 500ms)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]
