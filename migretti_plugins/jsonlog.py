"""Builtin ``jsonlog``: with ``--json-log``, every diagnostic is one JSON object per line on
stderr, with ``ts`` (RFC 3339), ``level``, ``event``, ``message`` and the event's context.

The event names and fields are listed in docs/logging.md.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

from migretti_core import hookimpl
from migretti_core.types import Event, Options


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

    return json.dumps(record, default=str, ensure_ascii=False)


@hookimpl
def mg_report(options: Options, event: Event) -> bool | None:
    if not options.json_log:
        return None
    sys.stderr.write(render(event) + "\n")
    sys.stderr.flush()
    return True
