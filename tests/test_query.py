"""pgembed.query's builders: plain Selects that compose with filters.

The vector builders (knn, funnel, binary_rerank), on a seeded table, return the exact
top-k given enough candidates, use the HNSW indexes and take ORM filters. The lexical and
hybrid builders, unfiltered, return what the SQL functions return (same ids, same scores);
filtered, every result satisfies the filter and equals a brute-force fusion computed in
Python from the stored rows (BM25 with the collection's global statistics, exact cosine).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _docs import D, N, _half, docs_table, make_data
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from pgembed import Collection, query
from pgembed.corpus import lee_background
from pgembed.errors import ConfigError, DimensionError, EmptyInputError, NonFiniteError
from pgembed.storage.schema import CollectionSpec

QUERY = "storm damage in the city after the fire"


@pytest.fixture(scope="module")
def coll(engine: Engine, tiny_encoder: Any) -> Iterator[Collection]:
    texts = [s for d in lee_background() for s in d.split(". ") if len(s.split()) > 3][:150]
    c = Collection(engine, f"query {uuid.uuid4().hex[:6]}", tiny_encoder,
                   kinds=("single", "binary", "lexical")).create()  # fmt: skip
    c.add(texts, ids=range(len(texts)))
    yield c
    c.drop(force=True)


def _rows(conn: sa.Connection, stmt: sa.Select[Any]) -> list[tuple[int, float]]:
    return [(int(r.id), float(r.score)) for r in conn.execute(stmt)]


def _hnsw(conn: sa.Connection, ef: int = 100) -> None:
    """What pgembed.search_knn sets for depth 100, and an exact scan order under filters."""
    conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :e, true)"), {"e": str(ef)})
    conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = strict_order"))


def test_bm25_builder_equals_search_bm25(coll: Collection) -> None:
    t = coll.table()
    with coll.engine.begin() as conn:
        got = _rows(conn, query.bm25(t, QUERY, k=20))
    want = coll.search(QUERY, k=20, strategy="bm25")
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, s), (_, w) in zip(got, want, strict=True):
        assert s == w  # the same arithmetic, in the same order


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_hybrid_builder_unfiltered_equals_collection_search(coll: Collection, fusion: str) -> None:
    t = coll.table()
    q = coll.encoder.encode([QUERY], "query", progress=False)[0]
    with coll.engine.begin() as conn:
        _hnsw(conn)
        got = _rows(conn, query.hybrid(t, QUERY, q, k=10, fusion=fusion, alpha=0.3))
    want = coll.search(QUERY, k=10, strategy="hybrid", fusion=fusion, alpha=0.3)
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, s), (_, w) in zip(got, want, strict=True):
        assert math.isclose(s, w, rel_tol=1e-9)


def _brute(
    coll: Collection, text: str, q: np.ndarray, keep: Any, *, k: int, depth: int, fusion: str,
    alpha: float = 0.5,
) -> list[tuple[int, float]]:  # fmt: skip
    """Hybrid search computed in Python over the rows ``keep`` accepts."""
    t = coll.table()
    with coll.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.embedding)).all()
        lex = conn.execute(sa.text(
            f'SELECT r.id, u.lexeme, cardinality(u.positions) FROM "{t.name}" r, '
            "unnest(r.lexemes) u")).all()  # fmt: skip
        qlex = set(
            conn.execute(
                sa.text("SELECT u.lexeme FROM unnest(to_tsvector('english', :q)) u"), {"q": text}
            ).scalars()
        )
    tf: dict[int, dict[str, int]] = {}
    for i, lexeme, n in lex:
        tf.setdefault(int(i), {})[lexeme] = int(n)
    n_rows = len(rows)  # global statistics: every row, filtered or not
    avgdl = sum(sum(d.values()) for d in tf.values()) / n_rows
    df = {w: sum(w in d for d in tf.values()) for w in qlex}
    idf = {w: math.log(1 + (n_rows - df[w] + 0.5) / (df[w] + 0.5)) for w in qlex}
    bm25 = {}
    for i, d in tf.items():
        if keep(i) and qlex & set(d):
            norm = 1.2 * (0.25 + 0.75 * sum(d.values()) / avgdl)
            bm25[i] = sum(idf[w] * d[w] / (d[w] + norm) for w in qlex if w in d)
    q = q.astype(np.float16).astype(np.float64)  # bound as halfvec, like the column
    qn = q / np.linalg.norm(q)
    dense = {}
    for i, e in rows:
        if keep(int(i)):
            v = np.asarray(e, dtype=np.float64)
            dense[int(i)] = float(v @ qn / np.linalg.norm(v))

    def ranked(scores: dict[int, float]) -> list[tuple[int, float]]:
        return sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:depth]

    fused: dict[int, float] = {}
    for side, w in ((ranked(bm25), 1 - alpha), (ranked(dense), alpha)):
        if fusion == "rrf":
            for r, (i, _) in enumerate(side, 1):
                fused[i] = fused.get(i, 0.0) + 1 / (60 + r)
        else:
            lo, hi = min(s for _, s in side), max(s for _, s in side)
            for i, s in side:
                fused[i] = fused.get(i, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
    return sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:k]


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_hybrid_builder_filtered_equals_brute_force(coll: Collection, fusion: str) -> None:
    t = coll.table()
    q = coll.encoder.encode([QUERY], "query", progress=False)[0]
    with coll.engine.begin() as conn:
        _hnsw(conn)
        got = _rows(conn, query.hybrid(t, QUERY, q, k=10, depth=30, fusion=fusion,
                                       where=[t.c.id % 3 == 1]))  # fmt: skip
    want = _brute(coll, QUERY, q, lambda i: i % 3 == 1, k=10, depth=30, fusion=fusion)
    assert len(got) == 10 and all(i % 3 == 1 for i, _ in got)
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, s), (_, w) in zip(got, want, strict=True):
        # pgvector computes halfvec cosine in float32; min-max normalisation magnifies it
        assert math.isclose(s, w, rel_tol=1e-3), (got, want)
    # the filter changes the answer: unfiltered, rows outside it come first
    with coll.engine.begin() as conn:
        _hnsw(conn)
        free = _rows(conn, query.hybrid(t, QUERY, q, k=10, depth=30, fusion=fusion))
    assert any(i % 3 != 1 for i, _ in free)


def test_filters_narrow_the_candidates_not_the_statistics(coll: Collection) -> None:
    """A filter keeping 4 rows: those 4 come back (k = 10), with global-statistics BM25."""
    t = coll.table()
    q = coll.encoder.encode([QUERY], "query", progress=False)[0]
    keep = [3, 17, 40, 99]
    with coll.engine.begin() as conn:
        _hnsw(conn)
        hits = _rows(conn, query.hybrid(t, QUERY, q, k=10, where=[t.c.id.in_(keep)]))
        lexical = _rows(conn, query.bm25(t, QUERY, k=10, where=[t.c.id.in_(keep)]))
    assert sorted(i for i, _ in hits) == keep
    everything = dict(_rows_of(coll, QUERY))
    assert lexical == [(i, everything[i]) for i, _ in lexical]  # same scores as unfiltered
    assert {i for i, _ in lexical} == {i for i in keep if i in everything}


def _rows_of(coll: Collection, text: str) -> list[tuple[int, float]]:
    return coll.search(text, k=1000, strategy="bm25")


def test_hybrid_with_binary_and_an_orm_class(coll: Collection) -> None:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __table__ = coll.table()

    q = coll.encoder.encode([QUERY], "query", progress=False)[0]
    stmt = query.hybrid(Doc, QUERY, q, k=5, dense="binary", where=[Doc.id < 60])
    with Session(coll.engine) as session:
        rows = session.execute(stmt).all()
    assert len(rows) == 5
    assert all(isinstance(d, Doc) and d.id < 60 for d, _ in rows)
    scores = [s for _, s in rows]
    assert scores == sorted(scores, reverse=True)


def test_builder_bad_input(coll: Collection, engine: Engine, tiny_encoder: Any) -> None:
    t = coll.table()
    q = coll.encoder.encode([QUERY], "query", progress=False)[0]
    with pytest.raises(EmptyInputError, match="query text is empty"):
        query.bm25(t, "  ")
    with pytest.raises(ConfigError, match=r"depth \(5\) must be at least k"):
        query.hybrid(t, QUERY, q, k=10, depth=5)
    with pytest.raises(ConfigError, match="needs prefix="):
        query.hybrid(t, QUERY, q, dense="funnel")
    with pytest.raises(ConfigError, match="fusion must be one of"):
        query.hybrid(t, QUERY, q, fusion="max")
    with pytest.raises(ConfigError, match=r"alpha must be a number in 0\.\.1"):
        query.hybrid(t, QUERY, q, fusion="convex", alpha=2.0)
    with coll.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="only stop words"):
        conn.execute(query.bm25(t, "the and of it")).all()
    plain = Collection(engine, f"query plain {uuid.uuid4().hex[:6]}", tiny_encoder).create()
    try:
        with pytest.raises(ConfigError, match="has no 'lexemes' column"):
            query.bm25(plain.table(), QUERY)
        with pytest.raises(ConfigError, match="mapped class"):
            query.bm25(t.c.embedding, QUERY)
    finally:
        plain.drop(force=True)
    # a table that no lexical collection records: a clear error, not an empty answer
    other = sa.Table(t.name + "_copy", sa.MetaData(), *(c._copy() for c in t.columns),
                     schema=t.schema)  # fmt: skip
    with coll.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="no collection"):
        conn.execute(query.bm25(other, QUERY)).all()


# --- the vector builders (knn, funnel, binary_rerank) on a seeded table ----------------------


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module")
def docs(engine: Engine, data: dict[str, np.ndarray]) -> Iterator[tuple[CollectionSpec, sa.Table]]:
    yield from docs_table(engine, data, "query docs; DROP TABLE x")  # a hostile name stays a name


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


class DocsBase(DeclarativeBase):
    pass


def test_orm_filter_plus_funnel(engine: Engine, docs: tuple, data: dict) -> None:
    _spec, t = docs

    class Doc(DocsBase):
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
    with pytest.raises(ConfigError, match="k must be"):
        query.knn(t.c.embedding, np.ones(D), k=0)
    with pytest.raises(ConfigError, match="oversample"):
        query.funnel(t.c.embedding, np.ones(D), prefix=4, oversample=10**6)


# --- selective filters with the index in use: every builder still returns k rows ------------


def _selective(t: sa.Table) -> list[Any]:
    return [t.c.id % 90 == 0]  # 10 of the 300 rows (ids are multiples of 3)


@pytest.mark.parametrize("builder", ["knn", "funnel", "binary_rerank"])
def test_selective_filter_returns_k_rows_through_the_index(
    engine: Engine, docs: tuple, data: dict, builder: str
) -> None:
    """The filter keeps 10 rows; with the HNSW scan in use and no setting of the caller's,
    every builder still returns the exact 5 best of them (its statement carries the scan
    settings, pgembed.scan), and the caller's settings are as before afterwards."""
    _, t = docs
    q = data["queries"][3]
    where = _selective(t)
    stmt = {
        "knn": lambda: query.knn(t.c.embedding, q, k=5, where=where),
        "funnel": lambda: query.funnel(t.c.embedding, q, k=5, prefix=8, where=where),
        "binary_rerank": lambda: query.binary_rerank(t.c.embedding, q, k=5, where=where),
    }[builder]()
    ids = np.arange(N) * 3
    keep = ids % 90 == 0
    want = ids[keep][np.argsort(-(_half(data["emb"][keep]) @ _half(q)), kind="stable")[:5]]
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(conn.execute(Explain(stmt)).scalars())
        assert "hnsw" in plan, plan
        before = conn.execute(sa.text("SELECT current_setting('hnsw.iterative_scan', true)"))
        got = [r.id for r in conn.execute(stmt)]
        after = conn.execute(sa.text("SELECT current_setting('hnsw.iterative_scan', true)"))
        assert after.scalar() == before.scalar()
    assert got == want.tolist()


