"""The checks, over pglast's JSON parse tree (plain dicts: ten times cheaper than its AST objects).

Each check is registered for the parse node types it looks at, so one statement only meets
the few checks that can apply to it. A check calls ``ctx.flag(rule, message, location)``;
the context knows the migration (transactional or not), the tables created earlier in the
plan, the server version and the settings mg itself applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Node = dict[str, Any]
Check = Callable[["Context", Node], None]

CHECKS: dict[str, list[Check]] = {}


def check(*node_types: str) -> Callable[[Check], Check]:
    def register(func: Check) -> Check:
        for node_type in node_types:
            CHECKS.setdefault(node_type, []).append(func)
        return func

    return register


@dataclass
class Context:
    """What the checks know while walking one migration's statements in order."""

    transactional: bool
    server_version: int
    mg_lock_timeout: bool
    created: set[str]
    flag: Callable[[str, str, int | None], None] = field(repr=False)
    in_block: bool = False
    block_start: int | None = None
    current: int = 0
    lock_timeout_set: bool = False
    timeout_flagged: bool = False
    validated: set[str] = field(default_factory=set)
    validated_columns: set[tuple[str, str]] = field(default_factory=set)
    not_null_checks: dict[tuple[str, str], str] = field(default_factory=dict)
    not_valid: set[tuple[str, str]] = field(default_factory=set)
    dropped_constraints: set[tuple[str, str]] = field(default_factory=set)

    @property
    def in_transaction(self) -> bool:
        return self.transactional or self.in_block

    def is_new(self, relation: Node | None) -> bool:
        if not relation:
            return False
        return self._is_new(relation.get("schemaname"), relation.get("relname", ""))

    def is_new_name(self, name: str) -> bool:
        """Whether ``name`` (``table`` or ``schema.table``) was created earlier, as is_new."""
        schema, _, table = name.rpartition(".")
        return self._is_new(schema or None, table)

    def _is_new(self, schema: str | None, table: str) -> bool:
        # A name without a schema may mean a table created with one (the search_path decides),
        # and a table created without one may be named with its schema; two different schemas
        # written out are two different tables.
        if schema:
            return f"{schema}.{table}" in self.created or table in self.created
        return table in self.created or _ANY_SCHEMA + table in self.created

    def add_created(self, relation: Node) -> None:
        schema, table = relation.get("schemaname"), relation.get("relname", "")
        if schema:
            self.created.add(f"{schema}.{table}")
            self.created.add(_ANY_SCHEMA + table)
        else:
            self.created.add(table)


# Marks, in Context.created, the bare name of a table created with its schema.
_ANY_SCHEMA = "\0"


# --- helpers -----------------------------------------------------------------------------


def _same_table(one: Node, other: Node) -> bool:
    """Whether two names may mean one table: the same name, unless both give a schema and the
    schemas differ."""
    if one.get("relname") != other.get("relname"):
        return False
    schemas = (one.get("schemaname"), other.get("schemaname"))
    return not all(schemas) or schemas[0] == schemas[1]


def relation_name(relation: Node) -> str:
    schema = relation.get("schemaname")
    name = relation.get("relname", "")
    return f"{schema}.{name}" if schema else str(name)


def strings(items: list[Node] | None) -> list[str]:
    return [item["String"]["sval"] for item in items or () if "String" in item]


def type_of(type_name: Node | None) -> str:
    if not type_name:
        return ""
    names = strings(type_name.get("names"))
    return names[-1].lower() if names else ""


def unwrap(node: Node) -> tuple[str, Node]:
    for key, value in node.items():
        return key, value
    return "", {}


def constraints(column: Node) -> Iterator[Node]:
    for item in column.get("constraints") or ():
        if "Constraint" in item:
            yield item["Constraint"]


_STABLE_FUNCTIONS = frozenset(
    {
        "now",
        "current_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "current_date",
        "localtimestamp",
        "current_user",
        "session_user",
        "current_schema",
        "lower",
        "upper",
        "length",
        "coalesce",
        "to_json",
        "to_jsonb",
        "json_build_object",
        "jsonb_build_object",
        "json_build_array",
        "jsonb_build_array",
        "make_interval",
        "timezone",
    }
)


