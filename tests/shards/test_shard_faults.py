"""A shard down or slow: searches name it or flag partial hits; ingest resumes, nothing lost."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from pgembed.errors import ShardError
from pgembed.shards import ShardedCollection

N = 1500


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray[Any, Any]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def loaded(make_sharded: Any, shard_servers: Any, tiny_encoder: Any) -> Any:
    coordinator, urls = make_sharded(3)
    rng = np.random.default_rng(3)
    ids = np.arange(N, dtype=np.int64) * 7 + 1
    vecs = unit(rng, N, tiny_encoder.dim)
    coll = ShardedCollection(coordinator, f"sf_{uuid.uuid4().hex[:8]}", tiny_encoder, shards=urls)
    coll.create()
    yield coll, ids, vecs
    for s in shard_servers:
        s.start()  # whatever a test stopped
    coll.dispose()


def exact_top(ids: Any, vecs: Any, q: Any, k: int) -> list[int]:
    return ids[np.argsort(-(vecs @ q), kind="stable")[:k]].tolist()


def test_a_shard_down_mid_search(loaded: Any, shard_servers: Any) -> None:
    coll, ids, vecs = loaded
    coll.add([f"t{i}" for i in ids], ids, vectors=vecs)
    q = unit(np.random.default_rng(5), 1, vecs.shape[1])[0]
    assert [i for i, _ in coll.search(q, k=10, ef_search=1000)] == exact_top(ids, vecs, q, 10)
    shard_servers[1].stop()
    with pytest.raises(ShardError, match=r"shard 1 \(") as err:
        coll.search(q, k=10, ef_search=1000)
    assert shard_servers[1].password not in str(err.value)  # URLs are masked
    assert "allow_partial" in str(err.value)
    hits = coll.search(q, k=10, ef_search=1000, allow_partial=True)
    assert hits.partial and len(hits.missing) == 1 and hits.missing[0].startswith("shard 1 (")
    assert shard_servers[1].password not in hits.missing[0]
    # The partial hits are the exact top-10 of the rows the other shards hold.
    routes = coll.route(ids)
    alive = np.concatenate([routes[0], routes[2]])
    assert [i for i, _ in hits] == exact_top(ids[alive], vecs[alive], q, 10)
    shard_servers[1].start()
    full = coll.search(q, k=10, ef_search=1000)
    assert not full.partial and [i for i, _ in full] == exact_top(ids, vecs, q, 10)


def test_a_slow_shard_runs_into_its_statement_timeout(loaded: Any) -> None:
    coll, ids, vecs = loaded
    coll.add([f"t{i}" for i in ids], ids, vectors=vecs)
    coll.timeout_ms = 300
    q = vecs[0]
    lock = coll.shards[2].engine.connect()
    tx = lock.begin()
    lock.execute(sa.text(f'LOCK TABLE public."{coll.spec.table_name}" IN ACCESS EXCLUSIVE MODE'))
    try:
        with pytest.raises(ShardError, match=r"shard 2 \(.*statement timeout"):
            coll.search(q, k=5)
        hits = coll.search(q, k=5, allow_partial=True)
        assert hits.partial and hits.missing[0].startswith("shard 2 (")
    finally:
        tx.rollback()
        lock.close()
    assert not coll.search(q, k=5).partial


def stored(coll: Any) -> tuple[Any, Any]:
    """Every row's id and vector, read with plain SQL through the coordinator's parent."""
    with coll.engine.connect() as conn:
        rows = conn.execute(
            sa.text(f'SELECT id, embedding::vector::real[] FROM public."{coll.spec.table_name}"')
        ).all()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float32)


def test_a_shard_stopped_mid_ingest_loses_nothing(loaded: Any, shard_servers: Any) -> None:
    coll, ids, _ = loaded
    texts = [f"passage number {i} of the corpus" for i in ids]
    stopped = threading.Event()

    def stop_shard0(progress: Any) -> None:
        if not stopped.is_set():  # after the first batch some shard wrote
            stopped.set()
            shard_servers[0].stop()

    # Encoded here in batches of 50, each shard's writer commits batch after batch.
    with pytest.raises(ShardError, match=r"shard 0 \(.*run the same add again"):
        coll.add(texts, ids, batch_size=50, mode="incremental", on_progress=stop_shard0)
    assert stopped.is_set()
    routes = coll.route(ids)
    for s in (1, 2):  # the live shards finished
        assert coll.parts[s].count() == len(routes[s])
    shard_servers[0].start()
    acknowledged = coll.parts[0].count()
    assert acknowledged < len(routes[0])
    written = coll.add(texts, ids, batch_size=50)
    assert written == len(routes[0]) - acknowledged
    assert coll.count() == N
    got_ids, vecs = stored(coll)
    assert sorted(got_ids.tolist()) == sorted(ids.tolist())
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for q in unit(np.random.default_rng(9), 3, vecs.shape[1]):
        got = coll.search(q, k=10, ef_search=1000)
        assert [i for i, _ in got] == exact_top(got_ids, vecs, q, 10)
