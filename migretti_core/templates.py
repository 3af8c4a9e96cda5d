"""The mg.yaml files ``mg init`` writes. They never hold a plaintext password."""

from __future__ import annotations

_COMMON_TAIL = """
# Where migration files live (relative to this file).
migrations_dir: migrations
seeds_dir: seeds

# How long to wait for another mg holding the migration lock.
# lock_timeout: 10m

# Shell hooks, run in this directory with PGHOST, PGPORT, PGUSER, PGDATABASE and
# PGPASSWORD set, for example a backup before every apply:
# hooks:
#   pre_apply: pg_dump --schema-only --file backup-before-apply.sql

# Profiles are merged over the settings above: mg --env prod apply
# A profile named prod, production or live (or with protected: true) asks for confirmation.
# envs:
#   prod:
#     database:
#       host: db.example.com
#       sslmode: require
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
  # Or one URL instead of the keys above:
  # url: postgresql://app:${DB_PASSWORD}@db.example.com:5432/app
"""
        + _COMMON_TAIL
    )


def embedded_config() -> str:
    return (
        """# migretti configuration: a PostgreSQL server that mg starts itself,
# with its data in .mg/pgdata next to this file (pip install 'migretti[embedded]').
# `mg db url` prints a connection URL for psql or your application.
database:
  embedded: true
"""
        + _COMMON_TAIL
    )
