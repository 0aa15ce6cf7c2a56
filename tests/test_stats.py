"""`pgembed stats`: a collection's health report, checked against direct computations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, FDEConfig, stats
from pgembed.corpus import lee_background

FDE = FDEConfig(dimension=32, num_repetitions=6, num_simhash_projections=3,
                projection_dimension=8)  # fmt: skip


@pytest.fixture(scope="module")
def coll(engine: Engine, tiny_encoder: Any) -> Iterator[Collection]:
    texts = [s for doc in lee_background()[:60] for s in doc.split(". ") if len(s.split()) > 4]
    c = Collection(engine, "stats docs", tiny_encoder,
                   kinds=("matryoshka", "binary", "fde"), fde=FDE)  # fmt: skip
    c.create()
    c.add(texts[:150], ids=range(150))
    yield c
    c.drop(force=True)


def test_effective_rank_of_known_spectra() -> None:
    assert stats.effective_rank(np.eye(16)) == pytest.approx(16.0, rel=1e-6)
    rank_one = np.outer(np.arange(1, 9), np.ones(5))
    assert stats.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)


def test_report_matches_direct_computation(coll: Collection) -> None:
    st = stats.collect(coll, sample=40)
    t = coll.table()
    with coll.engine.connect() as conn:
        emb = np.array(conn.execute(sa.select(t.c.embedding)).scalars().all(), dtype=np.float32)
        tokens = [np.asarray(x, np.float32) for x in conn.execute(sa.select(t.c.tokens)).scalars()]
    assert st.rows == 150
    assert st.kind_rows == {
        k: 150 for k in ("single", "matryoshka", "binary", "fde", "multivector")
    }
    assert st.effective_rank == pytest.approx(stats.effective_rank(emb), rel=1e-3)
    norms = np.linalg.norm(emb, axis=1)
    assert st.norm_min == pytest.approx(norms.min(), abs=1e-6)
    assert abs(st.norm_mean - 1.0) < 1e-2  # unit vectors, stored as halfvec
    assert st.bit_balance_worst == pytest.approx(np.abs((emb > 0).mean(0) - 0.5).max())
    # every block a token falls in, over R * 2^k blocks per document
    blocks = FDE.num_repetitions * FDE.num_partitions
    fill = [len(np.unique(coll.fde.partitions(x))) / blocks for x in tokens]
    assert 0 < st.fde_fill_rate <= 1
    assert st.fde_fill_rate == pytest.approx(np.mean(fill), abs=0.08)  # a 40-row sample
    # bytes: halfvec(32) is 4 + 2*32 bytes, plus varlena header; indexes add more
    assert st.bytes_per_row["single"] > 68
    assert set(st.recall10) == {"knn", "funnel", "binary"}
    assert st.recall10["knn"] >= 0.95  # 150 rows: HNSW is close to exact


def test_cli_stats(coll: Collection, engine: Engine) -> None:
    env = {**os.environ, "PGEMBED_DATABASE_URL": engine.url.render_as_string(hide_password=False),
           "PGEMBED_MODEL_DIR": str(Path(coll.encoder.path).parent)}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "pgembed.cli", "stats", "stats docs", "--sample", "10", "--json"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rows"] == 150 and report["collection"] == "stats docs"


def test_rows_awaiting_sync_are_left_out(engine: Engine, tiny_encoder: Any) -> None:
    """A row inserted with its text only (no embedding yet) counts as a row, not a vector."""
    texts = [s for doc in lee_background()[:10] for s in doc.split(". ") if len(s.split()) > 4]
    c = Collection(engine, "stats pending", tiny_encoder, kinds=("single",))
    c.create()
    try:
        c.add(texts[:30], ids=range(30))
        t = c.table()
        with engine.begin() as conn:
            conn.execute(sa.insert(t).values(id=99, content="not embedded yet"))
            emb = np.array(
                conn.execute(sa.select(t.c.embedding).where(t.c.id < 99)).scalars().all(),
                dtype=np.float32,
            )
        st = stats.collect(c, sample=5)
        assert st.rows == 31 and st.kind_rows["single"] == 30
        norms = np.linalg.norm(emb, axis=1)
        assert st.norm_mean == pytest.approx(norms.mean(), rel=1e-5)
        assert st.norm_max == pytest.approx(norms.max(), rel=1e-6)
        assert st.bit_balance_worst == pytest.approx(np.abs((emb > 0).mean(0) - 0.5).max())
        assert st.effective_rank == pytest.approx(stats.effective_rank(emb), rel=1e-3)
        assert st.recall10["knn"] > 0.5
    finally:
        c.drop(force=True)


def test_lexical_collection(engine: Engine, tiny_encoder: Any) -> None:
    """N, distinct lexemes and average length from the statistics table, checked against
    the rows; the lexical kind's bytes (tsvector column + GIN index) measured; the vector
    strategies' recall only (bm25 and hybrid take text queries)."""
    texts = [s for doc in lee_background()[:20] for s in doc.split(". ") if len(s.split()) > 4]
    c = Collection(engine, "stats lexical", tiny_encoder, kinds=("single", "lexical"))
    c.create()
    try:
        c.add(texts[:50], ids=range(50))
        t = c.table()
        with engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.id >= 45))  # the statistics follow
            lexemes, positions = conn.execute(sa.text(
                "SELECT count(DISTINCT u.lexeme), sum(cardinality(u.positions)) "
                'FROM "stats lexical" r, unnest(r.lexemes) u')).one()  # fmt: skip
            column = conn.execute(sa.select(sa.func.avg(sa.func.pg_column_size(t.c.lexemes))))
            gin = conn.execute(sa.text(
                "SELECT pg_relation_size(indexrelid) FROM pg_index "
                "WHERE indrelid = '\"stats lexical\"'::regclass AND indexrelid::regclass::text "
                "LIKE '%lexemes_gin%'")).scalar_one()  # fmt: skip
            col_bytes = float(column.scalar_one())
        st = stats.collect(c, sample=5)
        assert st.rows == 45 and st.kind_rows == {"single": 45, "lexical": 45}
        assert st.lexical_documents == 45
        assert st.lexical_lexemes == lexemes
        assert st.lexical_avg_length == pytest.approx(positions / 45)
        assert st.bytes_per_row["lexical"] == pytest.approx(col_bytes + gin / 45)
        assert set(st.recall10) == {"knn"}
        report = stats.format_stats(st)
        assert f"lexical: N 45, {lexemes} distinct lexemes" in report
    finally:
        c.drop(force=True)


def test_a_bit_that_never_changes_is_flagged(engine: Engine, tiny_encoder: Any) -> None:
    """Dimensions whose sign is the same in every row read as stuck, with their share of
    ones, never as a balanced-looking distance from 0.5."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, tiny_encoder.dim)).astype(np.float32)
    x[:, 3] = np.abs(x[:, 3]) + 0.1  # always 1
    x[:, 7] = -np.abs(x[:, 7]) - 0.1  # always 0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = Collection(engine, "stats stuck", tiny_encoder, kinds=("binary",), text_column=None)
    c.create()
    try:
        c.add([str(i) for i in range(60)], ids=range(60), vectors=x, progress=False)
        st = stats.collect(c, sample=5)
        ones = (x > 0).mean(0)
        assert st.bits_stuck == int(((ones == 0) | (ones == 1)).sum()) >= 2
        assert st.bit_worst_dimension in (3, 7) and st.bit_worst_ones in (0.0, 1.0)
        line = next(ln for ln in stats.format_stats(st).splitlines() if "bit balance" in ln)
        assert "STUCK" in line and f"{st.bits_stuck} of {tiny_encoder.dim}" in line, line
    finally:
        c.drop(force=True)
