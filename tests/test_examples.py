"""The in-house webhook notifier of examples/notify_webhook, run as a user runs it.

The plugin file is copied beside mg.yaml and loaded through ``plugins:``; ``mg`` runs in a
subprocess against a real database and posts to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from migretti_core.testing import (
    make_config,
    make_hooks,
    make_migration,
    make_project,
    make_session,
    write_migration,
)
from migretti_core.types import Plan

REPO = Path(__file__).resolve().parents[1]
NOTIFIER = REPO / "examples" / "notify_webhook" / "notify_webhook.py"


class Webhook:
    """A chat-style webhook: records every JSON body posted to it."""

    def __init__(self, status: int = 204) -> None:
        self.messages: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                hook.messages.append(json.loads(body))
                hook.headers.append(dict(self.headers.items()))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/deploys"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[str]:
        return [m["event"] for m in self.messages]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def project(directory: Path, database_url: str, **notify: Any) -> Path:
    shutil.copy(NOTIFIER, directory / "notify_webhook.py")
    make_project(
        directory,
        database_url,
        plugins=["notify_webhook.py"],
        settings={"notify_webhook": notify},
    )
    return directory


def mg(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "migretti_core", *args],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def two_migrations(directory: Path) -> None:
    write_migration(
        directory, "0001", "users", "CREATE TABLE users (id bigint);", "DROP TABLE users;"
    )
    write_migration(
        directory, "0002", "posts", "CREATE TABLE posts (id bigint);", "DROP TABLE posts;"
    )


def tables(database_url: str) -> set[str]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_messages_for_apply_and_rollback_name_the_migrations(
    tmp_path: Path, database_url: str, webhook: Webhook
) -> None:
    project(tmp_path, database_url, url=webhook.url)
    two_migrations(tmp_path)

    applied = mg(tmp_path, "apply")
    assert applied.returncode == 0, applied.stderr
    assert webhook.events() == ["apply"]
    message = webhook.messages[0]
    assert [m["id"] for m in message["migrations"]] == ["0001", "0002"]
    assert [m["name"] for m in message["migrations"]] == ["users", "posts"]
    assert all(isinstance(m["duration_ms"], int) for m in message["migrations"])
    assert message["command"] == "apply"
    assert message["text"].startswith("migretti: applied 2 migrations")
    assert webhook.headers[0]["Content-Type"] == "application/json"

    rolled = mg(tmp_path, "rollback", "2")
    assert rolled.returncode == 0, rolled.stderr
    assert webhook.events() == ["apply", "rollback"]
    assert [m["id"] for m in webhook.messages[1]["migrations"]] == ["0002", "0001"]
    assert "warning" not in applied.stderr + rolled.stderr


def test_message_for_a_failing_migration(
    tmp_path: Path, database_url: str, webhook: Webhook
) -> None:
    project(tmp_path, database_url, url=webhook.url)
    two_migrations(tmp_path)
    write_migration(tmp_path, "0003", "broken", "CREATE TABLE comments (id int);\nSELEC 1;")

    result = mg(tmp_path, "apply")

    assert result.returncode == 1
    assert "0003_broken.sql:6" in result.stderr  # the migration's own error is intact
    assert "syntax error" in result.stderr
    assert webhook.events() == ["failure"]
    failure = webhook.messages[0]
    assert failure["migration"] == {"id": "0003", "name": "broken"}
    assert failure["planned"] == ["0001", "0002", "0003"]
    assert failure["direction"] == "up"
    assert "syntax error" in failure["error"]
    assert tables(database_url) == {"users", "posts", "_migrations", "_migrations_log"}


def test_failure_message_masks_the_password(
    tmp_path: Path, database_url: str, webhook: Webhook
) -> None:
    project(tmp_path, database_url, url=webhook.url)
    write_migration(tmp_path, "0001", "leak", "SELECT 'postgresql://app:hunter2@db/x'::int;")

    result = mg(tmp_path, "apply")

    assert result.returncode == 1
    assert webhook.events() == ["failure"]
    assert "hunter2" not in json.dumps(webhook.messages)


def test_a_webhook_that_is_down_gives_a_warning_and_the_result_stands(
    tmp_path: Path, database_url: str
) -> None:
    project(tmp_path, database_url, url=closed_port_url(), timeout=3)
    two_migrations(tmp_path)

    result = mg(tmp_path, "apply")

    assert result.returncode == 0, result.stderr
    assert "applied 0001 users" in result.stdout
    assert "applied 0002 posts" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert "notify_webhook" in warnings[0]
    assert "could not post the apply message to 127.0.0.1" in warnings[0]
    assert "Traceback" not in result.stderr
    assert {"users", "posts"} <= tables(database_url)


def test_a_webhook_that_is_down_never_hides_the_migration_error(
    tmp_path: Path, database_url: str
) -> None:
    project(tmp_path, database_url, url=closed_port_url(), timeout=3)
    write_migration(tmp_path, "0001", "broken", "SELEC 1;")

    result = mg(tmp_path, "apply")

    assert result.returncode == 1
    assert "0001_broken.sql:5" in result.stderr
    assert "could not post the failure message" in result.stderr


def test_a_webhook_answering_an_error_status_gives_a_warning(
    tmp_path: Path, database_url: str, webhook: Webhook
) -> None:
    webhook.status = 500
    project(tmp_path, database_url, url=webhook.url)
    two_migrations(tmp_path)

    result = mg(tmp_path, "apply")

    assert result.returncode == 0, result.stderr
    assert webhook.events() == ["apply"]
    assert "could not post the apply message" in result.stderr
    assert "Internal Server Error" in result.stderr


def test_events_and_headers_come_from_the_plugins_own_section(
    tmp_path: Path, database_url: str, webhook: Webhook
) -> None:
    project(
        tmp_path,
        database_url,
        url=webhook.url,
        events=["rollback"],
        headers={"Authorization": "Bearer ${HOOK_TOKEN}"},
    )
    two_migrations(tmp_path)

    assert mg(tmp_path, "apply", HOOK_TOKEN="s3cret").returncode == 0
    assert webhook.messages == []
    assert mg(tmp_path, "down", HOOK_TOKEN="s3cret").returncode == 0
    assert webhook.events() == ["rollback"]
    assert webhook.headers[0]["Authorization"] == "Bearer s3cret"


def test_an_empty_url_turns_notifications_off(tmp_path: Path, database_url: str) -> None:
    project(tmp_path, database_url, url="${HOOK_URL:-}")
    two_migrations(tmp_path)

    result = mg(tmp_path, "apply")

    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_a_mistake_in_its_section_is_a_configuration_error(
    tmp_path: Path, database_url: str, webhook: Webhook
) -> None:
    project(tmp_path, database_url, url=webhook.url, events=["deploy"])
    two_migrations(tmp_path)

    result = mg(tmp_path, "apply")

    assert result.returncode == 2
    assert "notify_webhook.events" in result.stderr
    assert tables(database_url) == set()


def test_it_is_listed_as_a_config_plugin(tmp_path: Path, webhook: Webhook) -> None:
    project(tmp_path, "postgresql://nobody@127.0.0.1:1/none", url=webhook.url)

    result = mg(tmp_path, "plugins", "--format", "json")

    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    notifier = listed["notify_webhook"]
    assert notifier["origin"] == "config"
    assert notifier["version"] == "1.0.0"
    assert notifier["status"] == "loaded"
    assert {"mg_after_apply", "mg_after_rollback", "mg_on_failure"} <= set(notifier["hooks"])


# --- the notifier's hooks called directly (docs/plugins/testing.md, level 1) ------------------


def load_notifier() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notify_webhook_under_test", NOTIFIER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_testing_guides_first_example_runs_with_the_tutorials_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docs/plugins/testing.md's level 1 test, as printed, on the plugin the tutorial builds:
    # its _target asks the postgres builtin for the target's description, uncaught.
    guide = (REPO / "docs" / "plugins" / "testing.md").read_text(encoding="utf-8")
    block = guide.split("## Level 1", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    notifier = load_notifier()
    monkeypatch.setattr(
        notifier, "_target", lambda session: session.hooks.describe_target(session).describe()
    )
    monkeypatch.setitem(sys.modules, "notify_webhook", notifier)
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/plugins/testing.md", "exec"), namespace)
    namespace["test_failure_message_masks_passwords"](monkeypatch)


def test_failure_message_masks_passwords_without_a_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notifier = load_notifier()
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(notifier, "post", lambda url, msg, headers, timeout: sent.append(msg))
    hooks = make_hooks(notifier, builtins=["output"])
    config = make_config(Path("/srv/app"), {"notify_webhook": {"url": "https://chat/x"}})
    session = make_session(hooks, config, command="apply")
    migration = make_migration("0001", "users", "CREATE TABLE users (id int);")

    hooks.on_failure(
        session,
        Plan("up", (migration,)),
        migration,
        "could not connect to postgresql://app:s3cret@db/app",
    )

    assert sent[0]["migration"] == {"id": "0001", "name": "users"}
    assert sent[0]["event"] == "failure"
    assert "s3cret" not in sent[0]["error"]
    assert "postgresql://app:" in sent[0]["error"]
