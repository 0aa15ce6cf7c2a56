"""pgembed's SQL functions (migrations 0002 and 0003) against a real server, checked against numpy.

Small seeded collections; with ef_search and candidate counts covering every row, each
search must return exactly what brute force returns.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from pgembed import migrate, sqlfuncs
from pgembed.storage import catalog, ingest
from pgembed.storage.schema import CollectionSpec, IndexParams, table
from pgembed.vectors import binary
from pgembed.vectors.fde import FDEConfig, FDEEncoder
from pgembed.vectors.maxsim import maxsim as np_maxsim

D = 32
N = 240
K = 10
ENC = catalog.EncoderRecord(name="sqlfuncs-enc", fingerprint="f" * 64, dim=D, max_length=64)
HERE = Path(__file__).parent


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _half(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.asarray(x, dtype=np.float16), dtype=np.float32)


def _topk(scores: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    order = np.lexsort((ids, -scores))  # score desc, then id, like the SQL functions
    return [int(i) for i in ids[order[:k]]]


class Coll:
    def __init__(
        self, spec: CollectionSpec, fde: FDEEncoder, fde_id: int, data: dict[str, Any]
    ) -> None:
        self.spec, self.fde, self.fde_id = spec, fde, fde_id
        self.ids: np.ndarray = data["ids"]
        self.emb: np.ndarray = data["emb"]
        self.tokens: list[np.ndarray] = data["tokens"]
        self.bits: np.ndarray | None = data["bits"]

    def cos(self, q: np.ndarray) -> np.ndarray:
        e = _half(self.emb)
        qh = _half(q)
        return np.asarray((e @ qh) / (np.linalg.norm(e, axis=1) * np.linalg.norm(qh)))


def _make(
    engine: Engine, name: str, cfg: FDEConfig, seed: int, bits: int = 2, **spec_kw: Any
) -> Coll:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, D))
    emb = _unit(centers[rng.integers(0, 12, N)] + 0.6 * rng.normal(size=(N, D)))
    tokens = [
        _unit(centers[rng.integers(0, 12)] + rng.normal(size=(int(rng.integers(2, 9)), D)))
        for _ in range(N)
    ]
    fde = FDEEncoder(cfg)
    spec = CollectionSpec(
        name,
        D,
        ENC.name,
        kinds=("single", "matryoshka", "binary", "fde"),
        matryoshka_dims=(8, 16),
        binary_bits=bits,
        fde_dim=cfg.output_dim,
        text_column=None,
        **spec_kw,
    )
    ids = np.arange(N, dtype=np.int64) * 7 + 3
    codes = binary.pack_residual(emb, bits) if bits > 1 else None
    with engine.begin() as conn:
        catalog.register_encoder(conn, ENC)
        fde_id = catalog.save_fde_config(conn, fde)
        catalog.register_collection(conn, spec, fde_id)
        table(spec, sa.MetaData()).create(conn)
        rows = ingest.Rows(
            ids=ids, embedding=emb, embedding_bits=codes, fde=fde.encode_document(tokens),
            tokens=tokens,
        )  # fmt: skip
        ingest.write(conn, spec, rows)
        conn.execute(sa.text("ANALYZE " + _qualified(conn, spec)))
    return Coll(spec, fde, fde_id, {"ids": ids, "emb": emb, "tokens": tokens, "bits": codes})


def _qualified(conn: sa.Connection, spec: CollectionSpec) -> str:
    prep = sa.sql.compiler.IdentifierPreparer(conn.dialect)
    return f"{prep.quote(spec.schema)}.{prep.quote(spec.table_name)}"


def _drop(engine: Engine, coll: Coll) -> None:
    with engine.begin() as conn:
        table(coll.spec, sa.MetaData()).drop(conn)
        catalog.unregister_collection(conn, coll.spec.name)


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


def _rows(engine: Engine, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(stmt, params or {}).all())


def _search(engine: Engine, hits: Any) -> tuple[list[int], np.ndarray]:
    with engine.connect() as conn:
        return _search_on(conn, hits)


def _search_on(conn: sa.Connection, hits: Any) -> tuple[list[int], np.ndarray]:
    rows = conn.execute(sa.select(hits)).all()
    return [int(r[0]) for r in rows], np.array([r[1] for r in rows])


def _queries(seed: int, n: int = 4) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, D)))


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


@pytest.fixture(scope="module")
def ivfcoll(engine: Engine) -> Iterator[Coll]:
    """1-bit codes under an IVFFlat index, built once the rows are in."""
    cfg = FDEConfig(D, 2, 2, "identity", seed=13)
    c = _make(engine, "sqlf_ivf", cfg, seed=7, bits=1, index=IndexParams(binary="ivfflat", lists=9))
    with engine.begin() as conn:
        conn.execute(sa.text("REINDEX INDEX sqlf_ivf_embedding_bq_ivfflat"))
    yield c
    _drop(engine, c)


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


# --- scalar functions --------------------------------------------------------------------


def test_maxsim_equals_numpy_both_overloads(engine: Engine) -> None:
    rng = np.random.default_rng(14)
    q, d = rng.normal(size=(5, D)).astype(np.float32), rng.normal(size=(7, D)).astype(np.float32)
    want = float(np_maxsim(q, [d])[0])
    got = _rows(engine, sa.select(sqlfuncs.maxsim(q, d)))[0][0]
    assert got == pytest.approx(want, rel=1e-5)
    half = _rows(engine, sa.select(sqlfuncs.maxsim(q, d, half=True)))[0][0]
    assert half == pytest.approx(float(np_maxsim(_half(q), [_half(d)])[0]), rel=1e-4)


def test_maxsim_empty_and_null(engine: Engine) -> None:
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT pgembed.maxsim('{\"[1,2]\"}'::vector[], '{}')")).scalar()
            is None
        )
        assert (
            conn.execute(sa.text("SELECT pgembed.maxsim(NULL::vector[], '{\"[1,2]\"}')")).scalar()
            is None
        )
        with pytest.raises(
            sa.exc.DBAPIError, match=r"pgembed\.maxsim: the query has no token vectors"
        ):
            conn.execute(sa.text("SELECT pgembed.maxsim('{}'::halfvec[], '{\"[1,2]\"}')"))


@pytest.mark.parametrize(
    "cfg",
    [
        FDEConfig(D, 5, 3, "ams_sketch", 6, seed=21),
        FDEConfig(D, 3, 2, "identity", seed=22),
        FDEConfig(D, 4, 0, "ams_sketch", 8, seed=23),
        FDEConfig(D, 4, 3, "ams_sketch", 8, final_projection_dimension=50, seed=24),
        FDEConfig(D, 2, 4, "identity", final_projection_dimension=300, seed=25),
    ],
    ids=["ams", "identity", "k0", "ams-final", "identity-final"],
)
def test_fde_query_equals_python(engine: Engine, cfg: FDEConfig) -> None:
    enc = FDEEncoder(cfg)
    with engine.begin() as conn:
        cid = catalog.save_fde_config(conn, enc)
    rng = np.random.default_rng(cfg.seed)
    for n in (1, 3, 17):
        q = rng.normal(size=(n, D)).astype(np.float32)
        got = np.array(_rows(engine, sa.select(sqlfuncs.fde_query(cid, q)))[0][0])
        want = enc.encode_query([q])[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_fde_query_by_collection_name(engine: Engine, coll: Coll) -> None:
    q = _unit(np.random.default_rng(15).normal(size=(3, D)))
    got = _rows(engine, sa.select(sqlfuncs.fde_query(coll.spec.name, q)))[0][0]
    np.testing.assert_allclose(got, coll.fde.encode_query([q])[0], rtol=1e-3, atol=1e-4)


def test_residual_levels_match_python(engine: Engine) -> None:
    rng = np.random.default_rng(16)
    for bits in (1, 2, 3):
        x = rng.normal(size=D).astype(np.float32)
        row = _rows(
            engine,
            sa.text(
                "SELECT codes::text[], scales FROM pgembed.residual_levels(CAST(:q AS vector), :b)"
            ),
            {"q": str(x.tolist()), "b": bits},
        )[0]
        code = binary.residual_encode(x, bits)
        assert "".join(row[0]) == binary.residual_texts(code)[0]
        np.testing.assert_allclose(row[1], code.scales[0], rtol=1e-6)


# --- plans -------------------------------------------------------------------------------


def _plans(engine: Engine, hits: Any) -> str:
    """The plans of the statements a search runs (auto_explain, nested, as NOTICEs)."""
    notices: list[str] = []
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.add_notice_handler(lambda d: notices.append(d.message_primary or ""))  # type: ignore[union-attr]
        conn.execute(sa.text("LOAD 'auto_explain'"))
        # 240 rows are cheaper to sort than to search: forbid seq scans, so a plan without
        # the index would mean the search's expression does not match the index's.
        settings = ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice")
        conn.execute(sa.text("SET enable_seqscan = off"))
        for s in settings:
            conn.execute(sa.text(f"SET auto_explain.{s}"))
        conn.execute(sa.select(hits)).all()
        conn.rollback()
    return "\n".join(notices)


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


# --- security ----------------------------------------------------------------------------


def test_functions_are_security_invoker_pinned_and_commented(engine: Engine) -> None:
    rows = _rows(
        engine,
        sa.text(
            "SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig, "
            "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
            "WHERE p.pronamespace = 'pgembed'::regnamespace"
        ),
    )
    names = {r[0].split("(")[0] for r in rows}
    assert {"pgembed.maxsim", "pgembed.fde_query", "pgembed.search_knn", "pgembed.search_funnel",
            "pgembed.search_binary", "pgembed.search_multivector"} <= names  # fmt: skip
    for sig, secdef, config, comment in rows:
        assert secdef is False, sig
        assert comment, f"{sig} has no COMMENT"
        assert config == ["search_path=pg_catalog, pg_temp"], (sig, config)


def test_volatility_markings(engine: Engine) -> None:
    rows = dict(
        _rows(
            engine,
            sa.text(
                "SELECT p.oid::regprocedure::text, p.provolatile::text || p.proparallel::text || "
                "CASE WHEN p.proisstrict THEN 's' ELSE '-' END FROM pg_proc p "
                "WHERE p.pronamespace = 'pgembed'::regnamespace"
            ),
        )
    )
    assert rows["pgembed.maxsim(halfvec[],halfvec[])"] == "iss"
    assert rows["pgembed.fde_query(integer,vector[])"] == "sss"
    assert rows["pgembed.search_knn(text,vector,integer,integer,text)"] == "vu-"


def test_table_with_hostile_name_is_a_name(engine: Engine, coll: Coll) -> None:
    """The fixture's table is literally named 'sqlf docs; DROP TABLE x' and searches work."""
    assert coll.spec.table_name == "sqlf docs; DROP TABLE x"
    ids, _ = _search(engine, sqlfuncs.search_knn(coll.spec.name, _queries(20, 1)[0], 3))
    assert len(ids) == 3


