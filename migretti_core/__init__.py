"""Migretti core: hook specifications, plugin manager, engine and CLI.

Plugin authors import ``hookimpl`` from here to mark their implementations.
"""

import pluggy

__version__ = "1.0.0"

PROJECT_NAME = "migretti"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
