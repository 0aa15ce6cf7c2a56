"""Lexical kind, exact BM25 statistics, BM25 parity with bm25s, fusion, hybrid search.

Real PostgreSQL throughout. Rows are written by plain SQL (no model needed for BM25), by
``Collection.add`` (the ingest paths), by concurrent writers and by a writer killed with
SIGKILL; the maintained statistics must equal ``pgembed.lexical_stats_recompute``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, sqlfuncs
from pgembed.corpus import lee_background
from pgembed.errors import (
    CollectionError,
    ConfigError,
    EmptyInputError,
    InputError,
    PgembedError,
    UnknownKindError,
)
from pgembed.storage import declare

WORDS = ["storm", "rain", "coast", "flood", "river", "city", "council", "police", "fire",
         "crew", "bank", "market", "minister", "election", "school", "doctor"]  # fmt: skip


def _texts(n: int = 120) -> list[str]:
    sents = [s for doc in lee_background() for s in doc.split(". ") if len(s.split()) > 3]
    return sents[:n]


def _name() -> str:
    return f"lex {uuid.uuid4().hex[:8]}"


def _coll(engine: Engine, enc: Any, **kw: Any) -> Collection:
    kw.setdefault("kinds", ("single", "lexical"))
    return Collection(engine, _name(), enc, **kw).create()


def _insert(engine: Engine, coll: Collection, rows: list[tuple[int, str | None]]) -> None:
    t = coll.table()
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "content": s} for i, s in rows])


def _stats(engine: Engine, coll: Collection) -> dict[str, tuple[int, int]]:
    """The maintained statistics (lexemes at 0 left out), checked against a recount."""
    t = sa.table(coll.spec.lexical_stats_table, sa.column("lexeme"), sa.column("docs"),
                 sa.column("tokens"), schema=coll.spec.schema)  # fmt: skip
    with engine.connect() as conn:
        kept = {
            str(lex): (int(d), int(n))
            for lex, d, n in conn.execute(sa.select(t.c.lexeme, t.c.docs, t.c.tokens))
            if (d, n) != (0, 0)
        }
        fresh = {
            str(lex): (int(d), int(n))
            for lex, d, n in conn.execute(
                sa.text("SELECT * FROM pgembed.lexical_stats_recompute(:c)"), {"c": coll.spec.name}
            )
            if (d, n) != (0, 0)
        }
    assert kept == fresh
    return kept


def _python_stats(texts: dict[int, str | None], engine: Engine, config: str = "english") -> Any:
    """The same statistics from to_tsvector of each text, counted in Python."""
    docs: dict[str, int] = {}
    tokens = 0
    with engine.connect() as conn:
        for s in texts.values():
            rows = conn.execute(
                sa.text("SELECT u.lexeme, cardinality(u.positions) FROM "
                        "unnest(to_tsvector(CAST(:c AS regconfig), coalesce(:s, ''))) u"),
                {"c": config, "s": s},
            ).all()  # fmt: skip
            for lex, tf in rows:
                docs[lex] = docs.get(lex, 0) + 1
                tokens += tf
    return len(texts), tokens, docs


# --- the kind ------------------------------------------------------------------------------


def test_lexical_column_is_generated_and_indexed(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder)
    coll.add(["The storms flooded the coast", "Rates rose at the bank"], ids=[1, 2])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f'SELECT id, lexemes::text FROM "{coll.spec.table_name}" ORDER BY id')
        ).all()
        idx = conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE tablename = :t "
                    "AND indexdef LIKE '%gin%'"),
            {"t": coll.spec.table_name},
        ).scalars().all()  # fmt: skip
    assert rows == [(1, "'coast':5 'flood':3 'storm':2"), (2, "'bank':5 'rate':1 'rose':2")]
    assert len(idx) == 1 and "lexemes" in idx[0]
    assert coll.spec.kinds_json()["lexical"]["config"] == "english"
    reopened = Collection.open(engine, coll.spec.name, tiny_encoder)
    assert reopened.spec.kinds_json() == coll.spec.kinds_json()


def test_simple_config_and_unknown_config(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder, lexical_config="simple")
    _insert(engine, coll, [(1, "The storms")])
    with engine.connect() as conn:
        v = conn.execute(sa.text(f'SELECT lexemes::text FROM "{coll.spec.table_name}"')).scalar()
    assert v == "'storms':2 'the':1"
    name = _name()
    with pytest.raises(ConfigError, match="unknown text search configuration 'klingon'"):
        Collection(engine, name, tiny_encoder, kinds=("single", "lexical"),
                   lexical_config="klingon").create()  # fmt: skip
    with engine.connect() as conn:  # nothing written
        assert conn.execute(sa.text("SELECT count(*) FROM pgembed.collections WHERE name = :n"),
                            {"n": name}).scalar() == 0  # fmt: skip
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{name}"'}).scalar() is None


def test_lexical_needs_text_column_and_a_vector_kind(tiny_encoder: Any, engine: Engine) -> None:
    with pytest.raises(CollectionError, match="text_column is None"):
        Collection(engine, _name(), tiny_encoder, kinds=("single", "lexical"), text_column=None)
    with pytest.raises(CollectionError, match="beside a vector kind"):
        Collection(engine, _name(), tiny_encoder, kinds=("lexical",))


# --- exact statistics -------------------------------------------------------------------------


def test_statistics_exact_after_interleaved_writes(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder)
    texts = _texts(120)
    coll.add(texts[:60], ids=range(60))  # the ingest path: staging table + upsert
    coll.add(texts[60:90], ids=range(60, 90), mode="bulk")  # COPY into the table
    _stats(engine, coll)
    t = coll.table()
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id < 10).values(content=sa.func.upper(t.c.content)))
        conn.execute(t.update().where(t.c.id.between(10, 19)).values(content="storm storm rain"))
        conn.execute(t.delete().where(t.c.id.between(20, 29)))
        conn.execute(t.update().where(t.c.id.between(30, 39)).values(content=None))
        conn.execute(t.update().where(t.c.id.between(40, 49)).values(embedded_hash="x"))
    coll.add([*texts[:5], "a brand new text about floods"], ids=[*range(95, 100), 3])
    rng = np.random.default_rng(0)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for _ in range(15):
                with engine.begin() as conn:
                    i = int(r.integers(0, 140))
                    text = " ".join(r.choice(WORDS, int(r.integers(1, 12))))
                    op = int(r.integers(0, 3))
                    if op == 0:
                        conn.execute(sa.text(
                            f'INSERT INTO "{t.name}" (id, content) VALUES (:i, :s) '
                            "ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content"),
                            {"i": i, "s": text})  # fmt: skip
                    elif op == 1:
                        conn.execute(t.update().where(t.c.id == i).values(content=text))
                    else:
                        conn.execute(t.delete().where(t.c.id == i))
        except BaseException as exc:  # a deadlock would show here
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(int(s),)) for s in rng.integers(0, 99, 4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    stats = _stats(engine, coll)
    with engine.connect() as conn:
        current = dict(conn.execute(sa.select(t.c.id, t.c.content)).all())
    n, tokens, docs = _python_stats(current, engine)
    assert stats[""] == (n, tokens)
    assert {k: v[0] for k, v in stats.items() if k} == docs
    with engine.begin() as conn:
        conn.execute(sa.text(f'TRUNCATE "{t.name}"'))
    assert _stats(engine, coll) == {}
    coll.add(["rain again"], ids=[1])
    assert _stats(engine, coll)[""] == (1, 1)  # "again" is a stop word


_KILLED_WRITER = """
import sys, sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
with engine.connect() as conn:
    conn.execute(sa.text(
        'INSERT INTO "' + sys.argv[2] + '" (id, content) SELECT 1000 + g, '
        "'flood warning number ' || g FROM generate_series(1, 500) g"))
    print("written", flush=True)
    sys.stdin.readline()  # never answered: killed inside the open transaction
