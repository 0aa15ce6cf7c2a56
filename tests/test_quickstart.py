"""The quickstart, reduced, on the real MiniLM and the real Wikipedia sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from pgembed import quickstart


@pytest.mark.slow
def test_quickstart_quality_floors(engine: Engine, minilm_encoder: Any, tmp_path: Path) -> None:
    results = quickstart.run(
        engine, encoder=minilm_encoder, max_articles=12, out_dir=tmp_path, progress=False
    )
    by = {r.strategy: r for r in results}
    assert set(by) == set(quickstart.STRATEGIES)
    # Floors measured on this reduced run (see the README), with margin.
    assert by["knn"].known_recall10 >= FLOORS["knn_known_recall10"]
    assert by["knn"].exact_recall10 >= FLOORS["knn_exact_recall10"]
    assert by["funnel"].exact_recall10 >= FLOORS["funnel_exact_recall10"]
    assert by["binary"].exact_recall10 >= FLOORS["binary_exact_recall10"]
    assert by["multivector"].exact_recall10 >= FLOORS["multivector_exact_recall10"]
    assert all(r.bytes_per_row > 0 and r.p50_ms > 0 for r in results)
    # the lexical rows: known-item quality, no exact-recall column (shown as "-")
    assert by["bm25"].known_recall10 >= FLOORS["bm25_known_recall10"]
    assert by["hybrid"].known_recall10 >= FLOORS["hybrid_known_recall10"]
    assert by["bm25"].exact_recall10 is None and by["hybrid"].exact_recall10 is None
    assert by["hybrid"].bytes_per_row > by["bm25"].bytes_per_row
    # the bit index is far smaller than the halfvec one, even with the 2-bit codes added
    assert by["binary"].bytes_per_row < by["knn"].bytes_per_row
    assert (tmp_path / "quickstart.png").stat().st_size > 10_000
    table = quickstart.format_table(results)
    assert all(s in table for s in quickstart.STRATEGIES)
    assert [line.split()[4] for line in table.splitlines()[-2:]] == ["-", "-"]


# Measured on 12 articles: known R@10 1.000 (knn); exact R@10 0.992 knn, 0.992 funnel,
# 1.000 binary, 1.000 multivector.
FLOORS = {
    "knn_known_recall10": 0.8,
    "knn_exact_recall10": 0.9,
    "funnel_exact_recall10": 0.9,
    "binary_exact_recall10": 0.9,
    "multivector_exact_recall10": 0.85,
    "bm25_known_recall10": 0.8,
    "hybrid_known_recall10": 0.8,
}


def test_streamed_ground_truth_equals_in_memory(engine: Engine, tiny_encoder: Any) -> None:
    """The exact top-10 computed batch by batch is the one of all stored vectors at once."""
    import numpy as np
    import sqlalchemy as sa

    from pgembed import Collection
    from pgembed.corpus import lee_background
    from pgembed.vectors.maxsim import maxsim_matrix

    docs = [s for d in lee_background()[:30] for s in d.split(". ") if len(s.split()) > 4][:70]
    coll = Collection(engine, "quickstart truth", tiny_encoder, kinds=("single", "multivector"))
    coll.create()
    try:
        coll.add(docs, ids=range(70))
        qvecs, qtoks = tiny_encoder.encode_both(docs[:9], "query", progress=False)
        t = coll.table()
        with engine.connect() as conn:
            stored = conn.execute(sa.select(t.c.embedding, t.c.tokens).order_by(t.c.id)).all()
        emb = np.array([r[0] for r in stored], dtype=np.float32)
        dense = np.argsort(-(qvecs @ emb.T), axis=1, kind="stable")[:, :10]
        ms = np.argsort(-maxsim_matrix(qtoks, [r[1] for r in stored]), axis=1, kind="stable")
        got_dense, got_ms = quickstart._exact_top10(engine, t, qvecs, qtoks, batch=16)
        assert got_dense == dense.tolist()
        assert got_ms == ms[:, :10].tolist()
    finally:
        coll.drop(force=True)
