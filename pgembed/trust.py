"""pgembed runs only what the role installing it, or a superuser, owns.

Whoever owns a schema can drop and re-create anything in it (or rename the schema and put
another in its place), and whoever owns a function or table can change its body or add
triggers. pgembed's functions then run that code with the rights of whoever calls them: a
superuser upgrading, or an application searching. So before any DDL of an upgrade or
downgrade (``migrations/env.py``) and before wiring or unwiring the scoring functions
(:func:`pgembed.scoring.wire`), :func:`check` refuses (:class:`TrustError`) when

- schema ``pgembed`` exists without pgembed's version table, or schema ``pgembed_scoring``
  exists without the extension: pgembed never adopts a schema it did not create (as
  PostgreSQL's extensions never adopt an object they did not create);
- any schema of pgembed's, or anything in one (relation, function, type, operator, operator
  class or family, collation, conversion, text search object, statistics object, an
  extension installed there), the ``pgembed_scoring`` extension, or a trigger function on
  one of pgembed's tables, belongs to a role that is neither the current user nor a
  superuser;
- the ``vector`` extension lives in a schema owned by such a role (``public``, owned by
  ``pg_database_owner`` since PostgreSQL 15, is accepted: its owner is the database's
  owner, whom pgembed's documentation asks to treat as privileged).

Searches and ``pgembed db status`` run as any role (an application's, which trusts the
role that installed pgembed), so they do not repeat that check: they rely on the schema as
the last upgrade vetted it. The objects of pgembed's schemas are owned by trusted roles
then, and only their owners can change them; another role granted CREATE on schema
``pgembed`` afterwards can add overloads, which no pgembed function calls (every call
matches its signature exactly, ``tests/sql/test_capture.py``). Their own reads run no
code another role wrote: the version is read only from a plain table without row security
(:func:`check_version_table`), and ``pgembed_scoring.kernel()`` is called only when the name
is the extension's own function (:func:`extension_member`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgembed.errors import TrustError
from pgembed.storage import SCHEMA

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

EXTENSION = "pgembed_scoring"  # pgembed.scoring.EXTENSION, without importing it
SCHEMAS = (SCHEMA, EXTENSION)
_SHOWN = 8  # objects named in the message; TrustError.objects has them all

# Every object with an owner in pgembed's schemas, and the scoring extension. Names are
# printed by the reg* types (qualified when not on the search_path), owners by regrole.
_OBJECTS = """
WITH ns AS (
    SELECT n.oid, n.nspname, n.nspowner FROM pg_catalog.pg_namespace n
    WHERE n.nspname = ANY(CAST(:schemas AS text[]))
       OR n.oid = (SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = :ext)
), objs(kind, name, owner) AS (
    SELECT 'schema', pg_catalog.quote_ident(nspname), nspowner FROM ns
    UNION ALL
    SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'S' THEN 'sequence'
                WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                WHEN 'f' THEN 'foreign table' ELSE 'index' END,
           CAST(CAST(c.oid AS regclass) AS text), c.relowner
    FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind <> 'c'  -- a composite type: its pg_type row below
    UNION ALL
    SELECT 'function', CAST(CAST(p.oid AS regprocedure) AS text), p.proowner
    FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
    UNION ALL
    SELECT 'type', CAST(CAST(t.oid AS regtype) AS text), t.typowner
    FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
    -- not a relation's row type, nor an array type made with its element: their owner's
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                      WHERE c.oid = t.typrelid AND c.relkind <> 'c')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e
                      WHERE e.oid = t.typelem AND e.typarray = t.oid)
    UNION ALL
    SELECT 'operator', CAST(CAST(o.oid AS regoperator) AS text), o.oprowner
    FROM pg_catalog.pg_operator o JOIN ns ON ns.oid = o.oprnamespace
    UNION ALL
    SELECT 'operator class', pg_catalog.quote_ident(ns.nspname) || '.'
           || pg_catalog.quote_ident(c.opcname), c.opcowner
    FROM pg_catalog.pg_opclass c JOIN ns ON ns.oid = c.opcnamespace
    UNION ALL
    SELECT 'operator family', pg_catalog.quote_ident(ns.nspname) || '.'
           || pg_catalog.quote_ident(f.opfname), f.opfowner
    FROM pg_catalog.pg_opfamily f JOIN ns ON ns.oid = f.opfnamespace
    UNION ALL
    SELECT 'collation', CAST(CAST(c.oid AS regcollation) AS text), c.collowner
    FROM pg_catalog.pg_collation c JOIN ns ON ns.oid = c.collnamespace
    UNION ALL
    SELECT 'conversion', pg_catalog.quote_ident(ns.nspname) || '.'
           || pg_catalog.quote_ident(c.conname), c.conowner
    FROM pg_catalog.pg_conversion c JOIN ns ON ns.oid = c.connamespace
    UNION ALL
    SELECT 'text search configuration', CAST(CAST(c.oid AS regconfig) AS text), c.cfgowner
    FROM pg_catalog.pg_ts_config c JOIN ns ON ns.oid = c.cfgnamespace
    UNION ALL
    SELECT 'text search dictionary', CAST(CAST(d.oid AS regdictionary) AS text), d.dictowner
    FROM pg_catalog.pg_ts_dict d JOIN ns ON ns.oid = d.dictnamespace
    UNION ALL
    SELECT 'statistics object', pg_catalog.quote_ident(ns.nspname) || '.'
           || pg_catalog.quote_ident(s.stxname), s.stxowner
    FROM pg_catalog.pg_statistic_ext s JOIN ns ON ns.oid = s.stxnamespace
    UNION ALL
    SELECT 'extension', pg_catalog.quote_ident(e.extname), e.extowner
    FROM pg_catalog.pg_extension e
    WHERE e.extname = :ext OR e.extnamespace IN (SELECT oid FROM ns)
    UNION ALL
    -- a role granted TRIGGER on a table of pgembed's can attach a function of its own
    SELECT 'trigger', pg_catalog.quote_ident(tg.tgname) || ' on '
           || CAST(CAST(tg.tgrelid AS regclass) AS text) || ' calling '
           || CAST(CAST(tg.tgfoid AS regprocedure) AS text), p.proowner
    FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
    JOIN ns ON ns.oid = c.relnamespace JOIN pg_catalog.pg_proc p ON p.oid = tg.tgfoid
    WHERE NOT tg.tgisinternal
)
SELECT kind, name, CAST(CAST(owner AS regrole) AS text) FROM objs
WHERE owner NOT IN (SELECT r.oid FROM pg_catalog.pg_roles r
                    WHERE r.rolsuper OR r.rolname = current_user)
