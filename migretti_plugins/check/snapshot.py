"""The schema as PostgreSQL sees it, read from the catalogs in one query.

A snapshot maps an object's key (``"column public.users.email"``) to its properties
(``{"type": "text", "not null": true, ...}``) and to the key of the object it belongs to
(a column's table), so a diff can name objects instead of printing text.

Why catalog queries rather than ``pg_dump --schema-only``: one round trip per snapshot (a
round-trip check takes three per migration), no external binary whose major version must
match the server, and objects come out keyed, so "column public.users.nickname" is a fact
rather than a line of a text diff. ``mg schema dump`` uses pg_dump, where text is the point.

What is compared: schemas, tables (partitioning, persistence, row security, options,
inheritance), columns (type, default, nullability, identity, generated, collation),
constraints, indexes (definition and validity), views and materialized views (definitions),
sequences (and which column owns them), functions, procedures and aggregates (not the
constructors PostgreSQL makes for a range type, which the type stands for), triggers,
rules, types (enums with their labels in order, composites, domains, ranges), extensions,
row security policies and comments. Not compared: column order (PostgreSQL cannot put a
re-added column back in its place), owners and privileges, statistics, tablespaces, and the
objects of extensions. mg's own tables (``_migrations``, ``_migrations_log``,
``_migrations_seeds``) and everything attached to them are left out.

Definitions are printed with ``search_path`` set to ``pg_catalog`` (inside a savepoint that
is rolled back), so every name is schema-qualified whatever the connection's settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migretti_core.types import Session

MG_TABLES = ("_migrations", "_migrations_log", "_migrations_seeds")


@dataclass(frozen=True)
class SchemaObject:
    """One object of a snapshot: its properties and the key of the object it belongs to."""

    props: Mapping[str, Any]
    parent: str | None = None


Snapshot = dict[str, SchemaObject]


def _not_extension_member(catalog: str, oid: str) -> str:
    return (
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = "
        f"'pg_catalog.{catalog}'::pg_catalog.regclass AND e.objid = {oid} AND e.deptype = 'e')"
    )


_MG_TABLES_SQL = ", ".join(f"'{name}'" for name in MG_TABLES)

_PARTS = [
    # schemas
    f"""
SELECT 'schema ' || n.nspname, NULL, '{{}}'::jsonb
FROM ns n WHERE {_not_extension_member("pg_namespace", "n.oid")}""",
    # tables
    """
SELECT CASE WHEN r.relkind = 'f' THEN 'foreign table ' ELSE 'table ' END || r.qname, NULL,
  jsonb_build_object(
    'partitioned', r.relkind = 'p',
    'unlogged', r.relpersistence = 'u',
    'partition key', CASE WHEN r.relkind = 'p' THEN pg_get_partkeydef(r.oid) END,
    'partition bound', pg_get_expr(r.relpartbound, r.oid),
    'inherits', (SELECT jsonb_agg(p.oid::regclass::text ORDER BY i.inhseqno)
                 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                 WHERE i.inhrelid = r.oid),
    'row level security', r.relrowsecurity,
    'forced row level security', r.relforcerowsecurity,
    'options', to_jsonb(r.reloptions))
FROM rel r WHERE r.relkind IN ('r', 'p', 'f')""",
    # columns
    """
SELECT 'column ' || r.qname || '.' || a.attname,
  CASE WHEN r.relkind = 'f' THEN 'foreign table ' ELSE 'table ' END || r.qname,
  jsonb_build_object(
    'type', format_type(a.atttypid, a.atttypmod),
    'not null', a.attnotnull,
    'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
    'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
    'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
    'collation', CASE WHEN a.attcollation <> t.typcollation
                      THEN (SELECT quote_ident(c.collname) FROM pg_collation c
                            WHERE c.oid = a.attcollation) END)
FROM rel r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE r.relkind IN ('r', 'p', 'f')""",
    # constraints of tables (NOT NULL is the column's nullability on every version)
    """
SELECT 'constraint ' || r.qname || '.' || c.conname, 'table ' || r.qname,
  jsonb_build_object('definition', pg_get_constraintdef(c.oid, true))
FROM pg_constraint c JOIN rel r ON r.oid = c.conrelid
WHERE c.contype <> 'n'""",
    # indexes, except those a constraint owns (the constraint stands for them)
    """
