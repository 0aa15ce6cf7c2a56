"""Privileges of a role on one collection: what ``pgembed grant`` gives and ``revoke`` takes.

Every object is found in the catalog, not in a hand list:

- pgembed's catalog tables a collection's reads touch: ``pgembed.collections``, the tables
  it references (encoders, FDE configs) and the tables of per-collection rows that
  reference it (calibrations, prefix quality, query depths), by their foreign keys;
- the functions of schema ``pgembed`` (pg_proc);
- the collection's table (the oid it recorded), the side tables its recorded declaration
  names (the lexical kind's statistics table), and the sequences those tables own.

``read`` gives USAGE on the schemas, EXECUTE on the functions and SELECT on all of the
above. ``write`` adds INSERT, UPDATE and DELETE on the collection's table and side tables
(the lexical triggers run as the writer; on PostgreSQL 17+ also MAINTAIN, for REINDEX),
and on the per-collection catalog tables, whose
row-level security (migration 0009) lets a role write only the rows of collections whose
table it may update.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

from pgembed.db import naming_role, translate_sql_errors
from pgembed.errors import CollectionError, ConfigError, PermissionDeniedError
from pgembed.storage import SCHEMA, catalog

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

Access = Literal["read", "write"]
ACCESS: tuple[Access, ...] = ("read", "write")
WRITE = "INSERT, UPDATE, DELETE"

# Tables tied to pgembed.collections by a foreign key, either way; `rows` is true for
# those holding per-collection rows (they reference it).
_CATALOG = sa.text(
    """
    SELECT DISTINCT k.conrelid::regclass::text AS name, true AS rows
      FROM pg_catalog.pg_constraint k
     WHERE k.contype = 'f' AND k.confrelid = CAST(:c AS regclass)
    UNION
    SELECT k.confrelid::regclass::text, false
      FROM pg_catalog.pg_constraint k
     WHERE k.contype = 'f' AND k.conrelid = CAST(:c AS regclass)
    UNION SELECT CAST(:c AS regclass)::text, false
    ORDER BY 1
    """
)
_SEQUENCES = sa.text(
    "SELECT DISTINCT d.objid::regclass::text FROM pg_catalog.pg_depend d "
    "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "WHERE d.classid = 'pg_catalog.pg_class'::regclass "
    "AND d.refobjid = ANY(CAST(:t AS oid[])) ORDER BY 1"
)
_FUNCTIONS = sa.text(
    "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
    "WHERE p.pronamespace = CAST(:s AS regnamespace) ORDER BY 1"
)


@dataclass(frozen=True)
class Objects:
    """What a collection's reads and writes touch, as quoted SQL names."""

    schemas: tuple[str, ...]
    functions: tuple[str, ...]
    catalog: tuple[str, ...]
    per_collection: tuple[str, ...]
    tables: tuple[str, ...]
    sequences: tuple[str, ...]
    maintain: bool = False
    """PostgreSQL 17+: MAINTAIN on the collection's tables, so writers may REINDEX (IVFFlat
    clusters its lists from the rows present: ingest rebuilds it)."""

    def table_write(self) -> tuple[str, ...]:
        return (*WRITE.split(", "), *(("MAINTAIN",) if self.maintain else ()))


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _check_access(access: str) -> Access:
    if access not in ACCESS:
        raise ConfigError(f"access must be 'read' or 'write', not {access!r}")
    return access


