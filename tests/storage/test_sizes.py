"""storage.sizes: bytes per row by kind, against sizes read straight from the catalog."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection
from pgembed.storage import sizes


def test_breakdown_matches_the_catalog(engine: Engine, tiny_encoder: Any) -> None:
    name = f"sizes {uuid.uuid4().hex[:8]}"
    coll = Collection(engine, name, tiny_encoder, kinds=("matryoshka", "binary"),
                      matryoshka_dims=(8, 16), binary_bits=2)  # fmt: skip
    coll.create()
    try:
        coll.add([f"text number {i}" for i in range(40)], range(40), progress=False)
        with engine.connect() as conn:
            parts = sizes.breakdown(conn, coll.spec)
            per_row = sizes.bytes_per_row(conn, coll.spec)

            quoted = conn.dialect.identifier_preparer.quote(name)

            def avg(column: str) -> float:
                sql = f"SELECT avg(pg_column_size({column})) FROM {quoted}"  # names, no values
                return float(conn.execute(sa.text(sql)).scalar_one())

            def index(suffix: str) -> float:
                size = "SELECT pg_relation_size(to_regclass(quote_ident(:n)))"
                return conn.execute(sa.text(size), {"n": f"{name}_{suffix}"}).scalar_one() / 40

            emb, bits = avg("embedding"), avg("embedding_bits")
            names = ("embedding_hnsw", "embedding_8_hnsw", "embedding_16_hnsw", "embedding_bq_hnsw")
            hnsw, m8, m16, bq = (index(n) for n in names)
        assert set(parts) == {"single", "matryoshka", "binary"}
        assert parts["single"] == (emb, hnsw)
        assert parts["matryoshka"] == (0.0, m8 + m16)
        assert parts["binary"] == (bits, bq)
        assert per_row == {k: c + i for k, (c, i) in parts.items()}
        assert all(i > 0 for _, i in parts.values())
    finally:
        coll.drop(force=True)
