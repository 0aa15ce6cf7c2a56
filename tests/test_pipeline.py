"""Collection end to end on the real server with a real (tiny) exported encoder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, FDEConfig
from pgembed.corpus import lee_background
from pgembed.errors import (
    CollectionError,
    ConfigError,
    EmptyInputError,
    FingerprintMismatchError,
    UnknownCollectionError,
    UnknownKindError,
)
from pgembed.storage.schema import IndexParams
from pgembed.vectors.maxsim import maxsim

ALL = ("single", "matryoshka", "binary", "fde", "multivector")
FDE = FDEConfig(dimension=32, num_repetitions=8, num_simhash_projections=3,
                projection_dimension=8, final_projection_dimension=None)  # fmt: skip


@pytest.fixture(scope="module")
def texts() -> list[str]:
    sentences = [s for doc in lee_background() for s in doc.split(". ") if len(s.split()) > 4]
    return sentences[:160]


@pytest.fixture(scope="module")
def coll(engine: Engine, tiny_encoder: Any, texts: list[str]) -> Iterator[Collection]:
    c = Collection(engine, "pipeline docs", tiny_encoder, kinds=ALL, fde=FDE, binary_bits=2)
    c.create()
    assert c.add(texts, ids=range(100, 100 + len(texts))) == len(texts)
    yield c
    c.drop(force=True)


def _stored(coll: Collection) -> dict[str, Any]:
    t = coll.table()
    cols = [t.c.id, t.c.embedding, *([t.c.tokens] if "tokens" in t.c else [])]
    with coll.engine.connect() as conn:
        rows = conn.execute(sa.select(*cols).order_by(t.c.id)).all()
    return {
        "ids": np.array([r[0] for r in rows]),
        "emb": np.array([r[1] for r in rows], dtype=np.float32),
        "tokens": [r[2] for r in rows] if len(cols) == 3 else None,
    }


def _exact_top10(coll: Collection, data: dict[str, Any], q_text: str) -> tuple[list[int], Any]:
    """Ids and cosine scores of the exact top 10 of the stored vectors for a query text."""
    q = coll.encoder.encode([q_text], "query")[0]
    emb = data["emb"].astype(np.float64)
    cos = emb @ q / np.linalg.norm(emb, axis=1) / np.linalg.norm(q)
    order = np.argsort(-cos, kind="stable")[:10]
    return data["ids"][order].tolist(), cos[order]


def test_add_stores_every_kind_and_is_resumable(coll: Collection, texts: list[str]) -> None:
    assert coll.count() == len(texts)
    # same ids, same texts: nothing to do; changed text: rewritten
    assert coll.add(texts, ids=range(100, 100 + len(texts))) == 0
    changed = [*texts[:3], "a completely new sentence about databases", *texts[4:10]]
    assert coll.add(changed, ids=range(100, 110)) == 1
    t = coll.table()
    with coll.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == 103)).mappings().one()
    assert row["content"].startswith("a completely new")
    assert row["fde"] is not None and len(row["embedding_bits"]) == 2 * 32
    want = coll.encoder.encode([row["content"]])[0]
    np.testing.assert_allclose(row["embedding"], want, atol=2e-3)
    coll.add([texts[3]], ids=[103])  # restore


def test_exact_matches_of_every_strategy(coll: Collection) -> None:
    """With candidates covering the table every strategy equals brute force."""
    data = _stored(coll)
    q_text = "economic growth and interest rates"
    exact, exact_scores = _exact_top10(coll, data, q_text)
    wide = {"ef_search": 400}
    for strategy, opts in [
        ("knn", {}),
        ("funnel", {"oversample": 40}),
        ("binary", {"oversample": 40}),
    ]:
        got = coll.search(q_text, k=10, strategy=strategy, **opts, **wide)
        assert [i for i, _ in got] == exact, strategy
        np.testing.assert_allclose([s for _, s in got], exact_scores, atol=1e-4)  # q as halfvec

    qt = coll.encoder.encode_tokens([q_text], "query")[0]
    ms = maxsim(qt.astype(np.float16).astype(np.float32), data["tokens"])
    want = data["ids"][np.argsort(-ms, kind="stable")[:10]].tolist()
    got = coll.search(q_text, k=10, strategy="multivector", candidates=len(data["ids"]), **wide)
    assert [i for i, _ in got] == want
    np.testing.assert_allclose([s for _, s in got], np.sort(ms)[::-1][:10], rtol=1e-3, atol=1e-3)


def test_binary_codes_under_ivfflat(engine: Engine, tiny_encoder: Any, texts: list[str]) -> None:
    ivf = IndexParams(binary="ivfflat", lists=8)
    c = Collection(engine, "pipeline ivf", tiny_encoder, kinds=("binary",), index=ivf).create()
    try:
        c.add(texts, ids=range(len(texts)))
        assert c.reindex() == ["pipeline ivf_embedding_bq_ivfflat"]
        opened = Collection.open(engine, "pipeline ivf", tiny_encoder)
        assert opened.spec.index == ivf
        q_text = "economic growth and interest rates"
        exact, _ = _exact_top10(c, _stored(c), q_text)
        every_row = {"oversample": len(texts) // 10, "probes": 8}
        assert [i for i, _ in opened.search(q_text, strategy="binary", **every_row)] == exact
        assert len(opened.search(q_text, strategy="binary")) == 10  # default probes
    finally:
        c.drop(force=True)


def test_search_errors(coll: Collection, engine: Engine, tiny_encoder: Any) -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        coll.search("x", strategy="magic")
    only_single = Collection(engine, "pipeline single", tiny_encoder)
    only_single.create()
    try:
        with pytest.raises(UnknownKindError, match="needs the 'fde' kind"):
            only_single.search("x", strategy="multivector")
    finally:
        only_single.drop()
    with pytest.raises(UnknownCollectionError, match="no collection named 'nope; DROP TABLE x'"):
        Collection.open(engine, "nope; DROP TABLE x", tiny_encoder)
    with pytest.raises(EmptyInputError):
        coll.add([])


def test_drop_refuses_populated(coll: Collection) -> None:
    with pytest.raises(CollectionError, match="holds 160 rows"):
        coll.drop()
    assert coll.count() == 160


def test_fingerprint_mismatch_is_refused(engine: Engine, coll: Collection, tmp_path: Any) -> None:
    from pgembed.encoders import Encoder
    from pgembed.encoders.testing import TINY_NAME, build_tiny_bert, export_tiny

    other_src = build_tiny_bert(tmp_path / "src", seed=1)
    export_tiny(tmp_path, source_dir=other_src, fp16=False, int8=False)
    other = Encoder.load(TINY_NAME, device="cpu", model_dir=tmp_path)
    assert other.fingerprint != coll.encoder.fingerprint
    with pytest.raises(FingerprintMismatchError, match=r"was embedded with encoder"):
        Collection.open(engine, coll.spec.name, other)
    before = coll.count()
    with pytest.raises(FingerprintMismatchError):
        Collection(engine, "pipeline other", other).create()
    assert coll.count() == before


def test_sync_with_concurrent_workers(engine: Engine, tiny_encoder: Any, texts: list[str]) -> None:
    c = Collection(engine, "pipeline sync", tiny_encoder, kinds=("single", "multivector"))
    c.create()
    t = c.table()
    try:
        with engine.begin() as conn:
            conn.execute(t.insert(), [{"id": i, "content": s} for i, s in enumerate(texts)])
        workers = [Collection.open(engine, "pipeline sync", tiny_encoder) for _ in range(3)]
        counts: list[int] = []
        errors: list[BaseException] = []

        def work(w: Collection) -> None:
            try:
                counts.append(w.sync(batch_size=16, progress=False))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert sum(counts) == len(texts)  # each row embedded exactly once
        with engine.connect() as conn:
            stale = conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.embedding.is_(None))
            ).scalar_one()
        assert stale == 0
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id < 5).values(content=t.c.content + " (edited)"))
        assert c.sync(progress=False) == 5
        assert c.sync(progress=False) == 0
    finally:
        c.drop(force=True)


def test_multivector_builder_matches_exact_maxsim(coll: Collection) -> None:
    """pgembed.query.multivector (Python query FDE) with every row as a candidate."""
    from pgembed import query

    data = _stored(coll)
    qt = coll.encoder.encode_tokens(["interest rates and the economy"], "query")[0]
    t = coll.table()
    stmt = query.multivector(t.c.fde, t.c.tokens, qt, coll.fde.encode_query([qt])[0], k=5,
                             candidates=len(data["ids"]))  # fmt: skip
    with coll.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL hnsw.ef_search = 400"))
        got = [(r.id, r.score) for r in conn.execute(stmt).all()]
    ms = maxsim(qt.astype(np.float16).astype(np.float32), data["tokens"])
    order = np.argsort(-ms, kind="stable")[:5]
    assert [i for i, _ in got] == data["ids"][order].tolist()
    np.testing.assert_allclose([s for _, s in got], ms[order], rtol=1e-3, atol=1e-3)