"""


def test_statistics_exact_after_a_sigkilled_writer(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder)
    _insert(engine, coll, [(i, s) for i, s in enumerate(_texts(40))])
    before = _stats(engine, coll)
    url = engine.url.render_as_string(hide_password=False)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url, coll.spec.table_name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    after = _stats(engine, coll)
    assert after == before
    _insert(engine, coll, [(2000, "flood warning")])  # the table and its triggers still work
    assert _stats(engine, coll)[""][0] == before[""][0] + 1


def test_add_lexical_to_an_existing_collection(engine: Engine, tiny_encoder: Any) -> None:
    coll = Collection(engine, _name(), tiny_encoder).create()
    coll.add(_texts(30), ids=range(30))
    with engine.begin() as conn:
        spec = declare.add_lexical(conn, coll.spec.name, "simple")
    assert spec.has("lexical") and spec.lexical_config == "simple"
    lex = Collection.open(engine, coll.spec.name, tiny_encoder)
    assert lex.spec.kinds_json() == spec.kinds_json()
    stats = _stats(engine, lex)
    assert stats[""][0] == 30
    assert lex.search("the storm", k=3, strategy="bm25")
    with engine.begin() as conn:
        declare.drop_lexical(conn, coll.spec.name)
    back = Collection.open(engine, coll.spec.name, tiny_encoder)
    assert not back.spec.has("lexical")
    with pytest.raises(UnknownKindError, match="needs the 'lexical' kind"):
        back.search("storm", strategy="bm25")
    assert back.drop(force=True)


def test_drop_removes_the_statistics_table(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder)
    stats = coll.spec.lexical_stats_table
    assert coll.drop()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{stats}"'}).scalar() is None


# --- BM25 ------------------------------------------------------------------------------------


def _lexemes(engine: Engine, coll: Collection) -> dict[int, list[str]]:
    """Each row's tokens as PostgreSQL produced them: every lexeme, once per position."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            f'SELECT r.id, u.lexeme, cardinality(u.positions) FROM "{coll.spec.table_name}" r '
            "LEFT JOIN LATERAL unnest(r.lexemes) u ON true ORDER BY r.id, u.lexeme")
        ).all()  # fmt: skip
    out: dict[int, list[str]] = {}
    for i, lex, tf in rows:
        out.setdefault(int(i), [])
        if lex is not None:
            out[int(i)] += [str(lex)] * int(tf)
    return out


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0)])
def test_bm25_parity_with_bm25s(engine: Engine, tiny_encoder: Any, k1: float, b: float) -> None:
    bm25s = pytest.importorskip("bm25s")
    coll = _coll(engine, tiny_encoder)
    texts = _texts(300)
    _insert(engine, coll, [(i, s) for i, s in enumerate(texts)] + [(len(texts), "")])
    docs = _lexemes(engine, coll)
    ids = sorted(docs)
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    vocab = sorted({t for toks in docs.values() for t in toks})
    index = {t: j for j, t in enumerate(vocab)}
    corpus = [[index[t] for t in docs[i]] for i in ids]
    retriever.index(bm25s.tokenization.Tokenized(ids=corpus, vocab=dict(index)),
                    show_progress=False)  # fmt: skip
    queries = ["storm damage on the coast", "the minister said the election", "bank rates",
               "police and fire crews in Sydney", "children at school", "zebra"]  # fmt: skip
    with engine.connect() as conn:
        for query in queries:
            qlex = conn.execute(sa.text(
                "SELECT array_agg(lexeme) FROM unnest(to_tsvector('english', :q))"),
                {"q": query}).scalar()  # fmt: skip
            qlex = [t for t in qlex if t in index]
            got = conn.execute(sqlfuncs.search_bm25(coll.spec.name, query, k=len(ids), k1=k1, b=b)
                               .select()).all()  # fmt: skip
            if not qlex:  # no query word in the corpus
                assert got == []
                continue
            expected = retriever.get_scores(qlex)
            want = {ids[j]: float(s) for j, s in enumerate(expected) if s > 0}
            assert {int(i) for i, _ in got} == set(want)
            for i, s in got:
                assert math.isclose(s, want[int(i)], rel_tol=1e-6), (query, i, s, want[int(i)])
            top = sorted(want.items(), key=lambda x: (-x[1], x[0]))[:10]
            # top-10 identical, ties aside (bm25s scores in float32: ties within 1e-6)
            for (i, s), (j, w) in zip(got[:10], top, strict=True):
                assert int(i) == j or math.isclose(s, w, rel_tol=1e-6), (query, got[:10], top)


