"""The one shape of ``mg: error: ...`` and ``mg: warning: ...`` lines on stderr.

Used by the output plugin, by the core before any plugin is loaded and whenever no plugin
reported a fatal error, so every such line looks the same wherever it comes from.

``printable`` is how a text that may hold control characters (a file name, a name in the
history, a server's message) is written to a terminal: a name such as
``0001_x\\x1b]0;title\\x07.sql`` must not retitle or redraw the terminal of whoever runs
``mg status``. JSON output keeps such text as it is (JSON escapes it).
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

# C0 and C1 controls and DEL, the marks that reorder text right to left, the line and
# paragraph separators, and lone surrogates (a file name's byte that is not UTF-8).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_CONTROL_BUT_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with each control character written as an escape, as Python's ``repr``
    writes it (``\\x1b``, ``\\r``, ``\\u202e``; a file name's byte that is not UTF-8 as
    ``\\xff``). With ``lines``, line breaks and tabs stay: for a message of several lines.
    """
    if text.isprintable():  # false for every character escaped here: the common case
        return text
    return (_CONTROL_BUT_LINES if lines else _CONTROL).sub(_escape, text)


def render(level: str, message: str, hint: str | None = None) -> str:
    """``mg: LEVEL: message`` (info and debug: the message alone), then ``  hint: ...``."""
    prefix = "" if level in ("info", "debug") else f"mg: {level}: "
    text = prefix + printable(message, lines=True)
    if hint:
        text += f"\n  hint: {printable(hint, lines=True)}"
    return text


def emit(level: str, message: str, hint: str | None = None, stream: TextIO | None = None) -> None:
    """Print one rendered message (stderr unless ``stream`` is given)."""
    print(render(level, message, hint), file=stream or sys.stderr, flush=True)


# What libpq and psycopg put around the server's words when a session ends under a query.
_LOST_PREFIXES = (
    "database connection failed: ",
    "consuming input failed: ",
    "sending query failed: ",
    "sending query and params failed: ",
)
_LOST_TAIL = "server closed the connection unexpectedly"


def lost_connection_reason(message: str) -> str:
    """The reason in a lost connection's error, without the client's framing: ``terminating
    connection due to administrator command`` from ``database connection failed: consuming
    input failed: terminating connection due to administrator command server closed the
    connection unexpectedly This probably means ...``; the message itself when it has none."""
    text = message
    for prefix in _LOST_PREFIXES:
        text = text.removeprefix(prefix)
    cut = text.find(_LOST_TAIL)
    if cut > 0:
        text = text[:cut]
    elif cut == 0:
        text = _LOST_TAIL
    text = text.strip().rstrip(".").strip()
    return text or message