def non_volatile(expr: Node | None) -> bool:
    """True when a DEFAULT expression is surely not volatile (so PostgreSQL 11+ need not
    rewrite the table); unknown functions count as volatile."""
    if expr is None:
        return True
    kind, node = unwrap(expr)
    if kind in ("A_Const", "SQLValueFunction"):
        return True
    if kind == "TypeCast":
        return non_volatile(node.get("arg"))
    if kind == "A_Expr":
        return non_volatile(node.get("lexpr")) and non_volatile(node.get("rexpr"))
    if kind in ("BoolExpr", "CoalesceExpr", "MinMaxExpr"):
        return all(non_volatile(arg) for arg in node.get("args") or ())
    if kind == "A_ArrayExpr":
        return all(non_volatile(arg) for arg in node.get("elements") or ())
    if kind == "FuncCall":
        names = strings(node.get("funcname"))
        return (
            bool(names)
            and names[-1].lower() in _STABLE_FUNCTIONS
            and all(non_volatile(arg) for arg in node.get("args") or ())
        )
    return False


# --- column types --------------------------------------------------------------------------

_SERIALS = {
    "serial": "prefer-bigint-over-int",
    "serial4": "prefer-bigint-over-int",
    "smallserial": "prefer-bigint-over-smallint",
    "serial2": "prefer-bigint-over-smallint",
    "bigserial": None,
    "serial8": None,
}
_INT_RULES = {"int4": "prefer-bigint-over-int", "int2": "prefer-bigint-over-smallint"}


def column_type(ctx: Context, column: Node, type_name: Node | None = None) -> None:
    type_name = type_name if type_name is not None else column.get("typeName")
    name = type_of(type_name)
    location = (type_name or {}).get("location", column.get("location"))
    if name in _SERIALS:
        ctx.flag(
            "prefer-identity", f"serial type {name} for column {column.get('colname')!r}", location
        )
        small = _SERIALS[name]
        if small:
            ctx.flag(small, f"{name} column {column.get('colname')!r} can overflow", location)
    elif name in _INT_RULES:
        label = "integer" if name == "int4" else "smallint"
        ctx.flag(
            _INT_RULES[name], f"{label} column {column.get('colname')!r} can overflow", location
        )
    elif name == "varchar" and (type_name or {}).get("typmods"):
        ctx.flag(
            "prefer-text-field",
            f"varchar(n) column {column.get('colname')!r}: changing n later takes an "
            "ACCESS EXCLUSIVE lock",
            location,
        )
    elif name == "timestamp":
        ctx.flag(
            "prefer-timestamptz",
            f"timestamp without time zone column {column.get('colname')!r}",
            location,
        )
    elif name == "bpchar":
        ctx.flag("ban-char-field", f"char(n) column {column.get('colname')!r}", location)


def duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for name in names:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    return dups


def _no_schema(ctx: Context, relation: Node) -> None:
    ctx.flag("require-table-schema", f"table {relation.get('relname')!r} without a schema", None)


# --- CREATE TABLE, views, domains, enums -------------------------------------------------


@check("CreateStmt")
def create_table(ctx: Context, node: Node) -> None:
    relation = node.get("relation") or {}
    # a temporary table lives in its session's own schema: there is none to name
    if not relation.get("schemaname") and relation.get("relpersistence") != "t":
        ctx.flag(
            "require-table-schema", f"table {relation.get('relname')!r} without a schema", None
        )
    if (
        not ctx.in_transaction
        and not node.get("if_not_exists")
        # a temporary table dropped at commit is gone before the migration can run again
        and not (relation.get("relpersistence") == "t" and node.get("oncommit") == "ONCOMMIT_DROP")
    ):
        ctx.flag(
            "prefer-robust-stmts",
            "CREATE TABLE without IF NOT EXISTS outside a transaction",
            None,
        )
    names: list[str] = []
    for element in node.get("tableElts") or ():
        kind, item = unwrap(element)
        if kind == "ColumnDef":
            names.append(item.get("colname", ""))
            column_type(ctx, item)
            for con in constraints(item):
                _references(ctx, relation, con)
        elif kind == "Constraint":
            _references(ctx, relation, item)
    for name in duplicates(names):
        ctx.flag("ban-duplicate-column-assignments", f"column {name!r} is declared twice", None)
    ctx.add_created(relation)