def test_scan_settings_in_autocommit_are_restored(engine: Engine, docs: tuple, data: dict) -> None:
    _, t = docs
    stmt = query.knn(t.c.embedding, data["queries"][0], k=5, where=_selective(t))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))
        assert len(conn.execute(stmt).all()) == 5
        ef, it = conn.execute(
            sa.text(
                "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
            )
        ).one()
        conn.execute(sa.text("RESET enable_seqscan"))
    assert (ef, it) == ("40", "off")


def test_multivector_builder_uses_the_fde_bit_index(engine: Engine, tiny_encoder: Any) -> None:
    """The FDE index is HNSW on binary_quantize(fde): the builder orders by that expression
    (so the plan uses it), rescores by the float FDE, and ranks by exact MaxSim."""
    c = Collection(engine, f"mvq {uuid.uuid4().hex[:6]}", tiny_encoder,
                   kinds=("fde", "multivector")).create()  # fmt: skip
    try:
        texts = [s for d in lee_background() for s in d.split(". ") if len(s.split()) > 3][:60]
        c.add(texts, ids=range(len(texts)))
        t = c.table()
        qt = tiny_encoder.encode_tokens([QUERY], "query")[0]
        stmt = query.multivector(t.c.fde, t.c.tokens, qt, c.fde.encode_query([qt])[0], k=5)
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(conn.execute(Explain(stmt)).scalars())
            got = [(r.id, r.score) for r in conn.execute(stmt)]
        assert "_fde_bq_hnsw" in plan, plan
        want = c.search(QUERY, k=5, strategy="multivector")  # the SQL function's plan
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    finally:
        c.drop(force=True)


@pytest.mark.parametrize("form", ["ndarray", "list"])
def test_multivector_maxsim_comparator_takes_arrays(engine: Engine, docs: tuple, form: str) -> None:
    from pgembed.vectors.maxsim import maxsim

    _, t = docs
    rng = np.random.default_rng(5)
    q = rng.normal(size=(3, D)).astype(np.float32)
    arg = q if form == "ndarray" else q.tolist()
    stmt = sa.select(t.c.id, t.c.tokens.maxsim(arg).label("s")).order_by(t.c.id).limit(20)
    with engine.begin() as conn:
        rows = conn.execute(stmt).all()
        tokens = [r.tokens for r in conn.execute(sa.select(t.c.tokens).order_by(t.c.id).limit(20))]
    want = maxsim(_half(q), tokens)
    np.testing.assert_allclose([r.s for r in rows], want, rtol=1e-3, atol=1e-3)
