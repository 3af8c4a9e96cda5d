"""A link that stops carrying mg's query: Ctrl-C and SIGTERM still end the run at once,
nothing applied and no lock left, on both connection paths.

Between ``mg`` and the server sits a proxy that forwards everything until the client has
sent a megabyte, then stops reading from it, as a saturated or dead link does while a large
migration is being sent.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tcp_proxy import TcpProxy

from migretti_core.testing import Project, wait_until

STALL_AFTER = 1 << 20


@pytest.fixture
def proxy(db_conninfo: dict[str, str]) -> Iterator[TcpProxy]:
    # A small fixed window (no autotuning): what the proxy does not read stays with mg.
    stalling = TcpProxy(db_conninfo, stall_after=STALL_AFTER, receive_buffer=1 << 16)
    yield stalling
    stalling.close()


@pytest.mark.parametrize("psycopg_only", [False, True], ids=["libpq", "psycopg"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_a_large_migration_is_being_sent_ends_the_run(
    tmp_path: Path,
    database_url: str,
    db_conninfo: dict[str, str],
    proxy: TcpProxy,
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
