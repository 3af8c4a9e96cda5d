"""Connection settings libpq refuses only when it connects: checked when they are read, so a
wrong value is the configuration error it is (exit 2), not a failure to connect (exit 1).

Kept in the core because every builtin that takes a connection string (the ``postgres``
plugin, ``mg check``'s scratch server) checks it the same way.
"""

from __future__ import annotations

import re

# Values libpq takes only from a closed list, refused only when connecting ("invalid sslmode
# value"); a value a newer libpq adds must be added here too.
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
}

# Integer settings, refused only when connecting ("invalid integer value"), with their unit.
_WHOLE_NUMBERS = {
    "keepalives": "1 on, 0 off",
    "keepalives_idle": "seconds",
    "keepalives_interval": "seconds",
    "keepalives_count": "probes",
    "tcp_user_timeout": "milliseconds",
}


def setting_problem(key: str, value: str) -> str | None:
    """Why libpq (or psycopg) would refuse ``value`` for ``key`` only when connecting, which
    would read as a connection failure (exit 1) although the setting is what is wrong; None
    when it takes it. A port list may leave an entry empty (that host's default port)."""
    if key == "port":
        for part in value.split(","):
            if part.strip() and not (re.fullmatch(r"\s*[0-9]+\s*", part) and 0 < int(part) < 65536):
                return "is not a port number (1 to 65535)"
    elif key == "connect_timeout":
        try:
            int(float(value))  # as psycopg reads it
        except (ValueError, OverflowError):
            return "is not a number of seconds"
    elif key in _WHOLE_NUMBERS:
        # libpq's parse_int_param: an int, spaces around it allowed
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value) or abs(int(value)) > 2**31 - 1:
            return f"is not a whole number ({_WHOLE_NUMBERS[key]})"
    elif key in _CHOICES and value not in _CHOICES[key]:
        import difflib

        close = difflib.get_close_matches(value.strip().lower(), _CHOICES[key], n=1)
        also = f"; did you mean {close[0]}?" if close else ""
        return f"is not one of {', '.join(_CHOICES[key])}{also}"
    return None


# What libpq puts before the server's own reason for a failed connection.
_LIBPQ_PREFIXES = (
    re.compile(r"^connection (?:failed|is bad): "),
    re.compile(
        r'^connection to server (?:at "[^"]*"(?: \([^)]*\))?, port \d+|on socket "[^"]*") '
        r"failed: "
    ),
    re.compile(r"^(?:FATAL|ERROR):\s+"),
)


def failure_lines(exc: BaseException) -> list[str]:
    """The non-blank lines of a failed connection's error, the first one reduced to the
    reason (``password authentication failed for user "u"``): libpq's words about where it
    tried and the severity go, as the target is named by the message that quotes it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return [type(exc).__name__]
    first = lines[0]
    for prefix in _LIBPQ_PREFIXES:
        first = prefix.sub("", first, count=1)
    return [first, *lines[1:]]