SELECT 'index ' || quote_ident(n.nspname) || '.' || quote_ident(ic.relname),
  CASE WHEN r.relkind = 'm' THEN 'materialized view ' ELSE 'table ' END || r.qname,
  jsonb_build_object('definition', pg_get_indexdef(i.indexrelid), 'valid', i.indisvalid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN rel r ON r.oid = i.indrelid
WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid
                  AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x'))""",
    # views and materialized views
    """
SELECT CASE r.relkind WHEN 'v' THEN 'view ' ELSE 'materialized view ' END || r.qname, NULL,
  jsonb_build_object('definition', pg_get_viewdef(r.oid, true), 'options', to_jsonb(r.reloptions))
FROM rel r WHERE r.relkind IN ('v', 'm')""",
    # sequences, except identity columns' own (the column's identity stands for them)
    """
SELECT 'sequence ' || r.qname,
  (SELECT 'table ' || o.oid::regclass::text FROM pg_depend d JOIN pg_class o ON o.oid = d.refobjid
   WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.deptype = 'a'
     AND d.refclassid = 'pg_class'::regclass LIMIT 1),
  jsonb_build_object(
    'type', format_type(s.seqtypid, NULL), 'start', s.seqstart, 'increment', s.seqincrement,
    'minimum', s.seqmin, 'maximum', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle,
    'owned by', (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                 FROM pg_depend d
                 JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                   AND d.deptype = 'a' AND d.refclassid = 'pg_class'::regclass LIMIT 1))
FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
WHERE r.relkind = 'S' AND NOT EXISTS (
  SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_class'::regclass
    AND (d.deptype = 'i' OR d.refobjid IN (SELECT oid FROM mg)))""",
    # functions, procedures and aggregates
    f"""
SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
                      ELSE 'function ' END
  || quote_ident(n.nspname) || '.' || quote_ident(p.proname)
  || '(' || pg_get_function_identity_arguments(p.oid) || ')', NULL,
  jsonb_build_object(
    'definition', CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
    'result', pg_get_function_result(p.oid),
    'state function', (SELECT g.aggtransfn::text FROM pg_aggregate g WHERE g.aggfnoid = p.oid),
    'state type', (SELECT format_type(g.aggtranstype, NULL) FROM pg_aggregate g
                   WHERE g.aggfnoid = p.oid),
    'final function', (SELECT nullif(g.aggfinalfn::oid, 0)::regproc::text FROM pg_aggregate g
                       WHERE g.aggfnoid = p.oid))
FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
WHERE {_not_extension_member("pg_proc", "p.oid")}
  -- made by PostgreSQL with a type (a range's constructors): the type stands for them
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend i WHERE i.classid = 'pg_proc'::regclass
                  AND i.objid = p.oid AND i.deptype = 'i')""",
    # triggers
    """
SELECT 'trigger ' || r.qname || '.' || quote_ident(t.tgname), 'table ' || r.qname,
  jsonb_build_object('definition', pg_get_triggerdef(t.oid, true),
    'enabled', CASE t.tgenabled WHEN 'O' THEN 'yes' WHEN 'D' THEN 'no'
                                WHEN 'R' THEN 'replica only' WHEN 'A' THEN 'always'
                                ELSE t.tgenabled::text END)
FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid
WHERE NOT t.tgisinternal""",
    # rules other than views' own
    """
SELECT 'rule ' || r.qname || '.' || quote_ident(w.rulename), 'table ' || r.qname,
  jsonb_build_object('definition', pg_get_ruledef(w.oid, true))
FROM pg_rewrite w JOIN rel r ON r.oid = w.ev_class
WHERE w.rulename <> '_RETURN'""",
    # types: enums, composites, domains, ranges, base types
    f"""
SELECT 'type ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname), NULL,
  jsonb_build_object(
    'kind', CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'c' THEN 'composite'
                           WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range' ELSE 'base' END,
    'labels', CASE WHEN t.typtype = 'e' THEN
      (SELECT jsonb_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e
       WHERE e.enumtypid = t.oid) END,
    'attributes', CASE WHEN t.typtype = 'c' THEN
      (SELECT jsonb_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                        ORDER BY a.attnum)
       FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
         AND NOT a.attisdropped) END,
    'base type', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
    'not null', CASE WHEN t.typtype = 'd' THEN t.typnotnull END,
    'default', t.typdefault,
    'constraints', CASE WHEN t.typtype = 'd' THEN
      (SELECT jsonb_agg(c.conname || ': ' || pg_get_constraintdef(c.oid, true)
                        ORDER BY c.conname)
       FROM pg_constraint c WHERE c.contypid = t.oid AND c.contype <> 'n') END,
    'subtype', CASE WHEN t.typtype = 'r' THEN
      (SELECT format_type(g.rngsubtype, NULL) FROM pg_range g WHERE g.rngtypid = t.oid) END)
FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r')
  AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
  AND NOT (t.typtype = 'b' AND EXISTS (SELECT 1 FROM pg_type x WHERE x.typarray = t.oid))
  AND {_not_extension_member("pg_type", "t.oid")}""",
    # extensions
    """
SELECT 'extension ' || quote_ident(x.extname), NULL,
  jsonb_build_object('schema', x.extnamespace::regnamespace::text)
FROM pg_extension x""",
    # row security policies
    """
SELECT 'policy ' || r.qname || '.' || quote_ident(p.polname), 'table ' || r.qname,
  jsonb_build_object(
    'command', CASE p.polcmd WHEN '*' THEN 'ALL' WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
                             WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE'
                             ELSE p.polcmd::text END,
    'permissive', p.polpermissive,
    'roles', (SELECT jsonb_agg(x.name ORDER BY x.name) FROM
              (SELECT CASE WHEN u = 0 THEN 'public' ELSE pg_get_userbyid(u)::text END AS name
               FROM unnest(p.polroles) AS u) x),
    'using', pg_get_expr(p.polqual, p.polrelid),
    'with check', pg_get_expr(p.polwithcheck, p.polrelid))
FROM pg_policy p JOIN rel r ON r.oid = p.polrelid""",
    # comments on objects created by users (oids from 16384 on, and a comment other than
    # PostgreSQL's own on the public schema), not on extensions' objects;
    # each belongs to the object it describes (keyed as above), so it goes with that object
    # (a table on one side only, an ignored table)
    """
SELECT 'comment on ' || o.type || ' ' || o.identity, CASE d.classoid
  WHEN 'pg_class'::regclass THEN
    (SELECT CASE
       WHEN d.objsubid <> 0 AND c.relkind IN ('r', 'p', 'f')
         THEN 'column ' || q.qname || '.' || a.attname
       WHEN c.relkind IN ('r', 'p') THEN 'table ' || q.qname
       WHEN c.relkind = 'f' THEN 'foreign table ' || q.qname
       WHEN c.relkind = 'v' THEN 'view ' || q.qname
       WHEN c.relkind = 'm' THEN 'materialized view ' || q.qname
       WHEN c.relkind = 'S' THEN 'sequence ' || q.qname
       WHEN c.relkind IN ('i', 'I') THEN 'index ' || q.qname
       WHEN c.relkind = 'c' THEN 'type ' || q.qname END
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     CROSS JOIN LATERAL (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)) q (qname)
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
     WHERE c.oid = d.objoid)
  WHEN 'pg_trigger'::regclass THEN
    (SELECT 'trigger ' || r.qname || '.' || quote_ident(t.tgname)
     FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE t.oid = d.objoid)
  WHEN 'pg_policy'::regclass THEN
    (SELECT 'policy ' || r.qname || '.' || quote_ident(p.polname)
     FROM pg_policy p JOIN rel r ON r.oid = p.polrelid WHERE p.oid = d.objoid)
  WHEN 'pg_rewrite'::regclass THEN
    (SELECT 'rule ' || r.qname || '.' || quote_ident(w.rulename)
     FROM pg_rewrite w JOIN rel r ON r.oid = w.ev_class WHERE w.oid = d.objoid)
  WHEN 'pg_constraint'::regclass THEN
    (SELECT coalesce(
       (SELECT 'constraint ' || r.qname || '.' || c.conname FROM rel r WHERE r.oid = c.conrelid),
       (SELECT 'type ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = c.contypid))
     FROM pg_constraint c WHERE c.oid = d.objoid)
  WHEN 'pg_type'::regclass THEN
    (SELECT 'type ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname)
     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = d.objoid)
  WHEN 'pg_namespace'::regclass THEN
    (SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE n.oid = d.objoid)
  WHEN 'pg_proc'::regclass THEN
    (SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
                           ELSE 'function ' END
            || quote_ident(n.nspname) || '.' || quote_ident(p.proname)
            || '(' || pg_get_function_identity_arguments(p.oid) || ')'
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = d.objoid)
  END,
  jsonb_build_object('text', d.description)
FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
WHERE (d.objoid >= 16384
       -- the public schema comes with the database; a comment set on it is the user's
       OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = 2200
           AND d.description <> 'standard public schema'))
  AND d.classoid <> 'pg_extension'::regclass
  AND (o.schema IS NULL OR o.schema IN (SELECT nspname FROM ns))
  AND NOT (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM mg))
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid
                  AND e.objid = d.objoid AND e.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE d.classoid = 'pg_constraint'::regclass
                  AND c.oid = d.objoid AND c.conrelid IN (SELECT oid FROM mg))""",
]

