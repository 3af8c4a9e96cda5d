"""Migretti's default behaviour, as ordinary plugins that can be blocked or replaced."""
