"""Builtin `embedded`."""
