"""A link that stops carrying mg's query: Ctrl-C and SIGTERM still end the run at once,
nothing applied and no lock left, on both connection paths.

Between ``mg`` and the server sits a proxy that forwards everything until the client has
sent a megabyte, then stops reading from it, as a saturated or dead link does while a large
migration is being sent.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project, wait_until

STALL_AFTER = 1 << 20


class StallingProxy:
    """TCP on 127.0.0.1 to the server at ``target`` (libpq keywords)."""

    def __init__(self, target: dict[str, str]) -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small fixed window (no autotuning): what the proxy does not read stays with mg.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _server(self) -> socket.socket:
        host, port = self.target["host"], int(self.target["port"])
        if host.startswith("/"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(f"{host}/.s.PGSQL.{port}")
        else:
            server = socket.create_connection((host, port))
        return server

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = self._server()
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        sent = 0
        try:
            while not self.closing.is_set():
                wanted = [server] if sent >= STALL_AFTER else [client, server]
                readable, _, _ = select.select(wanted, [], [], 0.1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client:
                        sent += len(data)
                        server.sendall(data)
                        if sent >= STALL_AFTER:
                            self.stalled.set()
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.closing.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def proxy(db_conninfo: dict[str, str]) -> Iterator[StallingProxy]:
    stalling = StallingProxy(db_conninfo)
    yield stalling
    stalling.close()


@pytest.mark.parametrize("psycopg_only", [False, True], ids=["libpq", "psycopg"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_a_large_migration_is_being_sent_ends_the_run(
    tmp_path: Path,
    database_url: str,
    db_conninfo: dict[str, str],
    proxy: StallingProxy,
    psycopg_only: bool,
    signum: int,
) -> None:
    project = Project(tmp_path / "proj", database_url, configure=False)
    through = {**db_conninfo, "host": "127.0.0.1", "port": str(proxy.port), "sslmode": "disable"}
    project.configure(database=through)
    project.add_table("0001")
    # 12 MB: more than the kernel's buffers between mg and the proxy hold (4 MB at most)
    rows = ",\n".join(f"({n}, '{'x' * 90}')" for n in range(120_000))
    project.add(
        "0002", "big", f"CREATE TABLE big (id int, t text);\nINSERT INTO big VALUES\n{rows};"
    )
    env = {"MG_PSYCOPG_ONLY": "1"} if psycopg_only else {}

    job = project.spawn("apply", "--no-lint", env=env)
    wait_until(lambda: proxy.stalled.is_set() or not job.running(), timeout=60)
    assert job.running(), job.stderr_so_far()
    done, _ = project.interrupt(job, signum, timeout=30)

    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "applied 0001" in done.stdout
    proxy.close()  # the server sees the session end
    project.wait_for_backends_to_end()
    assert project.statuses() == {"0001": "applied"}
    assert "big" not in project.tables()
    assert project.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