def test_bm25_term_frequency_and_length_from_ts_rank(engine: Engine, tiny_encoder: Any) -> None:
    """tf up to tsvector's 256 positions and long documents: scores still exact."""
    coll = _coll(engine, tiny_encoder, lexical_config="simple")
    rows = [(1, "flood " * 300), (2, "flood " * 7 + "word " * 4000), (3, "rain"),
            (4, "flood rain " * 50)]  # fmt: skip
    _insert(engine, coll, rows)
    docs = _lexemes(engine, coll)
    n = len(docs)
    avgdl = sum(len(v) for v in docs.values()) / n
    df = sum("flood" in v for v in docs.values())
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    with engine.connect() as conn:
        got = dict(conn.execute(sqlfuncs.search_bm25(coll.spec.name, "flood", k=10).select()).all())
    for i, toks in docs.items():
        tf = toks.count("flood")
        if tf:
            want = idf * tf / (tf + 1.2 * (0.25 + 0.75 * len(toks) / avgdl))
            assert math.isclose(got[i], want, rel_tol=1e-9), (i, tf, got[i], want)
    assert set(got) == {1, 2, 4}


# --- fusion ----------------------------------------------------------------------------------


def test_rrf_and_convex_fusion_by_hand(engine: Engine) -> None:
    lexical = [(1, 3.0), (2, 2.0), (3, 1.0)]
    dense = [(3, 0.9), (4, 0.5), (1, 0.1)]
    with engine.connect() as conn:
        rrf = conn.execute(sqlfuncs.fuse(lexical, dense, k=10, bm25_weight=2.0).select()).all()
        convex = conn.execute(
            sqlfuncs.fuse(lexical, dense, k=3, fusion="convex", alpha=0.25).select()
        ).all()
        plain = conn.execute(sqlfuncs.fuse(lexical, dense, k=4, rrf_k=0).select()).all()
    want_rrf = [(1, 2 / 61 + 1 / 63), (3, 2 / 63 + 1 / 61), (2, 2 / 62), (4, 1 / 62)]
    assert [i for i, _ in rrf] == [i for i, _ in want_rrf]
    for (_, s), (_, w) in zip(rrf, want_rrf, strict=True):
        assert math.isclose(s, w, rel_tol=1e-12)
    # lexical normalised: 1 -> 1, 2 -> 0.5, 3 -> 0; dense: 3 -> 1, 4 -> 0.5, 1 -> 0
    assert convex == [(1, 0.75), (2, 0.375), (3, 0.25)]
    # rrf_k = 0, equal weights: 1 and 3 tie at 1 + 1/3, 2 and 4 at 1/2; ties by id
    assert [i for i, _ in plain] == [1, 3, 2, 4]
    assert math.isclose(plain[0][1], 1 + 1 / 3)