def _references(ctx: Context, relation: Node, con: Node) -> None:
    """A foreign key of a new table locks the table it references (SHARE ROW EXCLUSIVE)."""
    if con.get("contype") != "CONSTR_FOREIGN":
        return
    target = con.get("pktable") or {}
    if not _same_table(target, relation) and not ctx.is_new(target):
        locks_existing(ctx)


@check("CreateForeignTableStmt")
def create_foreign_table(ctx: Context, node: Node) -> None:
    base = node.get("base") or {}
    names = [
        item.get("colname", "")
        for kind, item in map(unwrap, base.get("tableElts") or ())
        if kind == "ColumnDef"
    ]
    for name in duplicates(names):
        ctx.flag("ban-duplicate-column-assignments", f"column {name!r} is declared twice", None)
    ctx.add_created(base.get("relation") or {})


@check("CreateTableAsStmt")
def create_table_as(ctx: Context, node: Node) -> None:
    into = node.get("into") or {}
    relation = into.get("rel") or {}
    query = unwrap(node.get("query") or {})[1]
    _output_names(ctx, "table", strings(into.get("colNames")), query)
    if node.get("objtype") not in (None, "OBJECT_TABLE"):
        # A new materialized view is as new as a table: indexing it blocks no one.
        ctx.add_created(relation)
        return
    if not relation.get("schemaname") and relation.get("relpersistence") != "t":
        ctx.flag(
            "require-table-schema", f"table {relation.get('relname')!r} without a schema", None
        )
    ctx.add_created(relation)


def _output_names(ctx: Context, what: str, names: list[str], query: Node | None) -> None:
    """Columns a view or new table gets twice: from its column list, else from its query's
    aliases and plain column references (``SELECT x.a, y.a``), the names PostgreSQL gives."""
    if not names:
        for target in (query or {}).get("targetList") or ():
            item = unwrap(target)[1]
            name = item.get("name")
            if not name:
                kind, value = unwrap(item.get("val") or {})
                fields: list[Node] = value.get("fields") or [] if kind == "ColumnRef" else []
                name = (fields[-1].get("String") or {}).get("sval") if fields else None
            if name:
                names.append(name)
    for name in duplicates(names):
        ctx.flag("ban-duplicate-column-assignments", f"{what} column {name!r} is named twice", None)


def _assigned_twice(targets: list[Node] | None) -> list[str]:
    """Columns assigned more than once; assignments to different fields or elements of one
    column (``a.x = 1, a.y = 2``, ``arr[1] = 1, arr[2] = 2``) are not."""
    items = [unwrap(t)[1] for t in targets or ()]
    found = duplicates([item.get("name", "") for item in items])
    return [
        name
        for name in found
        if not all(item.get("indirection") for item in items if item.get("name", "") == name)
    ]


@check("ViewStmt")
def create_view(ctx: Context, node: Node) -> None:
    _output_names(ctx, "view", strings(node.get("aliases")), unwrap(node.get("query") or {})[1])


def _with_queries(ctx: Context, node: Node) -> None:
    """The data-modifying queries of a WITH clause (``WITH u AS (UPDATE ...) SELECT ...``) are
    checked like statements of their own for columns named twice."""
    for cte in (node.get("withClause") or {}).get("ctes") or ():
        kind, query = unwrap(unwrap(cte)[1].get("ctequery") or {})
        check_ = _IN_WITH.get(kind)
        if check_ is not None:
            check_(ctx, query)


@check("UpdateStmt")
def update(ctx: Context, node: Node) -> None:
    _with_queries(ctx, node)
    for name in _assigned_twice(node.get("targetList")):
        ctx.flag("ban-duplicate-column-assignments", f"column {name!r} is assigned twice", None)


@check("InsertStmt")
def insert(ctx: Context, node: Node) -> None:
    _with_queries(ctx, node)
    for name in _assigned_twice(node.get("cols")):
        ctx.flag("ban-duplicate-column-assignments", f"column {name!r} is listed twice", None)
    conflict = node.get("onConflictClause")
    if conflict:  # ON CONFLICT ... DO UPDATE SET, an UPDATE's SET list
        for name in _assigned_twice(conflict.get("targetList")):
            ctx.flag("ban-duplicate-column-assignments", f"column {name!r} is assigned twice", None)