def test_search_path_is_pinned_against_planted_objects(make_database: Any) -> None:
    """pgvector in its own schema; look-alike functions and operators planted ahead of it."""
    url = make_database()
    opts = {"options": "-csearch_path=public,ext"}
    eng = sa.create_engine(url, connect_args=opts)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA ext"))
            conn.execute(sa.text("CREATE EXTENSION vector SCHEMA ext"))
        migrate.upgrade(eng)
        c = _make(eng, "planted", FDEConfig(D, 3, 2, "ams_sketch", 4, seed=31), seed=8)
        with eng.begin() as conn:
            for sql in (
                "CREATE FUNCTION public.subvector(ext.halfvec, int, int) RETURNS ext.halfvec "
                "LANGUAGE sql AS $$ SELECT (1/0)::text::ext.halfvec $$",
                "CREATE FUNCTION public.binary_quantize(ext.halfvec) RETURNS bit "
                "LANGUAGE sql AS $$ SELECT (1/0)::bit $$",
                "CREATE FUNCTION public.evil(ext.halfvec, ext.halfvec) RETURNS float8 "
                "LANGUAGE sql AS $$ SELECT 1/0 $$",
                "CREATE OPERATOR public.<=> (LEFTARG = ext.halfvec, RIGHTARG = ext.halfvec, "
                "FUNCTION = public.evil)",
                "CREATE OPERATOR public.<#> (LEFTARG = ext.halfvec, RIGHTARG = ext.halfvec, "
                "FUNCTION = public.evil)",
                "CREATE FUNCTION public.unnest(ext.halfvec[]) RETURNS SETOF ext.halfvec "
                "LANGUAGE sql AS $$ SELECT (1/0)::text::ext.halfvec $$",
            ):
                conn.execute(sa.text(sql))
            # the planted objects do capture unqualified calls from this session
            with pytest.raises(sa.exc.DBAPIError, match="division by zero"), conn.begin_nested():
                conn.execute(sa.text("SELECT '[1,2]'::halfvec <=> '[1,2]'::halfvec"))
        q = _queries(21, 1)[0]
        for hits, want in (
            (sqlfuncs.search_knn(c.spec.name, q, K, ef_search=N), _topk(c.cos(q), c.ids, K)),
            (sqlfuncs.search_funnel(c.spec.name, q, K, oversample=N // K, ef_search=N), None),
            (sqlfuncs.search_binary(c.spec.name, q, K, oversample=N // K, rescore=N), None),
            (sqlfuncs.search_multivector(c.spec.name, q[None, :], K, candidates=N), None),
        ):  # fmt: skip
            ids, _ = _search(eng, hits)
            assert len(ids) == K
            if want is not None:
                assert ids == want
    finally:
        eng.dispose()


# --- psql --------------------------------------------------------------------------------


def _psql(pg_home: Path | None) -> str:
    if pg_home is not None:
        from pgembed.server import EmbeddedServer

        return str(EmbeddedServer(pg_home).binary("psql"))
    found = shutil.which("psql")
    if found is None:
        pytest.skip("no psql binary on PATH for an external server")
    return found


# One regression pair per function family, pgvector's test/sql + expected style: every
# tests/sql/NAME.sql runs alone, in a fresh database, and prints exactly NAME.expected.
SQL_SCRIPTS = sorted((HERE / "sql").glob("*.sql"))


def test_every_regression_script_has_its_expected_output() -> None:
    scripts = {p.stem for p in SQL_SCRIPTS}
    expected = {p.stem for p in (HERE / "sql").glob("*.expected")}
    assert scripts == expected, scripts ^ expected
    assert {"search", "maxsim", "fde", "binary", "helpers"} <= scripts


@pytest.mark.parametrize("script", SQL_SCRIPTS, ids=lambda p: p.stem)
def test_psql_script_matches_expected(
    make_database: Any, pg_home: Path | None, script: Path
) -> None:
    url = make_database()  # a fresh database: the error messages list every collection
    eng = sa.create_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    out = subprocess.run(
        [_psql(pg_home), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), libpq],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == script.with_suffix(".expected").read_text()


def _expected() -> dict[str, str]:
    lines = (HERE / "sql" / "search.expected").read_text().splitlines()
    return dict(line.split("|", 1) for line in lines)


def _hits_text(ids: list[int], scores: np.ndarray) -> str:
    return " ".join(f"{i}:{s:.4f}" for i, s in zip(ids, scores, strict=True))


def test_psql_expected_values_match_numpy() -> None:
    """Every value in search.expected, recomputed independently."""
    exp = _expected()
    emb = np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [-1, 0, 0.5, 0], [0.5, 0.5, 0.5, 0.5]],
        dtype=np.float32,
    )
    ids = np.arange(1, 6)
    tokens = [
        np.array(t, dtype=np.float32)
        for t in (
            [[1, 0, 0, 0], [0, 1, 0, 0]],
            [[0, 1, 0, 0], [0, 0, 1, 0]],
            [[1, 1, 0, 0]],
            [[-1, 0, 0, 0], [0, 0, 1, 1]],
            [[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 1]],
        )
    ]
    q = np.array([1, 0.5, 0, 0], dtype=np.float32)
    qt = np.array([[1, 0.5, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    # the script's literals are what Python would store
    script = (HERE / "sql" / "search.sql").read_text()
    bits = binary.residual_texts(binary.residual_encode(emb, 2))
    enc = FDEEncoder.from_arrays(FDEConfig(4, 1, 1, "identity"), simhash=[[[1], [0], [0], [0]]])
    for i, (b, f) in enumerate(zip(bits, enc.encode_document(tokens), strict=True)):
        fde = "[" + ",".join(f"{x:g}" for x in f) + "]"
        assert f"({i + 1}, '[" in script and f"B'{b}', '{fde}'" in script, (b, fde)

    assert exp["version"] == "0.4.0"
    assert float(exp["maxsim vector[]"]) == pytest.approx(np_maxsim(qt, [tokens[4]])[0])
    assert float(exp["maxsim halfvec[]"]) == pytest.approx(np_maxsim(qt, [tokens[3]])[0])
    assert exp["maxsim empty doc"] == "NULL"
    want_fde = "[" + ",".join(f"{x:g}" for x in enc.encode_query([qt])[0]) + "]"
    assert exp["fde_query config"] == exp["fde_query collection"] == want_fde
    code = binary.residual_encode(q, 2)
    levels = binary.residual_texts(code)[0]
    assert exp["residual_levels"] == (
        f"{{{levels[:4]},{levels[4:]}}} {{{code.scales[0][0]:g},{code.scales[0][1]:g}}}"
    )

    cos = (emb @ q) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    top = _topk(cos, ids, 3)
    assert exp["search_knn"] == _hits_text(top, cos[np.array(top) - 1])
    pre = (emb[:, :2] @ q[:2]) / (np.linalg.norm(emb[:, :2], axis=1) * np.linalg.norm(q[:2]))
    cand = np.array(_topk(pre, ids, 2)) - 1  # k * oversample = 2 from the prefix
    top = _topk(cos[cand], ids[cand], 2)
    assert exp["search_funnel"] == _hits_text(top, cos[np.array(top) - 1])
    ham = [sum(a != b for a, b in zip(bits[i][:4], levels[:4], strict=True)) for i in range(5)]
    cand = np.array(_topk(-np.array(ham, dtype=float), ids, 4)) - 1  # k * oversample = 4
    stored = binary.residual_from_packed(
        binary.pack_residual(emb, 2), np.repeat(code.scales, 5, axis=0), 4
    )
    sim = binary.residual_inner_product(code, stored)[0]
    keep = np.array(_topk(sim[cand], ids[cand], 2)) - 1  # rescore default max(k, 4 / 2)
    top = _topk(cos[keep], ids[keep], 2)
    assert exp["search_binary"] == _hits_text(top, cos[np.array(top) - 1])
    assert exp["search_binary ivfflat"] == exp["search_binary"]
    fdes = enc.encode_document(tokens) @ enc.encode_query([qt])[0]
    cand = np.array(_topk(fdes, ids, 3)) - 1  # candidates = 3
    ms = np_maxsim(qt, tokens)
    top = _topk(ms[cand], ids[cand], 2)
    assert exp["search_multivector"] == _hits_text(top, ms[np.array(top) - 1])

    errors = {k: v for k, v in exp.items() if k.startswith("error")}
    # SQLSTATE, then pgembed's own message
    assert len(errors) == 12
    assert all(re.match(r"[0-9A-Z]{5} pgembed", v) for v in errors.values()), errors
    assert "no collection named 'psql docs; DROP TABLE x'" in errors["error injection"]


# --- migration 0002 ----------------------------------------------------------------------


def _functions_and_columns(engine: Engine) -> tuple[set[str], set[str], str]:
    with engine.connect() as conn:
        funcs = set(
            conn.execute(
                sa.text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p "
                    "WHERE p.pronamespace = 'pgembed'::regnamespace"
                )
            ).scalars()
        )
        cols = set(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'pgembed' AND table_name = 'fde_configs'"
                )
            ).scalars()
        )
        version = conn.execute(sa.text("SELECT pgembed.version()")).scalar_one()
    return funcs, cols, version


def test_downgrade_0002_removes_exactly_what_it_added(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine, "0001")
    funcs1, cols1, version1 = _functions_and_columns(empty_engine)
    migrate.upgrade(empty_engine, "0002")
    funcs2, cols2, version2 = _functions_and_columns(empty_engine)
    assert (version1, version2) == ("0.1.0", "0.2.0")
    assert cols2 - cols1 == {"simhash_vectors", "ams_vectors"}
    assert funcs1 < funcs2 and "pgembed.search_knn(text,vector,integer,integer,text)" in funcs2
    migrate.downgrade(empty_engine, "0001")
    assert _functions_and_columns(empty_engine) == (funcs1, cols1, "0.1.0")
    migrate.upgrade(empty_engine, "0002")
    assert _functions_and_columns(empty_engine) == (funcs2, cols2, "0.2.0")


def test_downgrade_0003_restores_0002s_functions(empty_engine: Engine) -> None:
    # Collections are written by today's catalog code, at head; 0003's downgrade then turns
    # "old" into a 0.2.0 catalog row (its binary entry names no index).
    migrate.upgrade(empty_engine)
    old = _make(empty_engine, "old", FDEConfig(D, 2, 2, "identity"), seed=9, bits=1)
    ivf = _make(empty_engine, "ivf", FDEConfig(D, 2, 2, "identity"), seed=8, bits=1,
                index=IndexParams(binary="ivfflat", lists=4))  # fmt: skip
    migrate.downgrade(empty_engine, "0002")
    before = _functions_and_columns(empty_engine)
    assert before[2] == "0.2.0"
    kinds = "SELECT kinds FROM pgembed.collections WHERE name = 'old'"
    defs = "SELECT pg_get_functiondef('pgembed.search_binary'::regproc)"
    with empty_engine.connect() as conn:
        old_kinds = conn.execute(sa.text(kinds)).scalar_one()
        binary_def = conn.execute(sa.text(defs)).scalar_one()
    assert "index" not in old_kinds["binary"]
    migrate.upgrade(empty_engine, "0003")
    funcs3, _, version3 = _functions_and_columns(empty_engine)
    assert version3 == "0.3.0"
    assert funcs3 - before[0] == {
        "pgembed.search_binary(text,vector,integer,integer,integer,integer,text,integer)",
        "pgembed.ivfflat_begin(integer,text,integer)",
        "pgembed.ivfflat_end(text[])",
    }
    with empty_engine.connect() as conn:  # 0003 says what 0.2.0 meant: an HNSW index
        assert conn.execute(sa.text(kinds)).scalar_one()["binary"]["index"] == "hnsw"
    migrate.downgrade(empty_engine, "0002")
    assert _functions_and_columns(empty_engine) == before
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text(defs)).scalar_one() == binary_def
        assert conn.execute(sa.text(kinds)).scalar_one() == old_kinds
    # 0.2.0's search_binary still serves the IVFFlat collection, at the session's probes
    q = _queries(26, 1)[0]
    call = "SELECT id FROM pgembed.search_binary(:c, CAST(:q AS vector), :k, :n)"
    with empty_engine.connect() as conn:
        conn.execute(sa.text("SET ivfflat.probes = 4"))
        params = {"c": ivf.spec.name, "q": str(q.tolist()), "k": K, "n": N // K}
        ids = conn.execute(sa.text(call), params).scalars().all()
    assert ids == _topk(ivf.cos(q), ivf.ids, K)
    # back at head, re-declaring "old" as it was is no conflict
    migrate.upgrade(empty_engine)
    with empty_engine.begin() as conn:
        catalog.register_collection(conn, old.spec, old.fde_id)


def test_downgrade_0004_restores_0003s_functions(empty_engine: Engine) -> None:
    """Every function's definition at 0003 comes back, byte for byte, after 0004 round trips."""
    migrate.upgrade(empty_engine, "0003")
    every = (
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proconfig, "
        "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
        "WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 1"
    )
    with empty_engine.connect() as conn:
        at3 = conn.execute(sa.text(every)).all()
    migrate.upgrade(empty_engine, "0004")
    with empty_engine.connect() as conn:
        at4 = conn.execute(sa.text(every)).all()
        assert conn.execute(sa.text("SELECT pgembed.version()")).scalar_one() == "0.4.0"
    assert {r[0] for r in at4} - {r[0] for r in at3} == {
        "pgembed.vector_schema()",
        "pgembed.to_halfvec(vector,text)",
        "pgembed.check_cosine_query(vector,halfvec)",
        # the lexical kind (test_hybrid.py)
        "pgembed.lexical_stats_update()",
        "pgembed.lexical_stats_recompute(text)",
        "pgembed.bm25_tf_table()",
        "pgembed.check_real(text,double precision,double precision,double precision)",
        "pgembed.search_bm25(text,text,integer,double precision,double precision)",
        "pgembed.fuse(bigint[],double precision[],bigint[],double precision[],integer,text,"
        "integer,double precision,double precision,double precision)",
        "pgembed.search_hybrid(text,text,vector,integer,text,text,integer,double precision,"
        "double precision,double precision,integer,double precision,double precision,integer)",
        "pgembed.search_hybrid(text,text,vector[],integer,text,text,integer,double precision,"
        "double precision,double precision,integer,double precision,double precision,integer)",
        "pgembed.prepare_query(jsonb,vector,integer)",
        "pgembed.distance_sql(text)",
    }
    assert all(r[2] == ["search_path=pg_catalog, pg_temp"] for r in at4), at4
    for _ in range(2):
        migrate.downgrade(empty_engine, "0003")
        with empty_engine.connect() as conn:
            assert conn.execute(sa.text(every)).all() == at3
        migrate.upgrade(empty_engine, "0004")
        with empty_engine.connect() as conn:
            assert conn.execute(sa.text(every)).all() == at4


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


def test_upgrade_backfills_simhash_vectors_of_older_configs(empty_engine: Engine) -> None:
    """A config saved at 0.1.0 (no simhash_vectors yet) works with fde_query after 0002."""
    migrate.upgrade(empty_engine, "0001")
    enc = FDEEncoder(FDEConfig(D, 3, 3, "ams_sketch", 5, seed=41))
    cfg = enc.config
    with empty_engine.begin() as conn:
        row = {
            "dimension": cfg.dimension,
            "num_repetitions": cfg.num_repetitions,
            "num_simhash_projections": cfg.num_simhash_projections,
            "projection": cfg.projection,
            "projection_dimension": cfg.block_dim,
            "fill_empty_partitions": cfg.fill_empty_partitions,
            "seed": cfg.seed,
            "output_dimension": cfg.output_dim,
            "matrices": enc.to_bytes(),
            "simhash": enc.simhash.ravel().tolist(),
            "ams_index": np.asarray(enc.ams_index).ravel().tolist(),
            "ams_sign": np.asarray(enc.ams_sign).ravel().tolist(),
        }
        cid = conn.execute(
            catalog.fde_configs.insert().values(**row).returning(catalog.fde_configs.c.id)
        ).scalar_one()
    migrate.upgrade(empty_engine)
    q = np.random.default_rng(42).normal(size=(6, D)).astype(np.float32)
    got = np.array(_rows(empty_engine, sa.select(sqlfuncs.fde_query(cid, q)))[0][0])
    np.testing.assert_allclose(got, enc.encode_query([q])[0], rtol=1e-3, atol=1e-4)


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


# --- 0.4.0: inputs that do not survive halfvec, MaxSim's NULLs and dimensions --------------


def _db_error(engine: Engine, sql: str, params: dict[str, Any]) -> tuple[str, Any]:
    """(SQLSTATE, pgembed's translated error) of a failing call, checked to change nothing."""
    from pgembed.db import error_for

    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT current_setting('hnsw.ef_search', true)")).scalar()
        sp = conn.begin_nested()
        with pytest.raises(sa.exc.DBAPIError) as info:
            conn.execute(sa.text(sql), params).all()
        sp.rollback()
        after = conn.execute(sa.text("SELECT current_setting('hnsw.ef_search', true)")).scalar()
        assert after == before
    return str(getattr(info.value.orig, "sqlstate", "")), error_for(info.value)


@pytest.mark.parametrize("fn", ["search_knn", "search_funnel", "search_binary"])
def test_query_that_underflows_as_halfvec_is_refused(engine: Engine, coll: Coll, fn: str) -> None:
    from pgembed.errors import InputError

    sql = f"SELECT * FROM pgembed.{fn}(:c, CAST(:q AS vector))"
    state, err = _db_error(engine, sql, {"c": coll.spec.name, "q": str([1e-9] * D)})
    assert state == "22023" and isinstance(err, InputError)
    assert "all zeros as halfvec" in str(err) and "cosine similarity is undefined" in str(err)


@pytest.mark.parametrize("fn", ["search_knn", "search_funnel", "search_binary"])
def test_query_beyond_halfvec_range_names_the_range(engine: Engine, coll: Coll, fn: str) -> None:
    from pgembed.errors import InputError

    sql = f"SELECT * FROM pgembed.{fn}(:c, CAST(:q AS vector))"
    q = [1e5] + [0.5] * (D - 1)
    state, err = _db_error(engine, sql, {"c": coll.spec.name, "q": str(q)})
    assert state == "22003" and isinstance(err, InputError)
    assert str(err).startswith("pgembed: the query vector holds a value of magnitude 100000")
    assert "out of range for halfvec (|x| <= 65504)" in str(err)


def test_halfvec_edge_and_vector_precision_accept_large_values(
    engine: Engine, coll: Coll, bitcoll: Coll
) -> None:
    """65519 rounds to halfvec's largest (65504); a vector collection never goes to halfvec."""
    q = np.full(D, 65519.0, dtype=np.float32)
    assert len(_search(engine, sqlfuncs.search_knn(coll.spec.name, q, 3))[0]) == 3
    big = np.full(D, 1e5, dtype=np.float32)
    for hits in (sqlfuncs.search_knn(bitcoll.spec.name, big, 3),
                 sqlfuncs.search_binary(bitcoll.spec.name, big, 3)):  # fmt: skip
        assert len(_search(engine, hits)[0]) == 3


def test_funnel_refuses_a_zero_prefix(engine: Engine, coll: Coll) -> None:
    q = np.zeros(D, dtype=np.float32)
    q[10:] = 1.0  # the first 8 (and 16) dimensions are zero
    sql = "SELECT * FROM pgembed.search_funnel(:c, CAST(:q AS vector), 5, 8)"
    state, err = _db_error(engine, sql, {"c": coll.spec.name, "q": str(q.tolist())})
    assert state == "22023" and "first 8 dimensions of the query vector are all zeros" in str(err)


@pytest.mark.parametrize("t", ["vector", "halfvec"])
@pytest.mark.parametrize(
    ("q", "d", "state", "message"),
    [
        ('{"[1,2]",NULL}', '{"[1,2]"}', "22004", "query token vector 2 is NULL"),
        ('{"[1,2]"}', '{"[3,4]",NULL,"[5,6]"}', "22004", "document token vector 2 is NULL"),
        ('{NULL}', '{"[1,2]"}', "22004", "query token vector 1 is NULL"),
        ('{"[1,2]","[1,2,3]"}', '{"[1,2]"}', "22000",
         "query token vector 2 has 3 dimensions; query token vector 1 has 2"),
        ('{"[1,2]"}', '{"[1,2]","[1,2,3]"}', "22000",
         "document token vector 2 has 3 dimensions; query token vector 1 has 2"),
    ],
)  # fmt: skip
def test_maxsim_refuses_null_tokens_and_mixed_dimensions(
    engine: Engine, t: str, q: str, d: str, state: str, message: str
) -> None:
    from pgembed.errors import InputError

    sql = f"SELECT pgembed.maxsim(CAST(:q AS {t}[]), CAST(:d AS {t}[]))"
    got_state, err = _db_error(engine, sql, {"q": q, "d": d})
    assert got_state == state and isinstance(err, InputError)
    assert str(err) == f"pgembed.maxsim: {message}"


def test_multivector_query_of_zero_tokens_is_refused(engine: Engine, coll: Coll) -> None:
    from pgembed.errors import EmptyInputError, InputError, PgembedError

    for sql, params in (
        ("SELECT * FROM pgembed.search_multivector(:c, CAST(:t AS vector[]))", {"t": "{}"}),
        ("SELECT * FROM pgembed.search_multivector(:c, CAST(:t AS vector[]))",
         {"t": '{"' + str([0.0] * D) + '"}'}),
    ):  # fmt: skip
        state, err = _db_error(engine, sql, {"c": coll.spec.name, **params})
        assert state == "22023" and isinstance(err, InputError)
        assert "no token vectors" in str(err) or "every token vector of the query is zero" in str(
            err
        )
    # the Python wrapper: an empty (0, d) array never reaches the database
    with pytest.raises(PgembedError) as info, engine.connect() as conn:
        conn.execute(sa.select(sqlfuncs.search_multivector(coll.spec.name, np.zeros((0, D)))))
    assert isinstance(info.value, EmptyInputError) and "no token vectors" in str(info.value)
