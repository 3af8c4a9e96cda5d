"""A server that stops answering once connected never holds mg for ever: every TCP connection
mg opens carries TCP keepalives and a user timeout (libpq's ``keepalives``,
``keepalives_idle``, ``keepalives_interval``, ``keepalives_count`` and ``tcp_user_timeout``),
on both connection paths, and a value the user gives wins.

Between mg and the suite's server (which listens on a Unix-domain socket only) sits a proxy on
127.0.0.1. While mg waits for the migration lock a session of the test holds, the test takes
a copy of mg's own socket from its process (``pidfd_getfd``, Linux 5.6 and later) and reads
the options libpq set on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from tcp_proxy import TcpProxy

from migretti_core.testing import AdvisoryLockHolder, Project, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"),
    reason="reads another process's socket with pidfd_getfd (Linux)",
)

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
PIDFD_GETFD = 438  # the same number on every architecture

DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60000,
}


@pytest.fixture
def proxy(db_conninfo: dict[str, str]) -> Iterator[TcpProxy]:
    forwarding = TcpProxy(db_conninfo)
    yield forwarding
    forwarding.close()


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url, configure=False)
    yield project
    project.close()


def tcp_url(db_conninfo: Mapping[str, str], proxy: TcpProxy, query: str = "") -> str:
    password = f":{db_conninfo['password']}" if db_conninfo.get("password") else ""
    url = f"postgresql://{db_conninfo['user']}{password}@127.0.0.1:{proxy.port}/"
    return url + db_conninfo["dbname"] + (f"?{query}" if query else "")


def socket_options(pid: int, port: int) -> list[dict[str, int]]:
    """The keepalive options of each TCP socket process ``pid`` holds to 127.0.0.1:``port``."""
    libc = ctypes.CDLL(None, use_errno=True)
    found = []
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            fd = libc.syscall(PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                if ctypes.get_errno() in (errno.EPERM, errno.ENOSYS):
                    pytest.skip("pidfd_getfd is not allowed here")
                continue
            with socket.socket(fileno=fd) as sock:
                try:
                    if sock.family != socket.AF_INET or sock.getpeername() != ("127.0.0.1", port):
                        continue
                    tcp = socket.IPPROTO_TCP
                    found.append(
                        {
                            "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                            "keepalives_idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
                            "keepalives_interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
                            "keepalives_count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
                            "tcp_user_timeout": sock.getsockopt(tcp, TCP_USER_TIMEOUT),
                        }
                    )
                except OSError:
                    continue
    except FileNotFoundError:  # the process ended
        pass
    finally:
        os.close(pidfd)
    return found


def options_while_waiting(
    project: Project, proxy: TcpProxy, *args: str, env: Mapping[str, str] | None = None
) -> list[dict[str, int]]:
    """Run ``mg ARGS`` while the migration lock is held; the options of its sockets to the
    proxy once it is connected and waiting; then let it finish (it must succeed)."""
    holder = AdvisoryLockHolder(project.database_url)
    try:
        job = project.spawn(*args, env=env)

        def waiting() -> bool:
            assert job.running(), job.stderr_so_far()
            return any("pg_try_advisory_lock" in query for _, _, query in project.other_backends())

        wait_until(waiting, timeout=60)
        options = socket_options(job.pid, proxy.port)
    finally:
        holder.release()
    done = project.finish(job, timeout=60)
    assert done.returncode == 0, done.stderr
    assert options, "no TCP connection of mg to the proxy"
    return options


@pytest.mark.parametrize("psycopg_only", [False, True], ids=["libpq", "psycopg"])
def test_a_tcp_connection_of_apply_carries_keepalives_and_a_user_timeout(
    project: Project, db_conninfo: dict[str, str], proxy: TcpProxy, psycopg_only: bool
) -> None:
    project.configure({"url": tcp_url(db_conninfo, proxy)})
    project.add("0001", "first", "CREATE TABLE first (id bigint);")
    env = {"MG_PSYCOPG_ONLY": "1"} if psycopg_only else None
    for options in options_while_waiting(project, proxy, "apply", env=env):
        assert options == DEFAULTS
    assert project.tables() == {"first"}


def test_a_tcp_connection_of_seed_carries_them_too(
    project: Project, db_conninfo: dict[str, str], proxy: TcpProxy
) -> None:
    project.configure({"url": tcp_url(db_conninfo, proxy)})
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_first.sql").write_text("CREATE TABLE seeded (id bigint);\n")
    for options in options_while_waiting(project, proxy, "seed"):
        assert options == DEFAULTS
    assert "seeded" in project.tables()


@pytest.mark.parametrize("psycopg_only", [False, True], ids=["libpq", "psycopg"])
def test_the_users_own_values_win(
    project: Project, db_conninfo: dict[str, str], proxy: TcpProxy, psycopg_only: bool
) -> None:
    url = tcp_url(db_conninfo, proxy, "keepalives_idle=45&tcp_user_timeout=12345")
    project.configure({"url": url, "keepalives_count": "7"})
    project.add("0001", "first", "CREATE TABLE first (id bigint);")
    env = {"MG_PSYCOPG_ONLY": "1"} if psycopg_only else None
    for options in options_while_waiting(project, proxy, "apply", env=env):
        assert options == {
            **DEFAULTS,
            "keepalives_idle": 45,
            "tcp_user_timeout": 12345,
            "keepalives_count": 7,
        }

    # keepalives off, as the user asked: libpq then sets no other option either, the user
    # timeout included (docs/configuration.md)
    project.configure({"url": tcp_url(db_conninfo, proxy, "keepalives=0")})
    project.add("0002", "second", "CREATE TABLE second (id bigint);")
    for options in options_while_waiting(project, proxy, "apply", env=env):
        assert options["keepalives"] == 0
        assert options["tcp_user_timeout"] == 0


def test_a_connection_services_values_win(
    project: Project, db_conninfo: dict[str, str], proxy: TcpProxy
) -> None:
    service_file = project.root / "pg_service.conf"
    lines = ["[target]", "host=127.0.0.1", f"port={proxy.port}", "keepalives_idle=50"]
    lines += [
        f"{key}={db_conninfo[key]}"
        for key in ("user", "dbname", "password")
        if db_conninfo.get(key)
    ]
    service_file.write_text("\n".join(lines) + "\n")
    project.configure({"service": "target"})
    project.add("0001", "first", "CREATE TABLE first (id bigint);")
    env = {"PGSERVICEFILE": str(service_file)}
    for options in options_while_waiting(project, proxy, "apply", env=env):
        assert options == {**DEFAULTS, "keepalives_idle": 50}