@check("MergeStmt")
def merge(ctx: Context, node: Node) -> None:
    _with_queries(ctx, node)
    for clause in node.get("mergeWhenClauses") or ():
        for name in _assigned_twice(unwrap(clause)[1].get("targetList")):
            ctx.flag("ban-duplicate-column-assignments", f"column {name!r} is assigned twice", None)


@check("DeleteStmt")
def delete(ctx: Context, node: Node) -> None:
    _with_queries(ctx, node)


@check("SelectStmt")
def select_into(ctx: Context, node: Node) -> None:
    _with_queries(ctx, node)
    into = node.get("intoClause")
    if into:
        _output_names(ctx, "table", [], node)
        ctx.add_created(into.get("rel") or {})


_IN_WITH: dict[str, Callable[[Context, Node], None]] = {
    "UpdateStmt": update,
    "InsertStmt": insert,
    "MergeStmt": merge,
    "DeleteStmt": delete,
}


@check("CreateDomainStmt")
def create_domain(ctx: Context, node: Node) -> None:
    for con in node.get("constraints") or ():
        kind = unwrap(con)[1].get("contype")
        if kind in ("CONSTR_CHECK", "CONSTR_NOTNULL"):
            what = "a CHECK" if kind == "CONSTR_CHECK" else "a NOT NULL"
            ctx.flag(
                "ban-create-domain-with-constraint",
                f"domain with {what} constraint: changing it later scans every column using it",
                None,
            )
            return


@check("AlterDomainStmt")
def alter_domain(ctx: Context, node: Node) -> None:
    subtype = node.get("subtype")
    if subtype == "C":
        ctx.flag(
            "ban-alter-domain-with-add-constraint",
            "ALTER DOMAIN ... ADD CONSTRAINT checks every column of that domain under a lock",
            None,
        )
    elif subtype == "N":
        ctx.flag("ban-drop-not-null", "ALTER DOMAIN ... DROP NOT NULL may break clients", None)
    elif subtype == "O":
        ctx.flag(
            "adding-not-nullable-field",
            "ALTER DOMAIN ... SET NOT NULL scans every column of that domain under a lock",
            None,
        )


@check("AlterEnumStmt")
def alter_enum(ctx: Context, node: Node) -> None:
    if node.get("newVal") and not node.get("oldVal") and not node.get("newValNeighbor"):
        ctx.flag(
            "require-enum-value-ordering",
            f"ADD VALUE {node.get('newVal')!r} without BEFORE or AFTER appends it last",
            None,
        )


# --- ALTER TABLE ---------------------------------------------------------------------------


def _constraint_rules(
    ctx: Context, table: str, con: Node, existing: bool, location: int | None, column: bool = False
) -> None:
    kind = con.get("contype")
    name = con.get("conname")
    if not existing:
        return
    where = con.get("location", location)
    if kind == "CONSTR_FOREIGN" and not con.get("skip_validation"):
        ctx.flag(
            "adding-foreign-key-constraint",
            f"foreign key on {table} scans the table and blocks writes to both tables",
            where,
        )
    # a column's foreign key (ADD COLUMN ... REFERENCES) is adding-foreign-key-constraint's
    # alone, as in squawk: a column constraint cannot say NOT VALID
    if (kind == "CONSTR_CHECK" or (kind == "CONSTR_FOREIGN" and not column)) and not con.get(
        "skip_validation"
    ):
        ctx.flag(
            "constraint-missing-not-valid",
            f"constraint {name or ''} on {table} without NOT VALID scans the table under a "
            "lock that blocks writes".replace("  ", " "),
            where,
        )
    if kind in ("CONSTR_CHECK", "CONSTR_FOREIGN") and con.get("skip_validation") and name:
        ctx.not_valid.add((table, name))
        proven = _not_null_column(con.get("raw_expr")) if kind == "CONSTR_CHECK" else None
        if proven:
            ctx.not_null_checks[(table, name)] = proven
    if kind == "CONSTR_UNIQUE" and not con.get("indexname"):
        ctx.flag(
            "disallowed-unique-constraint",
            f"UNIQUE constraint on {table} builds its index under an ACCESS EXCLUSIVE lock",
            where,
        )
    if kind == "CONSTR_PRIMARY" and not con.get("indexname"):
        ctx.flag(
            "adding-serial-primary-key-field",
            f"PRIMARY KEY on {table} builds its index under an ACCESS EXCLUSIVE lock",
            where,
        )
    if ctx.in_transaction or column:  # a column's: its ADD COLUMN is what runs again
        return
    if not name:
        ctx.flag(
            "prefer-robust-stmts",
            "ADD CONSTRAINT without a name outside a transaction adds a second one (or fails) "
            "when run again",
            where,
        )
    elif (table, name) in ctx.dropped_constraints:
        ctx.dropped_constraints.discard((table, name))  # one DROP ... IF EXISTS per ADD
    else:
        ctx.flag(
            "prefer-robust-stmts",
            f"ADD CONSTRAINT {name} outside a transaction fails when run again",
            where,
        )


