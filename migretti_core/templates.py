"""The mg.yaml files ``mg init`` writes. They never hold a plaintext password.

Every commented example in them works when uncommented as it stands (tests/test_init_templates.py
uncomments each one and runs mg with it), so none may depend on another or on an edit.
"""

from __future__ import annotations

_FILES = """
# Where migration files live (relative to this file).
migrations_dir: migrations
seeds_dir: seeds

# How long to wait for another mg holding the migration lock.
# lock_timeout: 10m
"""

_PROFILES = """
# Profiles are merged over the settings above: mg --env prod apply
# A profile named prod, production or live (or with protected: true) asks for confirmation.
# A url in a profile replaces the whole database section above.
"""


def server_config() -> str:
    return (
        """# migretti configuration.
# Values may use ${VAR}, ${VAR:-default}, and $${ for a literal ${.
# A .env file next to this file is loaded without overriding variables already set.
database:
  host: ${DB_HOST:-localhost}
  port: ${DB_PORT:-5432}
  user: ${DB_USER:-postgres}
  # Keep the password out of this file: set DB_PASSWORD in the environment or in .env.
  password: ${DB_PASSWORD:-}
  dbname: ${DB_NAME:-postgres}
  # Any other libpq parameter works too, e.g.:
  # sslmode: require
  # Or one url in place of all the keys above (see the prod profile below).
"""
        + _FILES
        + """
# Shell hooks, run in this directory with PGHOST, PGPORT, PGUSER, PGDATABASE and
# PGPASSWORD set, for example a backup before every apply:
# hooks:
#   pre_apply: pg_dump --schema-only --file backup-before-apply.sql
"""
        + _PROFILES
        + """# envs:
#   staging:
#     database:
#       host: staging.example.com
#   prod:
#     database:
#       url: postgresql://app:${DB_PASSWORD}@db.example.com:5432/app?sslmode=require
"""
    )


def embedded_config() -> str:
    return (
        """# migretti configuration: a PostgreSQL server that mg starts itself,
# with its data in .mg/pgdata next to this file (pip install 'migretti[embedded]').
# `mg db psql` opens psql on it; `mg db url` prints a connection URL for your application.
database:
  embedded: true
"""
        + _FILES
        + """
# Shell hooks, run in this directory with PGHOST, PGPORT, PGUSER and PGDATABASE set and
# the embedded server's pg_dump and psql first on PATH, for example a backup before every apply:
# hooks:
#   pre_apply: pg_dump --schema-only --file backup-before-apply.sql
"""
        + _PROFILES
        + """# Another server needs a url, or embedded: false and its host, user, ... keys.
# envs:
#   prod:
#     database:
#       url: postgresql://app:${DB_PASSWORD}@db.example.com:5432/app?sslmode=require
"""
    )