ORDER BY kind <> 'schema', kind, name
"""

# A schema of pgembed's that pgembed did not create: pgembed's has its version table (made
# by a trusted role), pgembed_scoring's holds the extension.
_FOREIGN_SCHEMAS = """
SELECT pg_catalog.quote_ident(n.nspname), CAST(CAST(n.nspowner AS regrole) AS text)
FROM pg_catalog.pg_namespace n
WHERE (n.nspname = :schema AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
          WHERE c.relnamespace = n.oid AND c.relname = 'alembic_version'
            AND (r.rolsuper OR r.rolname = current_user)))
   OR (n.nspname = :ext AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_extension e
          WHERE e.extname = :ext AND e.extnamespace = n.oid))
ORDER BY 1
"""

_VECTOR_SCHEMA = """
SELECT pg_catalog.quote_ident(n.nspname), CAST(CAST(n.nspowner AS regrole) AS text)
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
WHERE e.extname = 'vector' AND NOT r.rolsuper AND r.rolname <> current_user
  AND r.rolname <> 'pg_database_owner'
"""


def problems(conn: Connection) -> list[str]:
    """What :func:`check` refuses, one line per object: ``kind name (owner role): why``."""
    import sqlalchemy as sa

    foreign = conn.execute(sa.text(_FOREIGN_SCHEMAS), {"schema": SCHEMA, "ext": EXTENSION})
    found = [f"schema {name} (owner {owner}): pgembed did not create it" for name, owner in foreign]
    found += [
        f"{kind} {name} (owner {owner}): not yours and not a superuser's"
        for kind, name, owner in conn.execute(
            sa.text(_OBJECTS), {"schemas": list(SCHEMAS), "ext": EXTENSION}
        ).all()
        if f"{kind} {name} (owner {owner}): pgembed did not create it" not in found
    ]
    found += [
        f"schema {name} (owner {owner}) of the vector extension: not yours and not a superuser's"
        for name, owner in conn.execute(sa.text(_VECTOR_SCHEMA)).all()
    ]
    return found


def check(conn: Connection) -> None:
    """Raise :class:`TrustError` when pgembed would run, adopt or change an object that a
    role other than the current user or a superuser controls (see the module's doc)."""
    import sqlalchemy as sa

    found = problems(conn)
    if not found:
        return
    me = conn.execute(sa.text("SELECT CAST(current_user AS text)")).scalar_one()
    shown = "; ".join(found[:_SHOWN])
    more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    raise TrustError(
        f"pgembed refuses to use objects that another role controls, since its functions "
        f"would run their code as you ({me}): {shown}{more}. Drop each schema pgembed did "
        "not create (DROP SCHEMA, after moving out what you keep); drop the other objects, "
        f"or have a superuser reassign them to {me} or a superuser (ALTER ... OWNER TO); "
        "then run `pgembed db upgrade` again",
        tuple(found),
    )


def check_version_table(conn: Connection) -> None:
    """Raise :class:`TrustError` unless ``pgembed.alembic_version`` is a plain table without
    row security: reading it then runs no code (a view or a policy would run its author's)."""
    import sqlalchemy as sa

    row = conn.execute(
        sa.text(
            "SELECT c.relkind = 'r' AND NOT c.relrowsecurity, "
            "CAST(CAST(c.relowner AS regrole) AS text) FROM pg_catalog.pg_class c "
            "WHERE c.oid = to_regclass(:t)"
        ),
        {"t": f"{SCHEMA}.alembic_version"},
    ).first()
    if row is not None and not row[0]:
        raise TrustError(
            f"{SCHEMA}.alembic_version (owner {row[1]}) is not the plain table pgembed makes "
            "(a view, or a table with row security), so pgembed does not read it: drop "
            f"schema {SCHEMA} if pgembed did not create it, then run `pgembed db upgrade`",
            (f"relation {SCHEMA}.alembic_version (owner {row[1]}): not a plain table",),
        )


def extension_member(conn: Connection, signature: str) -> bool:
    """Whether ``signature`` (``schema.name(types)``) names a function of the scoring
    extension itself, which no other role can replace."""
    import sqlalchemy as sa

    return bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
                "JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid "
                "WHERE d.classid = CAST('pg_catalog.pg_proc' AS regclass) "
                "AND d.objid = to_regprocedure(:f) AND d.deptype = 'e' "
                "AND d.refclassid = CAST('pg_catalog.pg_extension' AS regclass) "
                "AND e.extname = :ext)"
            ),
            {"f": signature, "ext": EXTENSION},
        ).scalar()
    )
