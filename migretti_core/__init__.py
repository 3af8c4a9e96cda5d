"""Migretti core: hook specifications, plugin manager, engine and CLI."""

__version__ = "1.0.0"
