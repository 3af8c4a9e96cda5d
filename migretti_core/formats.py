"""``--format`` options that make a command write a document, and where it goes.

While a command writes a document (JSON, GitHub annotations, a plugin's format) on stdout,
stdout belongs to that document: ``mg`` sends what plugins print meanwhile to stderr (see
``cli``), and the command writes its document to ``result_stream()``. A light module: the
builtins that declare such an option import it at startup.
"""

from __future__ import annotations

import sys
from typing import TextIO

import click


class DocumentChoice(click.Choice):  # type: ignore[type-arg]
    """The choices of a ``--format`` option of mg's own; every value but ``text`` writes a
    document. An option that does not expose its value keeps it in
    ``ctx.meta["output_format"]``."""


def result_stream() -> TextIO:
    """Where the running command writes its result: stdout, also while plugins' prints are
    sent to stderr."""
    ctx = click.get_current_context(silent=True)
    app = ctx.find_root().obj if ctx is not None else None
    stream: TextIO | None = getattr(app, "result_stream", None)
    return stream or sys.stdout
