"""Collection tables, binary COPY ingest and the SQLAlchemy search builders, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from pgembed import query
from pgembed.errors import (
    CollectionError,
    ConfigError,
    DimensionError,
    EmptyInputError,
    InputError,
    NonFiniteError,
)
from pgembed.storage import ingest
from pgembed.storage.schema import CollectionSpec, IndexParams, table

D = 16
N = 300


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _half(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(10, D))
    emb = _unit(centers[rng.integers(0, 10, N)] + 0.5 * rng.normal(size=(N, D)))
    return {"emb": emb, "queries": _unit(rng.normal(size=(8, D)))}


@pytest.fixture(scope="module")
def docs(engine: Engine, data: dict[str, np.ndarray]) -> Iterator[tuple[CollectionSpec, sa.Table]]:
    spec = CollectionSpec(
        "storage docs; DROP TABLE x",  # a hostile name stays a name
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


def test_copy_round_trip(engine: Engine, docs: tuple[CollectionSpec, sa.Table], data: dict) -> None:
    _spec, t = docs
    with engine.connect() as conn:
        got = conn.execute(sa.select(t).order_by(t.c.id)).mappings().all()
        md5 = conn.execute(sa.select(sa.func.md5(t.c.content)).order_by(t.c.id)).scalars().all()
    assert len(got) == N
    assert [r["id"] for r in got] == list(range(0, 3 * N, 3))
    assert got[5]["content"] == "text 5 — ünïcode"
    assert [r["embedded_hash"] for r in got] == md5
    emb = np.array([r["embedding"] for r in got], dtype=np.float32)
    np.testing.assert_array_equal(emb, _half(data["emb"]))
    assert got[0]["tokens"].shape[1] == D


def test_upsert_is_idempotent_and_updates(
    engine: Engine, docs: tuple[CollectionSpec, sa.Table], data: dict
) -> None:
    spec, t = docs
    rows = ingest.Rows(
        ids=np.array([0, 3]), texts=["new zero", "new three"],
        embedding=data["emb"][[1, 0]], tokens=[data["emb"][:2], data["emb"][:1]],
    )  # fmt: skip
    with engine.begin() as conn:
        ingest.write(conn, spec, rows)
        ingest.write(conn, spec, rows)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() == N
        assert conn.execute(sa.select(t.c.content).where(t.c.id == 3)).scalar_one() == "new three"
        texts = ["new zero", "changed", "text 2 — ünïcode", "x"]
        mask = ingest.already_embedded(conn, spec, np.array([0, 3, 6, 99999]), texts)
    assert mask.tolist() == [True, False, True, False]
    # restore
    with engine.begin() as conn:
        ingest.write(conn, spec, ingest.Rows(
            ids=np.array([0, 3]), texts=["text 0 — ünïcode", "text 1 — ünïcode"],
            embedding=data["emb"][:2], tokens=[data["emb"][:1], data["emb"][:1]],
        ))  # fmt: skip


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"embedding": np.zeros((1, D + 1), np.float32)}, DimensionError, "expects"),
        ({"embedding": np.full((1, D), np.nan, np.float32)}, NonFiniteError, "NaN"),
        ({"tokens": [np.zeros((0, D), np.float32)]}, EmptyInputError, "empty token set"),
        ({"tokens": None}, InputError, "lacks it"),
        ({"texts": ["a", "b"]}, InputError, "2 texts for 1 ids"),
    ],
)
def test_bad_rows_write_nothing(
    engine: Engine, docs: tuple[CollectionSpec, sa.Table], change: dict, error: type, message: str
) -> None:
    spec, t = docs
    base = {"ids": np.array([777777]), "texts": ["t"], "embedding": np.ones((1, D), np.float32),
            "tokens": [np.ones((2, D), np.float32)]}  # fmt: skip
    rows = ingest.Rows(**{**base, **change})
    with pytest.raises(error, match=message), engine.begin() as conn:
        ingest.write(conn, spec, rows)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id).where(t.c.id == 777777)).first() is None


def test_bad_ids() -> None:
    with pytest.raises(InputError, match="duplicate ids"):
        ingest.check_ids([1, 2, 1])
    with pytest.raises(InputError, match="integers"):
        ingest.check_ids(["a", "b"])


def test_spec_errors_name_the_problem() -> None:
    with pytest.raises(CollectionError, match="unknown kind"):
        CollectionSpec("c", 8, "e", kinds=("dense",))
    with pytest.raises(DimensionError, match="HNSW limit of 2000 for vector"):
        CollectionSpec("c", 3000, "e", precision="vector")
    with pytest.raises(DimensionError, match="matryoshka_dims"):
        CollectionSpec("c", 8, "e", kinds=("matryoshka",), matryoshka_dims=(8,))
    assert CollectionSpec("c", 8, "e", kinds=("fde",), fde_dim=5000).fde_index == "bit"


def test_fde_index_choice() -> None:
    def spec(**kw: Any) -> CollectionSpec:
        return CollectionSpec("c", 8, "e", kinds=("fde",), **kw)

    assert spec(fde_dim=100).fde_index == "bit"  # the default since 0.4.0
    assert spec(fde_dim=100, index=IndexParams(fde="halfvec")).fde_index == "halfvec"
    assert spec(fde_dim=5000, index=IndexParams(fde="halfvec")).fde_index == "bit"  # > 4000
    with pytest.raises(ConfigError, match="fde index 'hnsw': use 'bit' or 'halfvec'"):
        IndexParams(fde="hnsw")  # type: ignore[arg-type]
    # A catalog row from before 0.4.0 names the halfvec index, or none for it: halfvec.
    row = {"name": "c", "encoder": "e", "table_name": "c", "table_schema": "public",
           "id_column": "id", "text_column": "content",
           "kinds": {"fde": {"column": "fde", "dim": 100}, "multivector": {"dim": 8}}}  # fmt: skip
    assert CollectionSpec.from_catalog(row).fde_index == "halfvec"
    row["kinds"]["fde"]["index"] = "bit"
    assert CollectionSpec.from_catalog(row).fde_index == "bit"
    assert spec(fde_dim=100).kinds_json()["fde"]["index"] == "bit"


def _exact(data: dict, qi: int, k: int, ids: np.ndarray) -> list[int]:
    sims = _half(data["emb"]) @ data["queries"][qi]
    return ids[np.argsort(-sims, kind="stable")[:k]].tolist()


def _ids(engine: Engine, stmt: sa.Select) -> tuple[list[int], list[float]]:
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL hnsw.ef_search = 400"))
        rows = conn.execute(stmt).all()
    return [r[0].id if hasattr(r[0], "id") else r[0] for r in rows], [r[-1] for r in rows]


@pytest.mark.parametrize("builder", ["knn", "funnel", "binary_rerank"])
def test_builders_match_brute_force(engine: Engine, docs: tuple, data: dict, builder: str) -> None:
    """With enough candidates every strategy returns the exact top-k, scores included."""
    _spec, t = docs
    ids = np.arange(N) * 3
    for qi in range(len(data["queries"])):
        q = data["queries"][qi]
        if builder == "knn":
            stmt = query.knn(t.c.embedding, q, k=10)
        elif builder == "funnel":
            stmt = query.funnel(t.c.embedding, q, k=10, prefix=8, oversample=30)
        else:
            stmt = query.binary_rerank(t.c.embedding, q, k=10, oversample=30)
        stmt = stmt.with_only_columns(stmt.selected_columns.id, stmt.selected_columns.score)
        got, scores = _ids(engine, stmt)
        assert got == _exact(data, qi, 10, ids), (builder, qi)
        np.testing.assert_allclose(
            scores, np.sort(_half(data["emb"]) @ _half(q))[::-1][:10], atol=2e-3
        )


def test_builders_use_the_hnsw_indexes(engine: Engine, docs: tuple, data: dict) -> None:
    _spec, t = docs
    q = data["queries"][0]
    for stmt, index in [
        (query.knn(t.c.embedding, q), "_embedding_hnsw"),
        (query.funnel(t.c.embedding, q, prefix=4), "_embedding_4_hnsw"),
        (query.binary_rerank(t.c.embedding, q), "_embedding_bq_hnsw"),
    ]:
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(conn.execute(Explain(stmt)).scalars())
        assert index in plan, plan


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, stmt: sa.Select) -> None:
        self.stmt = stmt


@compiles(Explain)
def _explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.stmt, **kw)


class Base(DeclarativeBase):
    pass


def test_orm_filter_plus_funnel(engine: Engine, docs: tuple, data: dict) -> None:
    _spec, t = docs

    class Doc(Base):
        __table__ = t

    q = data["queries"][2]
    stmt = query.funnel(Doc.embedding, q, k=5, prefix=8, oversample=60, where=[Doc.id % 2 == 0])
    with Session(engine) as session:
        session.execute(sa.text("SET hnsw.ef_search = 400"))
        rows = session.execute(stmt).all()
    ids = np.arange(N) * 3
    even = ids % 2 == 0
    sims = _half(data["emb"][even]) @ q
    want = ids[even][np.argsort(-sims)[:5]].tolist()
    assert [doc.id for doc, _ in rows] == want
    assert all(isinstance(doc, Doc) for doc, _ in rows)


def test_builder_input_errors(docs: tuple) -> None:
    _, t = docs
    with pytest.raises(DimensionError, match="has 3 dimensions; the collection stores 16"):
        query.knn(t.c.embedding, [1.0, 2.0, 3.0])
    with pytest.raises(NonFiniteError):
        query.knn(t.c.embedding, np.full(D, np.inf))
    with pytest.raises(pytest.importorskip("pgembed.errors").ConfigError, match="k must be"):
        query.knn(t.c.embedding, np.ones(D), k=0)
    with pytest.raises(pytest.importorskip("pgembed.errors").ConfigError, match="oversample"):
        query.funnel(t.c.embedding, np.ones(D), prefix=4, oversample=10**6)