def test_hybrid_is_the_fusion_of_its_sides(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder, kinds=("single", "binary", "lexical"))
    texts = _texts(80)
    coll.add(texts, ids=range(len(texts)))
    query = "storm damage in the city"
    q = tiny_encoder.encode([query], "query", progress=False)[0]
    with engine.connect() as conn:
        lex = conn.execute(sqlfuncs.search_bm25(coll.spec.name, query, k=20).select()).all()
        den = conn.execute(sqlfuncs.search_knn(coll.spec.name, q, k=20).select()).all()
        fused = conn.execute(sqlfuncs.fuse(lex, den, k=5).select()).all()
        hybrid = conn.execute(
            sqlfuncs.search_hybrid(coll.spec.name, query, q, k=5, depth=20).select()
        ).all()
    assert hybrid == fused
    assert coll.search(query, k=5, strategy="hybrid", depth=20) == [
        (int(i), float(s)) for i, s in fused
    ]
    # a precomputed dense query gives the same, a different one changes the dense side
    assert coll.search(query, k=5, strategy="hybrid", depth=20, dense_query=q) == [
        (int(i), float(s)) for i, s in fused
    ]
    other = tiny_encoder.encode(["cricket"], "query", progress=False)[0]
    with engine.connect() as conn:
        den2 = conn.execute(sqlfuncs.search_knn(coll.spec.name, other, k=20).select()).all()
        fused2 = conn.execute(sqlfuncs.fuse(lex, den2, k=5).select()).all()
    got = coll.search(query, k=5, strategy="hybrid", depth=20, dense_query=other)
    assert got == [(int(i), float(s)) for i, s in fused2]
    with pytest.raises(ConfigError, match="dense_query is hybrid's"):
        coll.search(q, k=5, strategy="knn", dense_query=q)
    bm25 = coll.search(query, k=5, strategy="bm25")
    assert bm25 == [(int(i), float(s)) for i, s in lex[:5]]
    for dense in ("knn", "binary"):
        for fusion in ("rrf", "convex"):
            hits = coll.search(query, k=5, strategy="hybrid", dense=dense, fusion=fusion)
            assert len(hits) == 5


