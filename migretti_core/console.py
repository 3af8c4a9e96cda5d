"""The ``mg`` and ``migretti`` console scripts.

Apart from ``cli`` so that a Ctrl-C while Python is still importing the command line (its
first few dozen milliseconds) ends as every other Ctrl-C does: one line and exit 130, not a
traceback.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main() -> None:
    try:
        from migretti_core import cli
    except KeyboardInterrupt:
        sys.exit(_interrupted("--json-log" in sys.argv[1:]))
    cli.main()


def _interrupted(json_log: bool) -> int:
    if json_log:
        import json
        from datetime import datetime, timezone

        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "level": "error",
            "event": "command.failed",
            "message": "interrupted",
            # as every line of the JSON log (docs/logging.md), before a profile was selected
            "env": None,
            "dry_run": False,
            "error": "interrupted",
            "exit_code": EXIT_INTERRUPTED,
        }
        print(json.dumps(record), file=sys.stderr)
    else:
        print("mg: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED
