"""A cheap look for entry points of one group, before paying for ``importlib_metadata``.

Every ``mg`` run reads the ``migretti`` entry-point group, and importing
``importlib_metadata`` costs more than the rest of ``mg --help``'s own work. Most
installations have no third-party plugin, so the ``entry_points.txt`` files of the
distributions on ``sys.path`` are read directly first: when none of them names the group,
there is nothing to load. Whenever the answer is not certain (a zip or egg on the path, a
finder that lists distributions in its own way), it says "maybe" and the caller asks
``importlib_metadata``, so what is loaded never depends on this shortcut.
"""

from __future__ import annotations

import os
import re
import sys

_METADATA_DIRS = (".dist-info", ".egg-info")


def may_have_entry_points(group: str) -> bool:
    """False only when no distribution on ``sys.path`` can declare entry points in ``group``."""
    if _other_distribution_finders():
        return True
    header = re.compile(rb"^[ \t]*\[[ \t]*" + re.escape(group.encode()) + rb"[ \t]*\]", re.M)
    for entry in sys.path:
        directory = entry or os.getcwd()
        try:
            scan = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            if os.path.isfile(directory):
                return True  # a zip archive or an egg file: let importlib_metadata read it
            continue
        except OSError:
            return True
        if directory.endswith(".egg"):
            scan.close()
            return True
        with scan:
            for item in scan:
                if not item.name.endswith(_METADATA_DIRS):
                    continue
                try:
                    # Unbuffered: one read of the whole file, without the buffer object
                    # nor the terminal check (ioctl) that a buffered open makes.
                    with open(
                        os.path.join(item.path, "entry_points.txt"), "rb", buffering=0
                    ) as handle:
                        text = handle.read()
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError:
                    return True
                if header.search(text):
                    return True
    return False


def _other_distribution_finders() -> bool:
    """Whether a finder on ``sys.meta_path`` lists distributions other than by path scanning."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if not hasattr(finder, "find_distributions") or finder is PathFinder:
            continue
        module = finder.__module__ if isinstance(finder, type) else type(finder).__module__
        if module.startswith("importlib_metadata"):
            continue  # its MetadataPathFinder scans the same sys.path entries
        return True
    return False
