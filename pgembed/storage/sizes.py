"""Bytes a collection stores per row, by kind: each kind's columns plus its indexes.

Which column and which index serve which kind is read from :func:`schema.table`
(``info["kind"]``), the one place that names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from pgembed.storage.schema import table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.storage.schema import CollectionSpec


def index_bytes(conn: Connection, spec: CollectionSpec) -> dict[str, int]:
    """pg_relation_size of each index on the collection's table, by index name."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, pg_catalog.pg_relation_size(c.oid) FROM pg_catalog.pg_index i "
            "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = :schema AND t.relname = :table"
        ),
        {"schema": spec.schema, "table": spec.table_name},
    ).all()
    return {str(name): int(size) for name, size in rows}


def breakdown(conn: Connection, spec: CollectionSpec) -> dict[str, tuple[float, float]]:
    """(column bytes, index bytes) per row of each kind the collection stores.

    A kind without a column of its own (matryoshka, 1-bit binary) has index bytes only.
    """
    t = table(spec)
    n = max(int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()), 1)
    sizes = index_bytes(conn, spec)
    out: dict[str, tuple[float, float]] = {}
    for kind in spec.all_kinds:
        col = 0.0
        for c in t.columns:
            if c.info.get("kind") == kind:
                avg = sa.select(sa.func.avg(sa.func.pg_column_size(c)))
                col += float(conn.execute(avg).scalar_one() or 0)
        ib = sum(sizes.get(str(ix.name), 0) for ix in t.indexes if ix.info.get("kind") == kind)
        out[kind] = (col, ib / n)
    return out


def bytes_per_row(conn: Connection, spec: CollectionSpec) -> dict[str, float]:
    """Average bytes per row of each kind the collection stores (columns + indexes)."""
    return {kind: col + ix for kind, (col, ix) in breakdown(conn, spec).items()}