def _not_null_column(expr: Node | None) -> str | None:
    """The column of a ``CHECK (column IS NOT NULL)``, else None."""
    kind, node = unwrap(expr or {})
    if kind != "NullTest" or node.get("nulltesttype") != "IS_NOT_NULL":
        return None
    kind, arg = unwrap(node.get("arg") or {})
    names = strings(arg.get("fields")) if kind == "ColumnRef" else []
    return names[-1] if names else None


_TABLE_CONSTRAINTS = ("CONSTR_FOREIGN", "CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_CHECK")


def _add_column(ctx: Context, table: str, column: Node, existing: bool, missing_ok: bool) -> None:
    name = column.get("colname")
    column_type(ctx, column)
    location = column.get("location")
    if not ctx.in_transaction and not missing_ok:
        ctx.flag(
            "prefer-robust-stmts",
            f"ADD COLUMN {name} without IF NOT EXISTS outside a transaction",
            location,
        )
    cons = list(constraints(column))
    kinds = {c.get("contype") for c in cons}
    default = next((c for c in cons if c.get("contype") == "CONSTR_DEFAULT"), None)
    serial = type_of(column.get("typeName")) in _SERIALS
    if existing:
        if serial:
            ctx.flag(
                "adding-field-with-default",
                f"serial column {name} on {table} fills every row: the table is rewritten "
                "under an ACCESS EXCLUSIVE lock",
                location,
            )
        elif "CONSTR_IDENTITY" in kinds or (
            "CONSTR_GENERATED" in kinds
            and any(
                c.get("generated_kind") != "v"
                for c in cons
                if c.get("contype") == "CONSTR_GENERATED"
            )
        ):
            ctx.flag(
                "adding-field-with-default",
                f"identity or stored generated column {name} on {table}: the table is "
                "rewritten under an ACCESS EXCLUSIVE lock",
                location,
            )
        elif default is not None and (
            ctx.server_version < 11 or not non_volatile(default.get("raw_expr"))
        ):
            why = (
                "a default (before PostgreSQL 11, any default)"
                if ctx.server_version < 11
                else "a volatile default"
            )
            ctx.flag(
                "adding-field-with-default",
                f"column {name} on {table} with {why} rewrites the table under an "
                "ACCESS EXCLUSIVE lock",
                default.get("location", location),
            )
        if (
            "CONSTR_NOTNULL" in kinds
            and default is None
            and not serial
            and not kinds & {"CONSTR_IDENTITY", "CONSTR_GENERATED"}
        ):
            ctx.flag(
                "adding-required-field",
                f"NOT NULL column {name} without a default fails on a table with rows and "
                "breaks old INSERTs",
                location,
            )
    for con in cons:
        if con.get("contype") in (
            "CONSTR_FOREIGN",
            "CONSTR_UNIQUE",
            "CONSTR_PRIMARY",
            "CONSTR_CHECK",
        ):
            _constraint_rules(ctx, table, con, existing, location, column=True)