def test_hybrid_target_recall_is_the_calibrated_dense_setting(
    engine: Engine, tiny_encoder: Any
) -> None:
    coll = _coll(engine, tiny_encoder, kinds=("single", "binary", "lexical"))
    texts = _texts(80)
    coll.add(texts, ids=range(len(texts)))
    coll.calibrate(sample=10, k=5, seed=1, progress=False, strategies=["knn", "binary"])
    query = "storm damage in the city"
    q = tiny_encoder.encode([query], "query", progress=False)[0]
    name = coll.spec.name
    with engine.connect() as conn:

        def pick(strategy: str) -> dict[str, Any]:
            cal = conn.execute(
                sa.text("SELECT pgembed.calibrated_setting(:c, :s, 0.5)"),
                {"c": name, "s": strategy},
            ).scalar()
            assert cal, strategy
            return {o: v for o, v in cal.items() if v is not None}

        def run(f: Any) -> list[tuple[int, float]]:
            return [(int(i), float(sc)) for i, sc in conn.execute(f.select()).all()]

        # knn: the dense side runs at the calibrated ef_search (never below its depth, 20)
        ef = min(1000, max(20, int(pick("knn")["ef_search"])))
        want = run(sqlfuncs.search_hybrid(name, query, q, k=5, depth=20, ef_search=ef))
        got = run(sqlfuncs.search_hybrid(name, query, q, k=5, depth=20, target_recall=0.5))
        assert got == want
        assert coll.search(query, k=5, strategy="hybrid", depth=20, target_recall=0.5) == want
        # binary: the calibrated oversample instead of hybrid's own 10
        lex = run(sqlfuncs.search_bm25(name, query, k=20))
        den = run(sqlfuncs.search_binary(name, q, k=20, **pick("binary")))
        want = run(sqlfuncs.fuse(lex, den, k=5))
        got = run(sqlfuncs.search_hybrid(name, query, q, k=5, dense="binary", depth=20,
                                         target_recall=0.5))  # fmt: skip
        assert got == want
        # out of range: refused as for every other strategy, in Python and in SQL
        for bad in (0, 1.5):
            with pytest.raises(ConfigError, match=r"target_recall must be a number in \(0, 1\]"):
                coll.search(query, strategy="hybrid", target_recall=bad)
        with pytest.raises(sa.exc.DBAPIError, match=r"target_recall must be a number in \(0, 1\]"):
            conn.execute(
                sa.text("SELECT * FROM pgembed.search_hybrid(:c, 'storm', CAST(:q AS vector), 5, "
                        "target_recall => CAST(1.5 AS float8))"),
                {"c": name, "q": str(q.tolist())},
            )  # fmt: skip


def test_hybrid_with_multivector(engine: Engine, tiny_encoder: Any) -> None:
    from pgembed import FDEConfig

    fde = FDEConfig(dimension=tiny_encoder.dim, num_repetitions=2, num_simhash_projections=2,
                    projection_dimension=8, seed=3)  # fmt: skip
    coll = _coll(engine, tiny_encoder, kinds=("fde", "lexical"), fde=fde)
    coll.add(_texts(40), ids=range(40))
    hits = coll.search("storm over the coast", k=5, strategy="hybrid", dense="multivector")
    assert len(hits) == 5
    with pytest.raises(UnknownKindError, match="default dense side is knn"):
        coll.search("storm", strategy="hybrid")


# --- bad input ---------------------------------------------------------------------------------


def _count(engine: Engine, coll: Collection) -> tuple[int, Any]:
    with engine.connect() as conn:
        n = conn.execute(sa.text(f'SELECT count(*) FROM "{coll.spec.table_name}"')).scalar()
        s = conn.execute(sa.text(f'SELECT * FROM "{coll.spec.lexical_stats_table}" '
                                 "ORDER BY lexeme")).all()  # fmt: skip
    return int(n or 0), s


