"""Elastic depth on the query side: calibration measures each exported depth of the query
encoder against exact search with full-depth queries, and a text search with target_recall
encodes at the cheapest depth that meets it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, calibration, query_depth
from pgembed.corpus import lee_background

K = 5


@pytest.fixture(scope="module")
def coll(engine: Engine, tiny_encoder: Any) -> Iterator[Collection]:
    """Lee passages with knn; the tiny encoder has 4 layers and an exported 2-layer graph."""
    texts = [p[:200] for p in lee_background() if p.strip()][:300]
    c = Collection(engine, "calib depths", tiny_encoder)
    c.create()
    c.add(texts, ids=range(len(texts)), progress=False)
    yield c
    c.drop(force=True)


QUERIES = [
    "the prime minister said on tuesday", "bushfires near sydney", "the cricket team won",
    "israeli troops in the west bank", "the reserve bank cut interest rates",
    "qantas workers strike", "afghan opposition forces", "a man was arrested by police",
    "rain is expected this weekend", "the united nations security council",
    "shares fell on wall street", "the palestinian authority", "a plane crashed in new york",
    "the australian dollar", "hospital patients waiting", "the world health organisation",
]  # fmt: skip


@pytest.fixture(scope="module")
def cal(coll: Collection) -> calibration.Calibration:
    return coll.calibrate(queries=QUERIES, k=K, progress=False, strategies=["knn"])


def _stored(coll: Collection) -> np.ndarray[Any, Any]:
    t = coll.table()
    with coll.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.embedding).order_by(t.c.id)).scalars().all()
    return np.array(rows, dtype=np.float32)


def _exact(x: np.ndarray[Any, Any], q: np.ndarray[Any, Any]) -> list[int]:
    cos = x @ q / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
    return [int(i) for i in np.lexsort((np.arange(len(x)), -cos))[:K]]


def test_each_depth_and_setting_is_recorded(coll: Collection, cal: calibration.Calibration) -> None:
    grid = calibration.grid(coll.spec, "knn", K)
    assert query_depth.shallow_depths(coll.encoder) == [2] and coll.encoder.layers == 4
    got = {(m.layers, str(m.setting)) for m in cal.depths}
    assert got == {(d, str(s)) for d in (2, 4) for s in grid}
    with coll.engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.count()).where(
                query_depth.query_depths.c.collection == coll.spec.name
            )
        ).scalar_one()
    assert stored == len(cal.depths)
    assert all(m.encode_ms > 0 and 0 <= m.recall_low <= m.recall <= 1 for m in cal.depths)


def test_recall_is_against_exact_search_with_full_depth_queries(
    coll: Collection, cal: calibration.Calibration
) -> None:
    """A recorded depth-2 recall equals the one recomputed here: numpy exact top-k of the
    full-depth query against what search_knn returns for the 2-layer query."""
    x = _stored(coll)
    full = coll.encoder.encode(QUERIES, "query", progress=False)
    shallow = query_depth.encoder_at(coll.encoder, 2).encode(QUERIES, "query", progress=False)
    assert not np.allclose(full, shallow)  # a different graph: the test can tell them apart
    for m in cal.depths:
        if m.setting != {"ef_search": 400}:
            continue
        qs = shallow if m.layers == 2 else full
        per = []
        for qf, q in zip(full, qs, strict=True):
            got = [i for i, _ in coll.search(q, k=K, ef_search=400)]
            per.append(len(set(got) & set(_exact(x, qf))) / K)
        assert m.recall == pytest.approx(float(np.mean(per))), m
    full_best = max(m.recall for m in cal.depths if m.layers == 4)
    assert full_best == 1.0  # 300 rows, ef_search 400: the full-depth query finds its top-k


def test_search_encodes_at_the_cheapest_depth_meeting_the_target(
    coll: Collection, cal: calibration.Calibration
) -> None:
    """The pick is the least encode + database ms among rows meeting the target, and the
    search runs it: the same rows as encoding at that depth and passing the setting."""
    d = query_depth.query_depths.c
    with coll.engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.layers, d.setting, d.recall_low, d.encode_ms, d.ms).where(
                d.collection == coll.spec.name, d.strategy == "knn"
            )
        ).all()
    shallow_best = max(r.recall_low for r in rows if r.layers == 2)
    for target in sorted({max(r.recall_low for r in rows), max(shallow_best, 0.05)}):
        ok = [r for r in rows if r.recall_low >= target]
        want = min(ok, key=lambda r: (r.encode_ms + r.ms, -r.recall_low, -r.layers))
        with coll.engine.connect() as conn:
            got = query_depth.pick(conn, coll.spec.name, "knn", target, {})
        assert got is not None and (got.layers, got.setting) == (want.layers, want.setting)
        text = "storms and floods in queensland"
        enc = query_depth.encoder_at(coll.encoder, got.layers)
        q = enc.encode([text], "query", progress=False)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", calibration.CalibrationWarning)
            result = coll.search(text, k=K, target_recall=target)
        if got.layers == 2:
            assert result == coll.search(q, k=K, **got.setting)
        else:  # full depth: pgembed.calibrated_setting picks the setting, as without depths
            assert result == coll.search(q, k=K, target_recall=target)


def test_explicit_options_constrain_the_depth_pick(
    coll: Collection, cal: calibration.Calibration
) -> None:
    with coll.engine.connect() as conn:
        got = query_depth.pick(conn, coll.spec.name, "knn", 0.05, {"ef_search": 200})
        none = query_depth.pick(conn, coll.spec.name, "knn", 1.01, {})
    assert got is not None and got.setting == {"ef_search": 200}
    assert none is None


def test_no_shallow_depth_or_no_texts_records_nothing(coll: Collection) -> None:
    """Query vectors carry no text to encode at another depth: no depth rows, and the
    previous ones of the strategy are replaced."""
    q = coll.encoder.encode(QUERIES[:4], "query", progress=False)
    again = coll.calibrate(queries=q, k=K, progress=False, strategies=["knn"])
    assert again.depths == []
    with coll.engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).where(
                query_depth.query_depths.c.collection == coll.spec.name
            )
        ).scalar_one()
    assert n == 0
    coll.calibrate(queries=QUERIES, k=K, progress=False, strategies=["knn"])  # restore
