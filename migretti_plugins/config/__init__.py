"""Builtin ``config``: mg.yaml with profiles, interpolation and ``.env``."""

from __future__ import annotations

from migretti_core import hookimpl
from migretti_core.types import Config, ConfigRequest


@hookimpl(trylast=True)
def mg_load_config(request: ConfigRequest) -> Config:
    from migretti_plugins.config.loader import load_config

    return load_config(request)
