"""The seeded collections of tests/sql/ (module-scoped: each module builds and drops its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from _sqlcoll import Coll, D, _drop, _make
from sqlalchemy.engine import Engine

from pgembed.storage.schema import IndexParams
from pgembed.vectors.fde import FDEConfig


@pytest.fixture(scope="module")
def coll(engine: Engine) -> Iterator[Coll]:
    """halfvec FDE index (AMS sketch, no final projection: 4*4*4 = 64 dims)."""
    cfg = FDEConfig(D, 4, 2, "ams_sketch", 4, seed=11)
    c = _make(engine, "sqlf docs; DROP TABLE x", cfg, seed=5, index=IndexParams(fde="halfvec"))
    yield c
    _drop(engine, c)


@pytest.fixture(scope="module")
def bitcoll(engine: Engine) -> Iterator[Coll]:
    """bit FDE index (a final count sketch to 4096 > 4000 dims), inner product, 1-bit codes."""
    cfg = FDEConfig(D, 6, 3, "ams_sketch", 8, final_projection_dimension=4096, seed=12)
    c = _make(engine, "sqlf_bits", cfg, seed=6, bits=1, distance="ip", precision="vector")
    yield c
    _drop(engine, c)


@pytest.fixture(scope="module")
def ivfcoll(engine: Engine) -> Iterator[Coll]:
    """1-bit codes under an IVFFlat index, built once the rows are in."""
    cfg = FDEConfig(D, 2, 2, "identity", seed=13)
    c = _make(engine, "sqlf_ivf", cfg, seed=7, bits=1, index=IndexParams(binary="ivfflat", lists=9))
    with engine.begin() as conn:
        conn.execute(sa.text("REINDEX INDEX sqlf_ivf_embedding_bq_ivfflat"))
    yield c
    _drop(engine, c)
