"""What lint and the pre-flight checks of a large migration give back before its query is
built (docs/performance.md, "W2 memory"): pglast's library pages, dropped without changing
what the parser does."""

from __future__ import annotations

import os
import sys

import pytest

from migretti_core.textfiles import release_mapped_file, return_free_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/proc/self/smaps"),
    reason="reads /proc/self/smaps",
)


def _resident(path: str) -> tuple[int, int]:
    """KiB resident of ``path``'s mappings: (not writable, writable)."""
    read_only = writable = 0
    current: str | None = None
    with open("/proc/self/smaps", encoding="utf-8") as handle:
        for line in handle:
            first, _, rest = line.rstrip("\n").partition(" ")
            if "-" in first and not first.endswith(":"):
                fields = rest.split(maxsplit=4)
                current = fields[0] if len(fields) == 5 and fields[4] == path else None
            elif current is not None and first == "Rss:":
                if "w" in current:
                    writable += int(rest.split()[0])
                else:
                    read_only += int(rest.split()[0])
    return read_only, writable


SQL = "CREATE TABLE t (a int); INSERT INTO t VALUES (1, 'x'); SELECT a FROM t WHERE a = 1"


def test_the_parsers_pages_are_dropped_and_it_parses_the_same() -> None:
    pytest.importorskip("ctypes")
    from pglast import parser

    path = os.path.realpath(parser.__file__)
    before = parser.parse_sql_json(SQL)
    tokens = [token.name for token in parser.scan(SQL)]
    resident, writable = _resident(path)
    assert resident > 0

    release_mapped_file(parser.__file__)
    released, writable_after = _resident(path)
    assert released < resident
    assert writable_after == writable  # written pages (data, relocations) are left alone

    assert parser.parse_sql_json(SQL) == before
    assert [token.name for token in parser.scan(SQL)] == tokens
    return_free_memory()
    assert parser.parse_sql_json(SQL) == before


def test_a_file_not_mapped_or_no_path_is_a_no_op() -> None:
    release_mapped_file("")
    release_mapped_file("/nonexistent/library.so")
