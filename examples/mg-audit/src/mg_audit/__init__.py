"""mg-audit: ``mg audit`` and a local JSON-lines audit file for migretti."""

__version__ = "0.2.0"
