"""The indexes a collection's table has in the database, as built (the one catalog query).

``schema.table`` says which indexes a collection should have; this says which it has: for
bulk loads (missing or invalid ones), reindexing (IVFFlat), sizes and alembic's comparator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.storage.schema import CollectionSpec


@dataclass(frozen=True)
class BuiltIndex:
    name: str
    method: str  # access method: hnsw, ivfflat, gin, btree
    valid: bool  # pg_index.indisvalid: false after an interrupted CREATE INDEX
    primary: bool
    bytes: int  # pg_relation_size
    options: dict[str, str]  # reloptions, e.g. {"m": "16", "ef_construction": "64"}


def built(conn: Connection, spec: CollectionSpec) -> list[BuiltIndex]:
    """The indexes on the collection's table, by name; [] when the table does not exist."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, a.amname, i.indisvalid, i.indisprimary, "
            "pg_catalog.pg_relation_size(c.oid), c.reloptions FROM pg_catalog.pg_index i "
            "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_catalog.pg_am a ON a.oid = c.relam "
            "JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = :schema AND t.relname = :table ORDER BY c.relname"
        ),
        {"schema": spec.schema, "table": spec.table_name},
    ).all()
    return [
        BuiltIndex(
            str(name),
            str(method),
            bool(valid),
            bool(primary),
            int(size),
            dict(str(o).split("=", 1) for o in options or ()),
        )
        for name, method, valid, primary, size, options in rows
    ]
