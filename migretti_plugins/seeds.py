"""Builtin `seeds`."""
