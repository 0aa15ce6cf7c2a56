"""Sharded collections over three embedded servers: placement, parity with one server."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed.errors import (
    CollectionError,
    ConfigError,
    DimensionError,
    InputError,
    UnknownCollectionError,
)
from pgembed.pipeline import Collection
from pgembed.shards import ShardedCollection

N = 600


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray[Any, Any]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def name() -> str:
    return f"sh_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def data(tiny_encoder: Any) -> tuple[list[str], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(7)
    ids = rng.choice(10**9, size=N, replace=False).astype(np.int64)
    return [f"document {i}" for i in ids], ids, unit(rng, N, tiny_encoder.dim)


def test_rows_land_in_their_hash_partition(make_sharded: Any, tiny_encoder: Any, data: Any) -> None:
    coordinator, urls = make_sharded(3)
    texts, ids, vecs = data
    coll = ShardedCollection(coordinator, name(), tiny_encoder, shards=urls).create()
    assert coll.add(texts, ids, vectors=vecs) == N
    assert coll.count() == N
    # Each shard holds exactly the rows the coordinator's hash partitioning gives it.
    with coordinator.connect() as conn:
        placed = conn.execute(
            sa.text(
                f'SELECT c.relname, t.id FROM public."{coll.spec.table_name}" AS t '
                "JOIN pg_class AS c ON c.oid = t.tableoid"
            )
        ).all()
    assert sorted(int(i) for _, i in placed) == sorted(ids.tolist())
    for s, part in zip(coll.shards, coll.parts, strict=True):
        with s.engine.connect() as conn:
            held = set(conn.execute(sa.select(part.table().c.id)).scalars())
        via_parent = {int(i) for rel, i in placed if rel.endswith(f"_shard_{s.position}")}
        assert held == via_parent and 0 < len(held) < N
    # A re-run writes nothing; the vectors are intact.
    assert coll.add(texts, ids, vectors=vecs) == 0
    assert coll.count() == N
    coll.dispose()


def test_search_parity_with_one_server(
    make_sharded: Any, engine: Engine, tiny_encoder: Any, data: Any
) -> None:
    coordinator, urls = make_sharded(3)
    texts, ids, vecs = data
    n = name()
    kinds = ("single", "matryoshka", "binary", "lexical")
    dims = (16,)
    coll = ShardedCollection(
        coordinator, n, tiny_encoder, shards=urls, kinds=kinds, matryoshka_dims=dims
    ).create()
    coll.add(texts, ids, vectors=vecs)
    ref = Collection(engine, n, tiny_encoder, kinds=kinds, matryoshka_dims=dims).create()
    ref.add(texts, ids, vectors=vecs)
    rng = np.random.default_rng(11)
    # Exact settings: the HNSW graph scans every row of this small table.
    for strategy, opts in (
        ("knn", {"ef_search": 1000}),
        ("funnel", {"ef_search": 1000, "oversample": 50}),
        ("binary", {"ef_search": 1000, "oversample": 50}),
    ):
        for q in unit(rng, 5, tiny_encoder.dim):
            got = coll.search(q, k=10, strategy=strategy, **opts)
            want = ref.search(q, k=10, strategy=strategy, **opts)
            assert [i for i, _ in got] == [i for i, _ in want], strategy
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
            assert not got.partial
        # and against exact cosine in numpy for knn
    q = unit(rng, 1, tiny_encoder.dim)[0]
    exact = ids[np.argsort(-(vecs @ q), kind="stable")[:10]]
    got = coll.search(q, k=10, strategy="knn", ef_search=1000)
    assert [i for i, _ in got] == exact.tolist()
    # A text query is encoded once and searched on every shard.
    assert len(coll.search("document", k=5)) == 5
    coll.dispose()


def test_bm25_and_hybrid_score_as_one_server(
    make_sharded: Any, engine: Engine, tiny_encoder: Any
) -> None:
    from pgembed.corpus import lee_background

    coordinator, urls = make_sharded(3)
    sentences = [s for doc in lee_background() for s in doc.split(". ")]
    texts = [s for s in sentences if 4 < len(s.split()) < 25][:400]
    ids = np.arange(len(texts), dtype=np.int64) * 3 + 5
    n = name()
    kinds = ("single", "lexical")
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls, kinds=kinds).create()
    coll.add(texts, ids)
    ref = Collection(engine, n, tiny_encoder, kinds=kinds).create()
    ref.add(texts, ids)
    queries = ("storm damage in the city", "the fire near Sydney", "police said on Sunday")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("bm25", {}),
        ("bm25", {"k1": 0.9, "b": 0.4}),
        ("hybrid", {"ef_search": 1000}),
        ("hybrid", {"ef_search": 1000, "fusion": "convex", "alpha": 0.3, "depth": 50}),
    ]
    for query in queries:
        for strategy, opts in cases:
            got = coll.search(query, k=10, strategy=strategy, **opts)
            want = ref.search(query, k=10, strategy=strategy, **opts)
            assert len(want) >= 5
            assert [i for i, _ in got] == [i for i, _ in want], (strategy, opts, query)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)
    # Each shard alone scores with its own statistics: other scores than the whole's.
    alone = coll.parts[0].search(queries[0], k=3, strategy="bm25")
    whole = dict(coll.search(queries[0], k=len(texts), strategy="bm25"))
    assert any(abs(whole[i] - s) > 1e-6 for i, s in alone)
    with pytest.raises(InputError, match="no searchable words"):
        coll.search("the of and", strategy="bm25")
    coll.dispose()


def test_open_reads_the_coordinator_catalog(
    make_sharded: Any, tiny_encoder: Any, data: Any
) -> None:
    coordinator, urls = make_sharded(2)
    texts, ids, vecs = data
    n = name()
    made = Collection(coordinator, n, tiny_encoder, shards=urls)  # the declaration's keyword
    assert isinstance(made, ShardedCollection)
    made.create().dispose()
    coll = ShardedCollection.open(coordinator, n, tiny_encoder)
    assert [s.url for s in coll.shards] == urls
    coll.add(texts[:50], ids[:50], vectors=vecs[:50])
    assert coll.count() == 50
    # Bad input is the caller's, not a shard's: the plain error, nothing written.
    with pytest.raises(DimensionError):
        coll.add(texts[50:60], ids[50:60], vectors=vecs[50:60, :8])
    with pytest.raises(InputError, match="9 vectors for 10 texts"):
        coll.add(texts[50:60], ids[50:60], vectors=vecs[50:59])
    with pytest.raises(InputError, match="needs ids"):
        coll.add(texts[50:60], None)  # type: ignore[arg-type]
    assert coll.count() == 50
    with pytest.raises(ConfigError, match="at least one"):
        ShardedCollection(coordinator, n, tiny_encoder, shards=[])
    with pytest.raises(ConfigError, match=r"malformed shard URL mysql://u:\*\*\*@h/d"):
        ShardedCollection(coordinator, n, tiny_encoder, shards=["mysql://u:secret@h/d"])
    with pytest.raises(ConfigError, match="malformed shard URL"):
        ShardedCollection(coordinator, n, tiny_encoder, shards=["/not/a/url"])
    with pytest.raises(ConfigError, match="twice"):
        ShardedCollection(coordinator, n, tiny_encoder, shards=[urls[0], urls[0]])
    with pytest.raises(CollectionError, match="holds rows"):
        coll.drop()
    coll.drop(force=True)
    coll.dispose()
    with pytest.raises(UnknownCollectionError):
        ShardedCollection.open(coordinator, n, tiny_encoder)
    with coordinator.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_foreign_server WHERE srvname LIKE 'pgembed_%'")
        ).scalar()
        assert left == 0
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": n}).scalar() is None
    # The name can be used again.
    again = ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create()
    assert again.count() == 0
    again.dispose()


def test_multivector_parity_with_one_server(
    make_sharded: Any, engine: Engine, tiny_encoder: Any
) -> None:
    from pgembed import FDEConfig

    coordinator, urls = make_sharded(3)
    fde = FDEConfig(dimension=tiny_encoder.dim, num_repetitions=2, num_simhash_projections=2,
                    projection_dimension=8, seed=3)  # fmt: skip
    texts = [f"passage {i} about {w}" for i, w in enumerate(["rivers", "storms", "trains"] * 40)]
    ids = np.arange(len(texts), dtype=np.int64) * 13
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls, kinds=("fde",), fde=fde)
    coll.create().add(texts, ids)
    ref = Collection(engine, n, tiny_encoder, kinds=("fde",), fde=fde).create()
    ref.add(texts, ids)
    # Every row a candidate: exact MaxSim on both sides.
    opts = {"candidates": 1000, "oversample": 10, "ef_search": 1000}
    for query in ("storms over rivers", "a train passage"):
        got = coll.search(query, k=10, strategy="multivector", **opts)
        want = ref.search(query, k=10, strategy="multivector", **opts)
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    coll.dispose()


def test_ann_recall_holds_across_shards(
    make_sharded: Any, engine: Engine, tiny_encoder: Any
) -> None:
    """Default ANN settings: each shard's smaller graph, searched to the same ef_search,
    finds at least as much of the exact top 10 as one server's graph (within noise)."""
    coordinator, urls = make_sharded(3)
    rng = np.random.default_rng(21)
    n_rows, dim = 6000, tiny_encoder.dim
    centers = unit(rng, 30, dim)
    vecs = centers[rng.integers(0, 30, n_rows)] + 0.35 * rng.standard_normal((n_rows, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(n_rows, dtype=np.int64)
    texts = [f"r{i}" for i in ids]
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create()
    coll.add(texts, ids, vectors=vecs)
    ref = Collection(engine, n, tiny_encoder).create()
    ref.add(texts, ids, vectors=vecs)
    stored = vecs.astype(np.float16).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    queries = unit(rng, 40, dim)
    exact = np.argsort(-(queries @ stored.T), axis=1)[:, :10]

    def recall(search: Any) -> float:
        got = [{i for i, _ in search(q, k=10, ef_search=10)} for q in queries]
        return float(
            np.mean([len(g & set(e.tolist())) / 10 for g, e in zip(got, exact, strict=True)])
        )

    sharded, single = recall(coll.search), recall(ref.search)
    assert single < 1.0  # the setting is approximate here, so the comparison means something
    assert sharded >= single - 0.05, (sharded, single)
    coll.dispose()
