"""The one shape of ``mg: error: ...`` and ``mg: warning: ...`` lines on stderr.

Used by the output plugin, by the core before any plugin is loaded and whenever no plugin
reported a fatal error, so every such line looks the same wherever it comes from.
"""

from __future__ import annotations

import sys
from typing import TextIO


def render(level: str, message: str, hint: str | None = None) -> str:
    """``mg: LEVEL: message`` (info and debug: the message alone), then ``  hint: ...``."""
    prefix = "" if level in ("info", "debug") else f"mg: {level}: "
    text = prefix + message
    if hint:
        text += f"\n  hint: {hint}"
    return text


def emit(level: str, message: str, hint: str | None = None, stream: TextIO | None = None) -> None:
    """Print one rendered message (stderr unless ``stream`` is given)."""
    print(render(level, message, hint), file=stream or sys.stderr, flush=True)
