"""Bytes a collection stores per row, by kind: each kind's columns plus its indexes.

Which column and which index serve which kind is read from :func:`schema.table`
(``info["kind"]``), the one place that names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from pgembed.storage import indexes
from pgembed.storage.schema import table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.storage.schema import CollectionSpec


def breakdown(conn: Connection, spec: CollectionSpec) -> dict[str, tuple[float, float]]:
    """(column bytes, index bytes) per row of each kind the collection stores.

    A kind without a column of its own (matryoshka, 1-bit binary) has index bytes only.
    """
    t = table(spec)
    n = max(int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()), 1)
    sizes = {b.name: b.bytes for b in indexes.built(conn, spec)}
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
