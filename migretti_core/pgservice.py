"""What a libpq connection service (``pg_service.conf``) sets, read by libpq itself.

libpq fills the settings a connection does not give from its service first and from the
``PG*`` variables only after that. Programs mg starts (shell hooks) and what mg shows of its
target (the confirmation question, connection errors) follow the same order.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migretti_core.types import Target

# libpq's environment variables for the settings a service file may hold.
SERVICE_VARIABLES = (
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
    "PGOPTIONS", "PGAPPNAME", "PGCHANNELBINDING", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING",
    "PGSSLMODE", "PGSSLNEGOTIATION", "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY",
    "PGSSLCERTMODE", "PGSSLROOTCERT", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGREQUIREPEER",
    "PGREQUIREAUTH", "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE",
    "PGKRBSRVNAME", "PGGSSLIB", "PGGSSDELEGATION", "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
)  # fmt: skip

_UNSET = "\x01mg-unset"
_READ = (
    "import json, psycopg.pq as pq\n"
    "print(json.dumps({o.keyword.decode(): o.val.decode('utf-8', 'surrogateescape')"
    " for o in pq.Conninfo.get_defaults() if o.val is not None}))"
)


def service_in_effect(params: Mapping[str, object], environ: Mapping[str, str]) -> str | None:
    """The service a connection with ``params`` uses: its own ``service``, else PGSERVICE."""
    service = params.get("service")
    if isinstance(service, str) and service:
        return service
    return environ.get("PGSERVICE") or None


def service_settings(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    """libpq keyword -> value for what ``service`` sets (its search of pg_service.conf,
    ``PGSERVICEFILE`` and ``PGSYSCONFDIR`` as in ``environ``).

    Read in a child process by libpq's ``PQconndefaults`` with every ``PG*`` variable set to
    a marker, so what is not the marker came from the service (mg's own environment is never
    changed). Raises ValueError when the service cannot be read.
    """
    child = {k: v for k, v in environ.items() if not k.startswith("PG")}
    child.update(dict.fromkeys(SERVICE_VARIABLES, _UNSET))
    child["PGSERVICE"] = service
    for var in ("PGSERVICEFILE", "PGSYSCONFDIR"):
        if environ.get(var):
            child[var] = environ[var]
    import json
    import subprocess  # only with a service: mg's start-up does without them

    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ],
            env=child,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=30,
            check=False,
        )
        values = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        values = None
    if not isinstance(values, dict):
        raise ValueError(f"could not read connection service {service!r}")
    return {
        str(key): str(value)
        for key, value in values.items()
        if key != "service" and value not in ("", _UNSET)
    }


def passfile_passwords(params: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """The passwords libpq would take from the password file (``passfile``, ``PGPASSFILE``,
    else ``~/.pgpass``) for a connection with ``params`` (one per host it lists), without
    connecting; [] when no line matches or the file cannot be read.

    For masking only: a command that shows what the server says of the project's SQL without
    ever connecting to the target (``mg check``) must hide that password too. Lines match as
    libpq matches them: ``host:port:database:user:password``, ``*`` for any value, ``\\:``
    and ``\\\\`` escaped, a socket directory (or no host) read as ``localhost``.
    """

    path = params.get("passfile") or environ.get("PGPASSFILE")
    if not path:
        home = environ.get("HOME") or os.path.expanduser("~")
        path = os.path.join(home, ".pgpass")
    import stat

    try:
        # libpq reads only a regular file; a FIFO would block the open
        if not stat.S_ISREG(os.stat(path).st_mode):
            return []
        with open(path, "rb") as file:
            text = file.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return []

    def pick(key: str, var: str) -> str:
        return params.get(key) or environ.get(var) or ""

    user = pick("user", "PGUSER") or os_user()
    if not user:
        return []
    dbname = pick("dbname", "PGDATABASE") or user
    hosts = pick("host", "PGHOST").split(",")
    addrs = pick("hostaddr", "PGHOSTADDR").split(",")
    ports = (pick("port", "PGPORT") or "5432").split(",")
    wanted = []
    for index, host in enumerate(hosts):
        if not host and index < len(addrs):
            host = addrs[index]
        if not host or host.startswith("/") or host.startswith("@"):
            host = "localhost"
        port = ports[index] if index < len(ports) else ports[-1]
        wanted.append((host, port or "5432", dbname, user))
    entries = [_passfile_fields(line) for line in text.splitlines()]
    found = []
    for key in wanted:
        for fields in entries:
            if len(fields) >= 5 and all(
                have in ("*", want) for have, want in zip(fields[:4], key, strict=True)
            ):
                if fields[4]:
                    found.append(fields[4])
                break
    return found


def _passfile_fields(line: str) -> list[str]:
    """A password file's line split at its unescaped colons (``\\:`` and ``\\\\`` escaped);
    [] for a comment or a blank line. libpq ends the password at an unescaped colon too."""
    if not line.strip() or line.startswith("#"):
        return []
    fields = [""]
    escaped = False
    for char in line.rstrip("\r"):
        if escaped:
            fields[-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("")
        else:
            fields[-1] += char
    return fields


def target_of(params: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Target:
    """Where ``params`` lead, with libpq's fallbacks (a connection service, then the
    environment), for people to read: the target of a connection error or of the
    confirmation question, whichever builtin connects."""
    from migretti_core.types import Target

    env = os.environ if environ is None else environ
    service: Mapping[str, str] = {}
    name = service_in_effect(params, env)
    if name:
        with contextlib.suppress(ValueError):
            service = service_settings(name, env)

    def pick(key: str, var: str) -> str | None:
        return params.get(key) or service.get(key) or env.get(var) or None

    user = pick("user", "PGUSER") or os_user()
    return Target(
        host=pick("host", "PGHOST") or pick("hostaddr", "PGHOSTADDR"),
        port=pick("port", "PGPORT") or "5432",
        dbname=pick("dbname", "PGDATABASE") or user,
        user=user,
    )


def os_user() -> str | None:
    """The user libpq connects as when none is given; None when there is no telling."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return None
