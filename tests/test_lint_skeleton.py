"""The skeleton of a large section and the string lengths it is mapped back with
(``linter._skeleton``, split a chunk at a time): the same at every chunk size as splitting
the whole at its quotes."""

from __future__ import annotations

import itertools
import random

import pytest

from migretti_plugins.lint import linter


def _whole(sql: str) -> tuple[str, list[int]] | None:
    """The reference: the whole text split at its quotes at once."""
    if sql.count("'") % 2:
        return None
    pieces = sql.split("'")
    inside = list(itertools.accumulate(map(len, pieces[1::2]), initial=0))
    return "\x00".join(pieces[0::2]), inside


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64, 1 << 20])
def test_skeleton_and_string_lengths_at_every_chunk_size(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linter, "_SPLIT_CHUNK", chunk)
    rnd = random.Random(chunk)
    texts = ["", "'", "''", "a;b", "'';''", "x 'it''s' y;", "'a' 'b'c'd'"]
    texts += ["".join(rnd.choice("ab ;'\n") for _ in range(rnd.randint(0, 80))) for _ in range(300)]
    for text in texts:
        expected = _whole(text)
        found = linter._skeleton(text)
        if expected is None or found is None:
            assert found is None and expected is None, text
            continue
        skeleton, inside = found
        assert skeleton == expected[0], text
        # Asked out of order too: a chunk's lengths are worked out when first asked for.
        order = list(range(len(expected[1])))
        rnd.shuffle(order)
        assert [inside(k) for k in order] == [expected[1][k] for k in order], text