SNAPSHOT_SQL = (
    """
WITH ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
),
mg AS (
  SELECT c.oid FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  WHERE c.relname IN ("""
    + _MG_TABLES_SQL
    + """) AND c.relkind IN ('r', 'p')
),
rel AS (
  SELECT c.*, quote_ident(ns.nspname) || '.' || quote_ident(c.relname) AS qname
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
    AND c.oid NOT IN (SELECT oid FROM mg)
    AND """
    + _not_extension_member("pg_class", "c.oid")
    + """
)
SELECT key, parent, props::text FROM ("""
    + "\nUNION ALL".join(_PARTS)
    + """
) AS objects (key, parent, props)"""
)


def take(session: Session, conn: Any) -> Snapshot:
    """The schema of the database ``conn`` is connected to, as of now (its own transaction
    included); nothing is changed."""
    hooks = session.hooks
    with hooks.transaction(session, conn, rollback=True):
        hooks.query(
            session, conn, "SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)"
        )
        rows = hooks.query(session, conn, SNAPSHOT_SQL)
    snapshot: Snapshot = {}
    for key, parent, props in rows:
        values = json.loads(props) if isinstance(props, str) else dict(props)
        snapshot[str(key)] = SchemaObject(
            # Only absent values go: a false flag or a zero is a value to show ("unlogged is
            # true in the database, false from the migrations"), never "(none)".
            {k: v for k, v in values.items() if v is not None},
            str(parent) if parent else None,
        )
    return snapshot
