"""Builtin ``jsonlog``: with ``--json-log``, every diagnostic is one JSON object per line on
stderr, with ``ts`` (RFC 3339), ``level``, ``event``, ``message`` and the event's context.

The event names and fields are listed in docs/logging.md.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from typing import Any

from migretti_core import hookimpl
from migretti_core.types import Event, Options

# What JSON leaves raw (it escapes only the C0 controls) but a terminal showing the log acts
# on: DEL, the C1 controls (U+009B is a one-character CSI), the marks that reorder text right
# to left, the line and paragraph separators, and lone surrogates (a file name's byte that is
# not UTF-8). Written as \uXXXX escapes, the same text to a JSON parser.
_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def render(event: Event) -> str:
    record: dict[str, Any] = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "level": event.level,
        "event": event.name,
        "message": event.message,
    }
    for key, value in event.fields.items():
        if key not in record:
            record[key] = value
    import json

    return _RAW.sub(_escape, json.dumps(record, default=str, ensure_ascii=False))


@hookimpl
def mg_report(options: Options, event: Event) -> bool | None:
    if not options.json_log:
        return None
    sys.stderr.write(render(event) + "\n")
    sys.stderr.flush()
    return True
