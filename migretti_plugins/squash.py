"""Builtin `squash`."""