@check("AlterTableStmt")
def alter_table(ctx: Context, node: Node) -> None:
    relation = node.get("relation") or {}
    if node.get("objtype") == "OBJECT_INDEX":
        return
    table = relation_name(relation)
    existing = not ctx.is_new(relation)
    if not relation.get("schemaname"):
        ctx.flag(
            "require-table-schema", f"table {relation.get('relname')!r} without a schema", None
        )
    for item in node.get("cmds") or ():
        cmd = item.get("AlterTableCmd") or {}
        subtype = cmd.get("subtype")
        definition = cmd.get("def") or {}
        if subtype == "AT_AddColumn":
            _add_column(
                ctx, table, definition.get("ColumnDef") or {}, existing, bool(cmd.get("missing_ok"))
            )
        elif subtype == "AT_AddConstraint":
            _constraint_rules(ctx, table, definition.get("Constraint") or {}, existing, None)
        elif subtype == "AT_ValidateConstraint":
            name = cmd.get("name", "")
            if ctx.in_transaction and (table, name) in ctx.not_valid:
                ctx.flag(
                    "constraint-missing-not-valid",
                    f"VALIDATE CONSTRAINT {name} in the same transaction that added it keeps "
                    "the lock taken by ADD CONSTRAINT while the table is scanned",
                    None,
                )
            proven = ctx.not_null_checks.get((table, name))
            if proven:  # CHECK (column IS NOT NULL): it proves that column only
                ctx.validated_columns.add((table, proven))
            else:  # a constraint added elsewhere, or another check: its table
                ctx.validated.add(table)
        elif subtype == "AT_AlterColumnType":
            column = definition.get("ColumnDef") or {}
            column_type(ctx, {"colname": cmd.get("name"), **column}, column.get("typeName"))
            if existing:
                ctx.flag(
                    "changing-column-type",
                    f"changing the type of {table}.{cmd.get('name')} may rewrite the table "
                    "under an ACCESS EXCLUSIVE lock",
                    None,
                )
        elif subtype == "AT_SetNotNull":
            validated = table in ctx.validated or (table, cmd.get("name")) in ctx.validated_columns
            if existing and not (ctx.server_version >= 12 and validated):
                ctx.flag(
                    "adding-not-nullable-field",
                    f"SET NOT NULL on {table}.{cmd.get('name')} scans the table under an "
                    "ACCESS EXCLUSIVE lock",
                    None,
                )
        elif subtype == "AT_DropNotNull" and existing:
            ctx.flag(
                "ban-drop-not-null",
                f"DROP NOT NULL on {table}.{cmd.get('name')} may break clients that expect a value",
                None,
            )
        elif subtype == "AT_DropColumn":
            if existing:
                ctx.flag(
                    "ban-drop-column",
                    f"dropping {table}.{cmd.get('name')} breaks clients still using it and "
                    "loses its data",
                    None,
                )
            if not ctx.in_transaction and not cmd.get("missing_ok"):
                ctx.flag(
                    "prefer-robust-stmts",
                    f"DROP COLUMN {cmd.get('name')} without IF EXISTS outside a transaction",
                    None,
                )
        elif subtype == "AT_DropConstraint":
            if cmd.get("missing_ok"):
                ctx.dropped_constraints.add((table, cmd.get("name", "")))
            elif not ctx.in_transaction:
                ctx.flag(
                    "prefer-robust-stmts",
                    f"DROP CONSTRAINT {cmd.get('name')} without IF EXISTS outside a transaction",
                    None,
                )
        elif subtype == "AT_DetachPartition":
            partition = definition.get("PartitionCmd") or {}
            if existing and not partition.get("concurrent"):
                later = "" if ctx.server_version >= 14 else " (CONCURRENTLY needs PostgreSQL 14)"
                ctx.flag(
                    "require-concurrent-partition-detach",
                    f"DETACH PARTITION on {table} without CONCURRENTLY takes an "
                    f"ACCESS EXCLUSIVE lock{later}",
                    None,
                )


@check("RenameStmt")
def rename(ctx: Context, node: Node) -> None:
    relation = node.get("relation")
    kind = node.get("renameType")
    if ctx.is_new(relation):
        if kind == "OBJECT_TABLE" and relation:
            # the new table under its new name is just as new
            ctx.add_created({**relation, "relname": node.get("newname", "")})
        return
    name = relation_name(relation) if relation else ""
    if kind == "OBJECT_COLUMN":
        ctx.flag(
            "renaming-column",
            f"renaming {name}.{node.get('subname')} breaks clients still using the old name",
            None,
        )
    elif kind == "OBJECT_TABLE":
        ctx.flag("renaming-table", f"renaming {name} breaks clients still using the old name", None)