def _check_role(conn: Connection, role: str) -> None:
    found = conn.execute(
        sa.text("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if found is None:
        raise ConfigError(f"role {role!r} does not exist; create it first (CREATE ROLE ...)")


def objects(conn: Connection, collection: str) -> Objects:
    """The objects ``collection``'s reads and writes touch, found in the catalog."""
    rec = catalog.get_collection(conn, collection)
    if rec.table_oid is None:
        raise CollectionError(
            f"collection {collection!r} owns no table (it was recorded before tables had "
            "owners), so there is nothing to grant; drop it and create it again"
        )
    spec = rec.spec
    side = [v["stats"] for v in spec.kinds_json().values() if isinstance(v, dict) and "stats" in v]
    oids = [rec.table_oid]
    for name in side:
        oid = conn.execute(
            sa.text("SELECT to_regclass(:n)::oid"),
            {"n": f"{_quote(conn, spec.schema)}.{_quote(conn, name)}"},
        ).scalar()
        if oid is not None:
            oids.append(int(oid))
    tables = conn.execute(
        sa.text("SELECT CAST(o AS regclass)::text FROM unnest(CAST(:t AS oid[])) AS o"),
        {"t": oids},
    ).scalars()
    linked = conn.execute(_CATALOG, {"c": f"{SCHEMA}.collections"}).all()
    return Objects(
        schemas=tuple(dict.fromkeys((_quote(conn, SCHEMA), _quote(conn, spec.schema)))),
        functions=tuple(conn.execute(_FUNCTIONS, {"s": SCHEMA}).scalars()),
        catalog=tuple(r.name for r in linked),
        per_collection=tuple(r.name for r in linked if r.rows),
        tables=tuple(tables),
        sequences=tuple(conn.execute(_SEQUENCES, {"t": oids}).scalars()),
        maintain=int(conn.execute(sa.text("SHOW server_version_num")).scalar_one()) >= 170000,
    )


def statements(objs: Objects, role: str, access: Access, *, revoke: bool = False) -> list[str]:
    """The GRANT (or REVOKE) statements of ``access`` on ``objs`` for ``role`` (quoted)."""
    to = "FROM" if revoke else "TO"
    verb = "REVOKE" if revoke else "GRANT"
    out: list[str] = []
    if access == "read":
        out += [f"{verb} USAGE ON SCHEMA {s} {to} {role}" for s in objs.schemas]
        out += [f"{verb} EXECUTE ON FUNCTION {f} {to} {role}" for f in objs.functions]
        out += [f"{verb} SELECT ON TABLE {t} {to} {role}" for t in objs.catalog + objs.tables]
        out += [f"{verb} SELECT ON SEQUENCE {s} {to} {role}" for s in objs.sequences]
    else:
        privileges = ", ".join(objs.table_write())
        out += [f"{verb} {privileges} ON TABLE {t} {to} {role}" for t in objs.tables]
        out += [f"{verb} {WRITE} ON TABLE {t} {to} {role}" for t in objs.per_collection]
        out += [f"{verb} USAGE, UPDATE ON SEQUENCE {s} {to} {role}" for s in objs.sequences]
    return out


_REG = {"schema": "regnamespace", "function": "regprocedure", "table": "regclass"}


def _check_grantor(conn: Connection, objs: Objects, access: Access, collection: str) -> None:
    """Refuse, naming who may, when the current role cannot grant all of it: GRANT and
    REVOKE on objects one may not grant only warn, and would leave the job half done."""
    checks = [("schema", s, "USAGE") for s in objs.schemas]
    checks += [("function", f, "EXECUTE") for f in objs.functions]
    checks += [("table", t, "SELECT") for t in objs.catalog + objs.tables]
    if access == "write":
        checks += [("table", t, p) for t in objs.tables for p in objs.table_write()]
        checks += [("table", t, p) for t in objs.per_collection for p in WRITE.split(", ")]
    for kind, name, privilege in checks:
        may = conn.execute(
            sa.text(f"SELECT pg_catalog.has_{kind}_privilege(CAST(:o AS {_REG[kind]}), :p)"),
            {"o": name, "p": f"{privilege} WITH GRANT OPTION"},
        ).scalar()
        if not may:
            who = conn.execute(sa.text("SELECT current_user")).scalar()
            raise PermissionDeniedError(
                f"permission denied: role {who!r} may not grant {privilege} on {kind} {name}",
                collection,
            )


def _others(conn: Connection, role: str, collection: str, privilege: str) -> list[str]:
    """Other collections whose table ``role`` holds ``privilege`` on (granted, or owned)."""
    return list(
        conn.execute(
            sa.text(
                "SELECT c.name FROM pgembed.collections c JOIN pg_catalog.pg_class r "
                "ON r.oid = c.table_oid WHERE c.name <> :c "
                "AND pg_catalog.has_table_privilege(:r, r.oid, :p) ORDER BY 1"
            ),
            {"c": collection, "r": role, "p": privilege},
        ).scalars()
    )


def _schemas(conn: Connection, role: str, schemas: tuple[str, ...], held: bool) -> tuple[str, ...]:
    """Of ``schemas``, those ``role`` may not use yet (``held`` false), or those it was
    granted USAGE on by name (``held`` true): PUBLIC's USAGE on schema public needs no
    grant, and is not the grantor's to give or take."""
    sql = (
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a "
        "WHERE n.oid = CAST(:s AS regnamespace) AND a.grantee = "
        "(SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = :r) "
        "AND a.privilege_type = 'USAGE')"
        if held
        else "SELECT NOT pg_catalog.has_schema_privilege(:r, CAST(:s AS regnamespace), 'USAGE')"
    )
    return tuple(s for s in schemas if conn.execute(sa.text(sql), {"s": s, "r": role}).scalar())


@contextlib.contextmanager
def _granting(
    engine: Engine, role: str, collection: str, access: Access, *, revoking: bool
) -> Iterator[tuple[Connection, Objects]]:
    """One transaction of grants or revokes: the objects ``role`` is to get (or lose) on
    ``collection``, once the caller is known to be able to grant them. One at a time per
    database: concurrent GRANTs on one object fail with 'tuple concurrently updated'."""
    with (
        engine.connect() as conn,
        naming_role(conn),
        translate_sql_errors(collection),
        conn.begin(),
    ):
        conn.execute(
            sa.text("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgembed.grant'))")
        )
        _check_role(conn, role)
        objs = objects(conn, collection)
        objs = dataclasses.replace(objs, schemas=_schemas(conn, role, objs.schemas, revoking))
        _check_grantor(conn, objs, access, collection)
        yield conn, objs


def grant(engine: Engine, role: str, collection: str, access: str = "read") -> list[str]:
    """Give ``role`` what reading (and, for ``write``, writing) ``collection`` needs, in one
    transaction; returns the statements run. Run it as the owner of the objects (the role
    that migrated pgembed and created the collection) or a superuser."""
    access = _check_access(access)
    with _granting(engine, role, collection, access, revoking=False) as (conn, objs):
        quoted = _quote(conn, role)
        run = statements(objs, quoted, "read")
        if access == "write":
            run += statements(objs, quoted, "write")
        for stmt in run:
            conn.execute(sa.text(stmt))
    return run


def revoke(engine: Engine, role: str, collection: str, access: str = "read") -> list[str]:
    """Take back what :func:`grant` gave: ``write`` takes the write privileges only,
    ``read`` everything. Privileges every collection shares (schema pgembed, its functions
    and catalog) stay while ``role`` may still read (or write) another collection."""
    access = _check_access(access)
    with _granting(engine, role, collection, access, revoking=True) as (conn, objs):
        writes = _others(conn, role, collection, "UPDATE")
        reads = _others(conn, role, collection, "SELECT")
        if writes:  # keep the per-collection catalog rights the other collections need
            objs = dataclasses.replace(objs, per_collection=())
        run = statements(objs, _quote(conn, role), "write", revoke=True)
        if access == "read":
            if reads:
                objs = dataclasses.replace(objs, schemas=(), functions=(), catalog=())
            run += statements(objs, _quote(conn, role), "read", revoke=True)
        for stmt in run:
            conn.execute(sa.text(stmt))
    return run
