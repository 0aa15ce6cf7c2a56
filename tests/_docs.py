"""The seeded 'docs' table of tests/storage/test_ingest.py and tests/test_query.py.

N unit vectors around ten centers, written by binary COPY into a table with a hostile name
(it stays a name) that stores the matryoshka, binary and multivector kinds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed.storage import ingest
from pgembed.storage.schema import CollectionSpec, table

D = 16
N = 300


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _half(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def make_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(10, D))
    emb = _unit(centers[rng.integers(0, 10, N)] + 0.5 * rng.normal(size=(N, D)))
    return {"emb": emb, "queries": _unit(rng.normal(size=(8, D)))}


def docs_table(
    engine: Engine, data: dict[str, np.ndarray], name: str
) -> Iterator[tuple[CollectionSpec, sa.Table]]:
    """Create and fill the table; a generator for a fixture to yield from, dropping it after."""
    spec = CollectionSpec(
        name,
        D,
        "enc",
        kinds=("matryoshka", "binary", "multivector"),
        matryoshka_dims=(4, 8),
    )
    md = sa.MetaData()
    t = table(spec, md)
    with engine.begin() as conn:
        md.create_all(conn)
    rng = np.random.default_rng(1)
    tokens = [_unit(rng.normal(size=(int(rng.integers(1, 6)), D))) for _ in range(N)]
    rows = ingest.Rows(
        ids=np.arange(N, dtype=np.int64) * 3,
        texts=[f"text {i} — ünïcode" for i in range(N)],
        embedding=data["emb"],
        tokens=tokens,
    )
    with engine.begin() as conn:
        assert ingest.write(conn, spec, rows) == N
    yield spec, t
    with engine.begin() as conn:
        md.drop_all(conn)
