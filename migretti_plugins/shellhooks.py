"""Builtin `shellhooks`."""