# --- indexes, drops, maintenance -----------------------------------------------------------


@check("IndexStmt")
def create_index(ctx: Context, node: Node) -> None:
    relation = node.get("relation") or {}
    concurrent = bool(node.get("concurrent"))
    if concurrent and ctx.in_transaction:
        ctx.flag(
            "ban-concurrent-index-creation-in-transaction",
            "CREATE INDEX CONCURRENTLY cannot run inside a transaction",
            None,
        )
    if not concurrent and not ctx.is_new(relation):
        ctx.flag(
            "require-concurrent-index-creation",
            f"CREATE INDEX on {relation_name(relation)} without CONCURRENTLY blocks writes "
            "while the index is built",
            None,
        )
    # IF NOT EXISTS needs a name: an unnamed index cannot be guarded
    if not ctx.in_transaction and not node.get("if_not_exists") and node.get("idxname"):
        ctx.flag(
            "prefer-robust-stmts",
            "CREATE INDEX without IF NOT EXISTS outside a transaction fails when run again"
            + (" (and a failed CONCURRENTLY build leaves an INVALID index)" if concurrent else ""),
            None,
        )


def _dropped_names(node: Node) -> list[str]:
    names: list[str] = []
    for item in node.get("objects") or ():
        kind, value = unwrap(item)
        if kind == "List":
            names.append(".".join(strings(value.get("items"))))
        elif kind == "String":
            names.append(value.get("sval", ""))
    return names


@check("DropStmt")
def drop(ctx: Context, node: Node) -> None:
    kind = node.get("removeType")
    names = _dropped_names(node)
    if kind in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE"):
        existing = [n for n in names if not ctx.is_new_name(n)]
        if existing:
            ctx.flag(
                "ban-drop-table",
                f"dropping {', '.join(existing)} breaks clients still using it and loses its data",
                None,
            )
        unqualified = [n for n in names if "." not in n]
        if unqualified:
            ctx.flag(
                "require-table-schema", f"table {', '.join(unqualified)} without a schema", None
            )
    elif kind == "OBJECT_INDEX" and not node.get("concurrent"):
        ctx.flag(
            "require-concurrent-index-deletion",
            f"DROP INDEX {', '.join(names)} without CONCURRENTLY takes an ACCESS EXCLUSIVE "
            "lock on its table",
            None,
        )
    if not ctx.in_transaction and not node.get("missing_ok"):
        ctx.flag(
            "prefer-robust-stmts",
            "DROP without IF EXISTS outside a transaction fails when run again",
            None,
        )


@check("DropdbStmt")
def drop_database(ctx: Context, node: Node) -> None:
    ctx.flag("ban-drop-database", f"DROP DATABASE {node.get('dbname')}", None)


@check("TruncateStmt")
def truncate(ctx: Context, node: Node) -> None:
    if node.get("behavior") == "DROP_CASCADE":
        ctx.flag(
            "ban-truncate-cascade",
            "TRUNCATE ... CASCADE also empties every table that references these",
            None,
        )


def options_on(items: list[Node] | None) -> set[str]:
    """The names of the options in a parenthesised list that are on: ``FULL``, ``FULL true``
    or ``FULL 1``, not ``FULL false``, ``FULL off`` or ``FULL 0``."""
    found: set[str] = set()
    for item in items or ():
        option = unwrap(item)[1]
        kind, value = unwrap(option.get("arg") or {})
        if kind == "Integer":
            on = bool(value.get("ival", 0))
        elif kind == "Boolean":
            on = bool(value.get("boolval", False))
        elif kind == "String":
            on = str(value.get("sval", "")).lower() not in ("false", "off", "0", "no")
        else:
            on = True
        if on:
            found.add(str(option.get("defname", "")))
    return found


@check("ReindexStmt")
def reindex(ctx: Context, node: Node) -> None:
    if node.get("kind") == "REINDEX_OBJECT_SYSTEM":
        return  # REINDEX SYSTEM has no concurrent form
    if "concurrently" not in options_on(node.get("params")):
        ctx.flag(
            "require-concurrent-reindex",
            "REINDEX without CONCURRENTLY blocks reads and writes of the table",
            None,
        )


