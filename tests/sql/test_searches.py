"""pgembed's search functions against a real server, checked against brute force in numpy.

Small seeded collections (tests/_sqlcoll.py); with ef_search and candidate counts covering
every row, each search must return exactly what brute force returns. Also: the plans use the
indexes, bad arguments get pgembed's errors, the session's settings are restored, and the
SQLAlchemy wrappers compose with a plain SELECT.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _sqlcoll import (
    ENC,
    Coll,
    D,
    K,
    N,
    _half,
    _plans,
    _queries,
    _rows,
    _search,
    _search_on,
    _topk,
    _unit,
)
from sqlalchemy.engine import Engine

from pgembed import sqlfuncs
from pgembed.storage import catalog
from pgembed.storage.schema import CollectionSpec, table
from pgembed.vectors import binary
from pgembed.vectors.maxsim import maxsim as np_maxsim

# --- the searches against brute force ------------------------------------------------------


def test_search_knn_is_exact(engine: Engine, coll: Coll) -> None:
    for q in _queries(1):
        ids, scores = _search(engine, sqlfuncs.search_knn(coll.spec.name, q, K, ef_search=N))
        exact = coll.cos(q)
        assert ids == _topk(exact, coll.ids, K)
        np.testing.assert_allclose(scores, np.sort(exact)[::-1][:K], atol=2e-3)


def test_search_knn_inner_product_on_vector_column(engine: Engine, bitcoll: Coll) -> None:
    for q in _queries(2):
        ids, scores = _search(engine, sqlfuncs.search_knn(bitcoll.spec.name, q, K, ef_search=N))
        ip = bitcoll.emb @ q
        assert ids == _topk(ip, bitcoll.ids, K)
        np.testing.assert_allclose(scores, np.sort(ip)[::-1][:K], atol=1e-5)


def test_search_funnel_exact_and_prefix_stage(engine: Engine, coll: Coll) -> None:
    for q in _queries(3):
        # every row a candidate: exact kNN
        hits = sqlfuncs.search_funnel(coll.spec.name, q, K, oversample=N // K, ef_search=N)
        assert _search(engine, hits)[0] == _topk(coll.cos(q), coll.ids, K)
        # 2*K candidates from the 8-dim prefix (cosine), reranked exactly
        hits = sqlfuncs.search_funnel(coll.spec.name, q, K, prefix=8, oversample=2, ef_search=N)
        e8, q8 = _half(coll.emb)[:, :8], _half(q)[:8]
        pre = (e8 @ q8) / (np.linalg.norm(e8, axis=1) * np.linalg.norm(q8))
        cand = np.argsort(-pre, kind="stable")[: 2 * K]
        want = _topk(coll.cos(q)[cand], coll.ids[cand], K)
        assert _search(engine, hits)[0] == want


def test_search_binary_exact_and_rescore_stage(engine: Engine, coll: Coll) -> None:
    assert coll.bits is not None
    code = binary.residual_from_packed(coll.bits, np.ones((N, 2), np.float32), D)
    for q in _queries(4):
        hits = sqlfuncs.search_binary(
            coll.spec.name, q, K, oversample=N // K, rescore=N, ef_search=N
        )
        assert _search(engine, hits)[0] == _topk(coll.cos(q), coll.ids, K)
        # all rows in stage 1, keep 2*K by the level-weighted Hamming score, rerank exactly
        qc = binary.residual_encode(q, 2)
        sim = binary.residual_inner_product(
            qc, binary.ResidualCode(code.levels, np.repeat(qc.scales, N, axis=0), D)
        )[0]
        keep = np.lexsort((coll.ids, -sim.astype(np.float64)))[: 2 * K]
        want = _topk(coll.cos(q)[keep], coll.ids[keep], K)
        hits = sqlfuncs.search_binary(
            coll.spec.name, q, K, oversample=N // K, rescore=2 * K, ef_search=N
        )
        assert _search(engine, hits)[0] == want


def test_search_binary_one_bit_codes(engine: Engine, bitcoll: Coll) -> None:
    """1 bit per dimension: Hamming candidates, no rescore stage, exact rerank."""
    codes = binary.binary_quantize(bitcoll.emb)
    for q in _queries(24):
        ids, scores = _search(
            engine, sqlfuncs.search_binary(bitcoll.spec.name, q, K, oversample=N // K, ef_search=N)
        )
        ip = bitcoll.emb @ q
        assert ids == _topk(ip, bitcoll.ids, K)
        np.testing.assert_allclose(scores, np.sort(ip)[::-1][:K], atol=1e-5)
        # 3*K candidates by Hamming distance, reranked by inner product. Ties at the cut
        # distance may be admitted in any order, but the top K of (every row up to the cut)
        # that lie strictly below it are in the result whichever tied rows got in.
        ham = binary.hamming_distance(binary.binary_quantize(q), codes)[0]
        cut = np.sort(ham)[3 * K - 1]
        upto = np.flatnonzero(ham <= cut)
        below = {int(bitcoll.ids[i]) for i in np.flatnonzero(ham < cut)}
        sure = set(_topk(ip[upto], bitcoll.ids[upto], K)) & below
        hits = sqlfuncs.search_binary(bitcoll.spec.name, q, K, oversample=3, ef_search=N)
        got = set(_search(engine, hits)[0])
        assert sure <= got and len(got) == K


def test_search_binary_ivfflat(engine: Engine, ivfcoll: Coll) -> None:
    """Probing every list is exact Hamming order; fewer lists still fill k (iterative scan)."""
    for q in _queries(25):
        hits = sqlfuncs.search_binary(ivfcoll.spec.name, q, K, oversample=N // K, probes=9)
        assert _search(engine, hits)[0] == _topk(ivfcoll.cos(q), ivfcoll.ids, K)
        with engine.connect() as conn:
            conn.execute(sa.text("SET ivfflat.probes = 1"))
            # default probes ceil(sqrt(9)) = 3 lists, yet 200 candidates come back
            ids, scores = _search_on(
                conn, sqlfuncs.search_binary(ivfcoll.spec.name, q, 200, oversample=1)
            )
            assert len(ids) == 200 and list(scores) == sorted(scores, reverse=True)
            after = conn.execute(sa.text("SHOW ivfflat.probes")).scalar_one()
            assert after == "1"  # the session's setting is restored
    base = ivfcoll.spec.table_name
    plans = _plans(engine, sqlfuncs.search_binary(ivfcoll.spec.name, q, K))
    assert re.search(rf"Index Scan using {base}_embedding_bq_ivfflat", plans), plans
    with pytest.raises(sa.exc.DBAPIError, match=r"ef_search applies to an HNSW index, but "
                       r"collection 'sqlf_ivf' has an IVFFlat binary index"):  # fmt: skip
        _search(engine, sqlfuncs.search_binary(ivfcoll.spec.name, q, K, ef_search=40))
    with pytest.raises(sa.exc.DBAPIError, match=r"probes must be an integer in 1..9, got 10"):
        _search(engine, sqlfuncs.search_binary(ivfcoll.spec.name, q, K, probes=10))


def test_search_multivector_exact(engine: Engine, coll: Coll, bitcoll: Coll) -> None:
    rng = np.random.default_rng(9)
    for c in (coll, bitcoll):
        docs = [_half(t) for t in c.tokens]
        for _ in range(3):
            q = _unit(rng.normal(size=(int(rng.integers(1, 6)), D)))
            hits = sqlfuncs.search_multivector(c.spec.name, q, K, candidates=N, ef_search=N)
            ids, scores = _search(engine, hits)
            exact = np_maxsim(_half(q), docs)
            assert ids == _topk(exact, c.ids, K)
            np.testing.assert_allclose(scores, np.sort(exact)[::-1][:K], atol=2e-3)


def test_search_multivector_bit_index_rescores_on_float_fde(engine: Engine, bitcoll: Coll) -> None:
    """With bit candidates = every row, the float-FDE stage picks the FDE top-`candidates`."""
    q = _unit(np.random.default_rng(10).normal(size=(4, D)))
    fde_docs = _half(bitcoll.fde.encode_document(bitcoll.tokens))
    qf = _half(bitcoll.fde.encode_query([q])[0])
    cand = np.lexsort((bitcoll.ids, -(fde_docs @ qf)))[:30]
    exact = np_maxsim(_half(q), [_half(bitcoll.tokens[i]) for i in cand])
    want = _topk(exact, bitcoll.ids[cand], 5)
    hits = sqlfuncs.search_multivector(
        bitcoll.spec.name, q, 5, candidates=30, oversample=N // 30 + 1, ef_search=N
    )
    assert _search(engine, hits)[0] == want


def test_search_knn_on_hash_partitioned_table(engine: Engine) -> None:
    spec = CollectionSpec("sqlf_parted", D, ENC.name, kinds=("single",), text_column=None)
    md = sa.MetaData()
    t = table(spec, md)
    t.dialect_options["postgresql"]["partition_by"] = "HASH (id)"
    rng = np.random.default_rng(12)
    emb = _unit(rng.normal(size=(N, D)))
    ids = np.arange(N, dtype=np.int64)
    with engine.begin() as conn:
        catalog.register_encoder(conn, ENC)
        catalog.register_collection(conn, spec, None)
        t.create(conn)
        for i in range(3):
            conn.execute(
                sa.text(
                    f"CREATE TABLE sqlf_parted_{i} PARTITION OF sqlf_parted "
                    f"FOR VALUES WITH (MODULUS 3, REMAINDER {i})"
                )
            )
        conn.execute(
            t.insert(), [{"id": int(i), "embedding": e} for i, e in zip(ids, emb, strict=True)]
        )
    try:
        for q in _queries(13):
            ids_got, _ = _search(engine, sqlfuncs.search_knn(spec.name, q, K, ef_search=N))
            e = _half(emb)
            exact = (e @ _half(q)) / (np.linalg.norm(e, axis=1) * np.linalg.norm(_half(q)))
            assert ids_got == _topk(exact, ids, K)
    finally:
        with engine.begin() as conn:
            t.drop(conn)
            catalog.unregister_collection(conn, spec.name)


# --- plans -------------------------------------------------------------------------------


def test_searches_use_the_hnsw_indexes(engine: Engine, coll: Coll, bitcoll: Coll) -> None:
    q = _queries(17, 1)[0]
    base = coll.spec.table_name[:40]
    cases = [
        (sqlfuncs.search_knn(coll.spec.name, q), f"{base}_embedding_hnsw"),
        (sqlfuncs.search_funnel(coll.spec.name, q), f"{base}_embedding_8_hnsw"),
        (sqlfuncs.search_funnel(coll.spec.name, q, prefix=16), f"{base}_embedding_16_hnsw"),
        (sqlfuncs.search_binary(coll.spec.name, q), f"{base}_embedding_bq_hnsw"),
        (sqlfuncs.search_multivector(coll.spec.name, q[None, :]), f"{base}_fde_hnsw"),
        (sqlfuncs.search_multivector(bitcoll.spec.name, q[None, :]), "sqlf_bits_fde_bq_hnsw"),
    ]
    for hits, index in cases:
        plans = _plans(engine, hits)
        assert re.search(r"Index Scan using \"?" + re.escape(index), plans), (index, plans)


# --- bad input ---------------------------------------------------------------------------


def _error(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> str:
    """Run a failing call inside a transaction; return the message and check nothing stuck."""
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT current_setting('hnsw.ef_search', true)")).scalar()
        counts = conn.execute(sa.text("SELECT count(*) FROM pgembed.collections")).scalar()
        sp = conn.begin_nested()
        with pytest.raises(sa.exc.DBAPIError) as info:
            conn.execute(sa.text(sql), params or {})
        sp.rollback()
        after = conn.execute(sa.text("SELECT current_setting('hnsw.ef_search', true)")).scalar()
        assert after == before
        assert conn.execute(sa.text("SELECT count(*) FROM pgembed.collections")).scalar() == counts
    return str(info.value.orig)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "SELECT * FROM pgembed.search_knn('nope', :q)",
            r"no collection named 'nope'; known collections: .*'sqlf docs; DROP TABLE x'",
        ),
        (
            "SELECT * FROM pgembed.search_knn('docs; DROP TABLE x', :q)",
            r"no collection named 'docs; DROP TABLE x'",
        ),
        (
            "SELECT * FROM pgembed.search_knn(:c, '[1,2,3]')",
            r"the query vector has 3 dimensions; the collection stores 32",
        ),
        (
            "SELECT * FROM pgembed.search_knn(:c, :q, 0)",
            r"k must be an integer in 1\.\.100000, got 0",
        ),
        ("SELECT * FROM pgembed.search_knn(:c, :q, NULL)", r"k must be .* got NULL"),
        (
            "SELECT * FROM pgembed.search_knn(:c, :q, 5, 5000)",
            r"ef_search must be an integer in 1\.\.1000",
        ),
        (
            "SELECT * FROM pgembed.search_knn(:c, :q, 5, NULL, 'sideways')",
            r"iterative_scan must be off, relaxed_order or strict_order",
        ),
        ("SELECT * FROM pgembed.search_knn(:c, array_fill(0, ARRAY[32])::vector)", r"all zeros"),
        (
            "SELECT * FROM pgembed.search_funnel(:c, :q, 5, 12)",
            r"has no index on prefix 12; its prefixes are 8, 16",
        ),
        (
            "SELECT * FROM pgembed.search_funnel(:c, :q, 5, NULL, 5000)",
            r"oversample must be an integer in 1\.\.1000",
        ),
        (
            "SELECT * FROM pgembed.search_binary(:c, :q, 10, 10, 5)",
            r"rescore must be an integer in 10\.\.100",
        ),
        (
            "SELECT * FROM pgembed.search_multivector(:c, '{}'::vector[])",
            r"the query has no token vectors",
        ),
        (
            "SELECT * FROM pgembed.search_multivector(:c, '{\"[1,2]\"}'::vector[])",
            r"token vector of 2 dimensions; expected 32",
        ),
        (
            "SELECT * FROM pgembed.search_multivector(:c, ARRAY[:q], 10, 5)",
            r"candidates must be an integer in 10\.\.100000, got 5",
        ),
        (
            "SELECT * FROM pgembed.search_multivector(:c, ARRAY[:q], 10, 10, 0)",
            r"oversample must be .* got 0",
        ),
        (
            "SELECT * FROM pgembed.search_multivector('sqlf_plain', ARRAY[:q])",
            r"collection 'sqlf_plain' does not store the 'fde' kind; it stores: single",
        ),
        ("SELECT pgembed.fde_query(987654, ARRAY[:q])", r"no FDE config 987654"),
        ("SELECT * FROM pgembed.search_knn(:c, '[NaN,1]')", r"NaN not allowed in vector"),
        (
            "SELECT * FROM pgembed.search_knn(:c, array_fill(1e6, ARRAY[32])::vector)",
            r"out of range",
        ),
    ],
)
def test_bad_input_gives_pgembed_errors(
    engine: Engine, coll: Coll, plain: None, sql: str, message: str
) -> None:
    params: dict[str, Any] = {}
    if ":c" in sql:
        params["c"] = coll.spec.name
    sql = sql.replace(":q", "CAST(:q AS vector)")
    if ":q" in sql:
        params["q"] = str(_queries(18, 1)[0].tolist())
    assert re.search(message, _error(engine, sql, params)), message


@pytest.fixture(scope="module")
def plain(engine: Engine) -> Iterator[None]:
    spec = CollectionSpec("sqlf_plain", D, ENC.name, text_column=None)
    with engine.begin() as conn:
        catalog.register_encoder(conn, ENC)
        catalog.register_collection(conn, spec, None)
        table(spec, sa.MetaData()).create(conn)
    yield
    with engine.begin() as conn:
        table(spec, sa.MetaData()).drop(conn)
        catalog.unregister_collection(conn, spec.name)


def test_ef_search_is_restored_after_a_search(engine: Engine, coll: Coll) -> None:
    q = _queries(19, 1)[0]
    with engine.connect() as conn:
        conn.execute(sa.text("SET hnsw.ef_search = 77"))
        conn.execute(sa.select(sqlfuncs.search_knn(coll.spec.name, q, 5, ef_search=300))).all()
        assert conn.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "77"
        conn.execute(sa.select(sqlfuncs.search_funnel(coll.spec.name, q, 5))).all()
        assert conn.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "77"
        conn.rollback()


# --- more than ef_search can give -------------------------------------------------------


def test_candidate_counts_above_1000_use_an_iterative_scan(engine: Engine, coll: Coll) -> None:
    q = _queries(22, 1)[0]
    ids, scores = _search(engine, sqlfuncs.search_funnel(coll.spec.name, q, 200, oversample=10))
    assert len(ids) == 200 and list(scores) == sorted(scores, reverse=True)
    ids, _ = _search(
        engine, sqlfuncs.search_knn(coll.spec.name, q, N, iterative_scan="strict_order")
    )
    assert sorted(ids) == sorted(int(i) for i in coll.ids)


def test_wrappers_compose_with_plain_select(engine: Engine, coll: Coll) -> None:
    q = _queries(23, 1)[0]
    t = table(coll.spec, sa.MetaData())
    hits = sqlfuncs.search_knn(coll.spec.name, q, 5, ef_search=N)
    stmt = (
        sa.select(t.c.id, hits.c.score, sqlfuncs.maxsim(q[None, :], t.c.tokens).label("ms"))
        .join(hits, hits.c.id == t.c.id)
        .order_by(hits.c.score.desc())
    )
    rows = _rows(engine, stmt)
    assert [r[0] for r in rows] == _topk(coll.cos(q), coll.ids, 5)
    for r in rows:
        i = int(np.flatnonzero(coll.ids == r[0])[0])
        want = np_maxsim(_half(q[None, :]), [_half(coll.tokens[i])])[0]
        assert r[2] == pytest.approx(want, abs=2e-3)


def test_funnel_and_plans_on_vector_precision_with_inner_product(
    engine: Engine, bitcoll: Coll
) -> None:
    for q in _queries(25):
        hits = sqlfuncs.search_funnel(bitcoll.spec.name, q, K, oversample=N // K, ef_search=N)
        ids, scores = _search(engine, hits)
        ip = bitcoll.emb @ q
        assert ids == _topk(ip, bitcoll.ids, K)
        np.testing.assert_allclose(scores, np.sort(ip)[::-1][:K], atol=1e-5)
    q = _queries(26, 1)[0]
    for hits, index in (
        (sqlfuncs.search_knn(bitcoll.spec.name, q), "sqlf_bits_embedding_hnsw"),
        (sqlfuncs.search_funnel(bitcoll.spec.name, q, prefix=16), "sqlf_bits_embedding_16_hnsw"),
        (sqlfuncs.search_binary(bitcoll.spec.name, q), "sqlf_bits_embedding_bq_hnsw"),
    ):
        assert f"Index Scan using {index}" in _plans(engine, hits), index