def test_bad_input_is_a_clear_error_and_writes_nothing(engine: Engine, tiny_encoder: Any) -> None:
    coll = _coll(engine, tiny_encoder)
    coll.add(_texts(20), ids=range(20))
    before = _count(engine, coll)
    with pytest.raises(EmptyInputError, match="query text is empty"):
        coll.search("   ", strategy="bm25")
    with pytest.raises(InputError, match="only stop words"):
        coll.search("the and of it", strategy="bm25")
    with pytest.raises(InputError, match="only stop words"):
        coll.search("the and of it", strategy="hybrid")
    with pytest.raises(ConfigError, match=r"alpha must be a number in 0\.\.1"):
        coll.search("storm", strategy="hybrid", fusion="convex", alpha=1.5)
    with pytest.raises(ConfigError, match="bm25_weight must be a number"):
        coll.search("storm", strategy="hybrid", bm25_weight=-1.0)
    with pytest.raises(ConfigError, match="both 0"):
        coll.search("storm", strategy="hybrid", bm25_weight=0.0, dense_weight=0.0)
    with pytest.raises(ConfigError, match=r"b must be a number in 0\.\.1"):
        coll.search("storm", strategy="bm25", b=2.0)
    with pytest.raises(ConfigError, match=r"depth \(10\) must be at least k"):
        coll.search("storm", k=20, strategy="hybrid", depth=10)
    with pytest.raises(UnknownKindError, match="dense='funnel' needs the 'matryoshka' kind"):
        coll.search("storm", strategy="hybrid", dense="funnel")
    plain = Collection(engine, _name(), tiny_encoder).create()
    with pytest.raises(UnknownKindError, match="needs the 'lexical' kind"):
        plain.search("storm", strategy="hybrid")
    assert _count(engine, coll) == before
    # the SQL functions check the same, with pgembed's own messages
    q = tiny_encoder.encode(["storm"], "query", progress=False)[0]
    vec = "[" + ",".join(map(str, q)) + "]"
    for sql, match in [
        ("SELECT * FROM pgembed.search_bm25(:c, ''::text)", "no searchable words"),
        (
            "SELECT * FROM pgembed.search_bm25(:c, 'the'::text, 10, 1.2::float8, 1.5::float8)",
            "b must be a number",
        ),
        (
            "SELECT * FROM pgembed.search_hybrid(:c, 'storm'::text, CAST(:q AS vector), 10, "
            "'knn', 'rrf', 60, -1::float8)",
            "bm25_weight must be a number",
        ),
        (
            "SELECT * FROM pgembed.search_hybrid(:c, 'storm'::text, CAST(:q AS vector), 10, "
            "'funnel')",
            "does not store the 'matryoshka' kind",
        ),
        (
            "SELECT * FROM pgembed.search_hybrid(:c, 'storm'::text, CAST(:q AS vector), 10, "
            "'knn', 'convex', 60, 1::float8, 1::float8, 2::float8)",
            "alpha must be a number",
        ),
        (
            "SELECT * FROM pgembed.search_hybrid(:c, 'storm'::text, CAST(:q AS vector), 10, "
            "'knn', 'max')",
            "fusion must be rrf or convex",
        ),
        (
            "SELECT * FROM pgembed.search_hybrid(:p, 'storm'::text, CAST(:q AS vector))",
            "does not store the 'lexical' kind",
        ),
    ]:
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match=match):
            conn.execute(sa.text(sql), {"c": coll.spec.name, "p": plain.spec.name, "q": vec})
    assert _count(engine, coll) == before
    with pytest.raises(PgembedError):
        coll.search(123, strategy="bm25")


def test_alembic_add_and_drop_lexical(engine: Engine, tiny_encoder: Any) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import pgembed.alembic_ops as ops

    coll = Collection(engine, _name(), tiny_encoder).create()
    coll.add(_texts(10), ids=range(10))
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_lexical(coll.spec.name, config="simple")  # type: ignore[attr-defined]
        rec = ops.declaration_of(conn, declare.catalog.get_collection(conn, coll.spec.name))
    assert rec[1]["lexical_config"] == "simple" and "lexical" in rec[1]["kinds"]
    lex = Collection.open(engine, coll.spec.name, tiny_encoder)
    assert _stats(engine, lex)[""][0] == 10
    assert ops.AddLexicalOp(coll.spec.name, "simple").reverse().to_diff_tuple() == (
        "drop_lexical", coll.spec.name, "simple")  # fmt: skip
    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).drop_lexical(coll.spec.name)  # type: ignore[attr-defined]
    assert not Collection.open(engine, coll.spec.name, tiny_encoder).spec.has("lexical")
