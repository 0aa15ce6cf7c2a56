"""Collections own their tables: pgembed creates, writes and drops only the table it made.

The catalog records the oid of the table a collection created (``pgembed.collections.
table_oid``). A name can be reused behind pgembed's back, an oid cannot, so:

- :func:`create_table` creates the table, or accepts the one the collection recorded; it
  refuses a table that exists without being the recorded one (a user's own table, another
  collection's, one dropped and re-created outside pgembed), and pgembed's and the
  system's schemas.
- :func:`drop_table` drops the table only when it is the recorded one; otherwise the
  caller removes the catalog row and leaves the table alone.
- :func:`check_writable` refuses writes into a table that is not the recorded one.

Declarations of one collection, or of one table, are serialized by transaction-level
advisory locks (:func:`lock`), so concurrent ``create()`` calls wait for each other and
the later ones find the collection made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from pgembed.errors import CollectionError
from pgembed.storage import SCHEMA, catalog
from pgembed.storage import schema as sch
from pgembed.storage.indexes import built

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

RESERVED_SCHEMAS = (SCHEMA, "information_schema")
"""Schemas no collection may live in; so is every ``pg_*`` schema (pg_catalog, pg_toast...)."""

# Two-key advisory locks: the first key keeps pgembed's locks apart from other users'.
_LOCK_NAME = sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.collection'), hashtext(:k))")
_LOCK_TABLE = sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.table'), hashtext(:k))")


def qualified(spec: sch.CollectionSpec) -> str:
    """``schema.table`` for messages, each part quoted as in SQL."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in (spec.schema, spec.table_name))


def check_schema(schema: str) -> None:
    if schema in RESERVED_SCHEMAS or schema.startswith("pg_"):
        raise CollectionError(
            f"schema {schema!r} belongs to pgembed or to PostgreSQL itself; collections "
            "cannot live there: use schema='public' or a schema of your own"
        )


def lock(conn: Connection, spec: sch.CollectionSpec) -> None:
    """Serialize declarations (and drops) of this collection name and of its table.

    Always the name first, then the table: no one holding a table lock waits for a name
    lock, so two declarations cannot deadlock. Released when the transaction ends.
    """
    lock_name(conn, spec.name)
    conn.execute(_LOCK_TABLE, {"k": f"{spec.schema}.{spec.table_name}"})


def lock_name(conn: Connection, name: str) -> None:
    conn.execute(_LOCK_NAME, {"k": name})


def table_oid(conn: Connection, spec: sch.CollectionSpec) -> int | None:
    """The oid of the relation named like the collection's table, whatever its kind."""
    oid = conn.execute(
        sa.text(
            "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t"
        ),
        {"s": spec.schema, "t": spec.table_name},
    ).scalar()
    return None if oid is None else int(oid)


def ivfflat_indexes(conn: Connection, spec: sch.CollectionSpec) -> list[str]:
    """Names of the IVFFlat indexes on the collection's table, as they are in the database
    (tables made before index names were hashed keep their old names)."""
    return [b.name for b in built(conn, spec) if b.method == "ivfflat"]


def _schema_exists(conn: Connection, schema: str) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = :s)"),
            {"s": schema},
        ).scalar()
    )


def _not_ours(conn: Connection, spec: sch.CollectionSpec, found: int) -> CollectionError:
    owner = catalog.owner_of(conn, found)
    where = qualified(spec)
    if owner is not None:
        why = f"it belongs to collection {owner!r}"
    else:
        why = "pgembed did not create it (it is your table, or was re-created outside pgembed)"
    return CollectionError(
        f"table {where} already exists and {why}; pgembed does not take over tables. "
        f"Pass table='...' (or schema='...') to create the collection's own table, or "
        f"rename or drop {where} first"
    )


def create_table(conn: Connection, spec: sch.CollectionSpec, recorded: int | None) -> None:
    """Create the collection's table and indexes, or accept the one it recorded.

    ``recorded`` is the catalog's table oid (None for a new collection). Call inside the
    declaring transaction, after :func:`lock`.
    """
    check_schema(spec.schema)
    if not _schema_exists(conn, spec.schema):
        raise CollectionError(
            f"schema {spec.schema!r} does not exist; create it first (CREATE SCHEMA ...) "
            "or pass schema='public'"
        )
    found = table_oid(conn, spec)
    if found is not None and found == recorded:
        return  # our own table: create() is idempotent
    if found is not None:
        if recorded is not None:
            raise CollectionError(
                f"table {qualified(spec)} is not the table collection {spec.name!r} created "
                "(it was dropped and re-created outside pgembed); drop the collection "
                f"(Collection.drop or op.drop_collection, which leaves that table alone) "
                "and create it again"
            )
        raise _not_ours(conn, spec, found)
    sch.table(spec, sa.MetaData()).create(conn)
    oid = table_oid(conn, spec)
    assert oid is not None
    catalog.set_table_oid(conn, spec.name, oid)


def drop_table(conn: Connection, rec: catalog.CollectionRecord, *, force: bool) -> str | None:
    """Drop the collection's table if it is the one it created; else say why not.

    Returns None when dropped (or already gone), else the reason the table was left alone.
    Refuses a populated table unless ``force``.
    """
    spec = rec.spec
    found = table_oid(conn, spec)
    if found is None:
        return None
    if rec.table_oid is None or found != rec.table_oid:
        return (
            f"table {qualified(spec)} was left alone: collection {spec.name!r} did not "
            "create it (or it was re-created outside pgembed); only the catalog row was "
            "removed"
        )
    t = sch.table(spec, sa.MetaData())
    n = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    if n and not force:
        raise CollectionError(
            f"collection {spec.name!r} holds {n} rows; drop it with force=True "
            "(op.drop_collection(name, force=True)) if you mean to lose them"
        )
    t.drop(conn)
    return None


def check_writable(conn: Connection, rec: catalog.CollectionRecord) -> None:
    """Refuse writes unless the collection's table is the one it created."""
    found = table_oid(conn, rec.spec)
    if found is not None and found == rec.table_oid:
        return
    spec = rec.spec
    if found is None:
        raise CollectionError(
            f"the table {qualified(spec)} of collection {spec.name!r} does not exist "
            "(dropped outside pgembed); run create() to make it again"
        )
    raise CollectionError(
        f"table {qualified(spec)} is not the table collection {spec.name!r} created, so "
        "pgembed will not write into it; drop the collection (which leaves that table "
        "alone) and create it again"
    )