@check("VacuumStmt")
def vacuum(ctx: Context, node: Node) -> None:
    if node.get("is_vacuumcmd") and "full" in options_on(node.get("options")):
        locks_existing(ctx)
        ctx.flag(
            "prefer-repack",
            "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock",
            None,
        )


@check("ClusterStmt")
def cluster(ctx: Context, node: Node) -> None:
    ctx.flag("prefer-repack", "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock", None)


# --- transactions and settings -------------------------------------------------------------

_BEGIN = ("TRANS_STMT_BEGIN", "TRANS_STMT_START")
_END = ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE")


@check("TransactionStmt")
def transaction(ctx: Context, node: Node) -> None:
    kind = node.get("kind")
    if kind in _BEGIN:
        if ctx.transactional:
            ctx.flag(
                "transaction-nesting",
                "BEGIN inside a migration mg already runs in a transaction",
                None,
            )
        elif ctx.in_block:
            ctx.flag("transaction-nesting", "BEGIN inside a transaction that is already open", None)
        else:
            ctx.in_block = True
            ctx.block_start = ctx.current
    elif kind in _END:
        if ctx.transactional:
            ctx.flag(
                "transaction-nesting",
                "COMMIT/ROLLBACK would end the transaction mg runs the migration in",
                None,
            )
        elif not ctx.in_block:
            ctx.flag("transaction-nesting", "COMMIT/ROLLBACK without a transaction to end", None)
        elif node.get("chain"):
            # COMMIT AND CHAIN starts the next transaction at once: it needs its own COMMIT.
            ctx.block_start = ctx.current
            return
        ctx.in_block = False
        ctx.block_start = None


@check("VariableSetStmt")
def set_variable(ctx: Context, node: Node) -> None:
    if node.get("name") == "lock_timeout" and node.get("kind") == "VAR_SET_VALUE":
        ctx.lock_timeout_set = True


# Statements that lock existing objects: require-timeout-settings looks at the first one.
LOCKING = frozenset(
    {
        "AlterTableStmt",
        "IndexStmt",
        "DropStmt",
        "RenameStmt",
        "TruncateStmt",
        "AlterDomainStmt",
        "AlterEnumStmt",
        "ReindexStmt",
        "ClusterStmt",
        "CreateTrigStmt",
        "AlterObjectSchemaStmt",
        "LockStmt",
        "RefreshMatViewStmt",
        "CreatePolicyStmt",
        "AlterPolicyStmt",
        "RuleStmt",
    }
)


def timeout_settings(ctx: Context, node_type: str, node: Node) -> None:
    if ctx.timeout_flagged or ctx.mg_lock_timeout or ctx.lock_timeout_set:
        return
    if node_type in LOCKING and not _only_new_tables(ctx, node_type, node):
        locks_existing(ctx)


def _only_new_tables(ctx: Context, node_type: str, node: Node) -> bool:
    """Whether every relation the statement names (the table altered, indexed or dropped, and
    any other it refers to, such as a foreign key's) was created earlier in the plan: this
    transaction made it, so taking its lock waits for no one."""
    if node_type == "DropStmt":
        names = _dropped_names(node)
        return (
            node.get("removeType") in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE", "OBJECT_MATVIEW")
            and bool(names)
            and all(ctx.is_new_name(name) for name in names)
        )
    named = False
    stack: list[Any] = [node]
    while stack:  # no recursion: a statement's tree can be deep
        item = stack.pop()
        if isinstance(item, dict):
            if "relname" in item:
                if not ctx.is_new(item):
                    return False
                named = True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return named


def locks_existing(ctx: Context) -> None:
    """The current statement waits for a lock on an existing relation (VACUUM FULL and
    CREATE TABLE ... REFERENCES tell from their node, the others from their node type)."""
    if ctx.timeout_flagged or ctx.mg_lock_timeout or ctx.lock_timeout_set:
        return
    ctx.timeout_flagged = True
    ctx.flag(
        "require-timeout-settings",
        "no lock_timeout: this statement may queue every query behind its lock",
        None,
    )
