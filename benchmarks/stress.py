"""Concurrency stress: writers and searchers on one collection for a fixed time.

4 writer threads each ``Collection.add`` batches of real sentences under ids of their own
(disjoint ranges), and every few batches also upsert a shared block of ids that every
writer rewrites with its own texts (overlapping upserts of the same rows). 8 searcher
threads run ``Collection.search`` (the SQL functions: knn, funnel and binary) with query
vectors, checking each answer (at most k rows, scores best first). Every loop is bounded
by ``--seconds`` and a maximum iteration count.

At the end the table is checked against the acknowledged writes: the row count equals the
number of distinct ids whose ``add`` returned, no acknowledged id is missing, no other id
exists, and every shared row is whole (its vector is the encoding of the text stored with
it, never a mix of two writers). Errors must be 0. The last line printed is one JSON object.

    python benchmarks/stress.py --seconds 60                 # tiny random BERT, embedded server
    python benchmarks/stress.py --seconds 60 --url postgresql://...

Only loopback or the embedded server's unix socket are used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

WRITER_BASE = 10_000_000  # writer w owns ids WRITER_BASE * (w + 1) + i
SHARED_BASE = 1_000  # ids SHARED_BASE .. SHARED_BASE + SHARED - 1, upserted by every writer
SHARED = 32
MAX_ITERS = 100_000
KINDS = ("single", "matryoshka", "binary")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _sentences() -> list[str]:
    from pgembed.corpus import lee_background

    return [s.strip() for d in lee_background() for s in d.split(". ") if len(s.split()) > 4]


def _encoder(model: str, model_dir: Path | None) -> Any:
    from pgembed.encoders import Encoder

    return Encoder.load(model, device="cpu", model_dir=model_dir)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.write_ops = 0
        self.rows_written = 0
        self.search_ops = 0
        self.errors: list[str] = []
        self.acked: set[int] = set()

    def error(self, where: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{where}: {type(exc).__name__}: {str(exc)[:300]}")


def _writer(
    w: int, coll: Any, texts: list[str], batch: int, shared_every: int, shuffle_shared: bool,
    deadline: float, stats: Stats,
) -> None:  # fmt: skip
    rng = random.Random(w)
    next_id = WRITER_BASE * (w + 1)
    for it in range(MAX_ITERS):
        if time.monotonic() >= deadline:
            return
        try:
            if it % shared_every == shared_every - 1:
                # overlapping upsert: every writer rewrites the same ids with its own texts
                ids = list(range(SHARED_BASE, SHARED_BASE + SHARED))
                if shuffle_shared:  # each writer in its own order (see --shuffle-shared)
                    rng.shuffle(ids)
                chunk = [f"{rng.choice(texts)} (writer {w}, round {it})" for _ in ids]
            else:
                ids = list(range(next_id, next_id + batch))
                chunk = [texts[(i * 7919) % len(texts)] for i in ids]
                next_id += batch
            n = coll.add(chunk, ids=ids, progress=False)
        except Exception as exc:  # counted, reported
            stats.error(f"writer {w}", exc)
            continue
        with stats.lock:
            stats.write_ops += 1
            stats.rows_written += n
            stats.acked.update(ids)


def _searcher(
    s: int, coll: Any, queries: np.ndarray[Any, Any], prefix: int, deadline: float, stats: Stats
) -> None:
    rng = random.Random(1000 + s)
    for _ in range(MAX_ITERS):
        if time.monotonic() >= deadline:
            return
        q = queries[rng.randrange(len(queries))]
        strategy = rng.choice(("knn", "funnel", "binary"))
        opts = {"prefix": prefix} if strategy == "funnel" else {}
        k = rng.choice((1, 5, 10))
        try:
            hits = coll.search(q, k=k, strategy=strategy, **opts)
            scores = [score for _, score in hits]
            if len(hits) > k or scores != sorted(scores, reverse=True):
                raise AssertionError(f"{strategy} k={k} returned {hits}")
            if len({i for i, _ in hits}) != len(hits):
                raise AssertionError(f"{strategy} returned an id twice: {hits}")
        except Exception as exc:  # counted, reported
            stats.error(f"searcher {s}", exc)
            continue
        with stats.lock:
            stats.search_ops += 1


def _check(coll: Any, stats: Stats) -> dict[str, int]:
    """Row count vs acknowledged writes, and shared rows whole (vector of their own text)."""
    import sqlalchemy as sa

    t = coll.table()
    with coll.engine.connect() as conn:
        ids = set(conn.execute(sa.select(t.c.id)).scalars())
        shared = conn.execute(
            sa.select(t.c.id, t.c.content, t.c.embedding, t.c.embedded_hash,
                      sa.func.md5(t.c.content))
            .where(t.c.id.between(SHARED_BASE, SHARED_BASE + SHARED - 1)).order_by(t.c.id)
        ).all()  # fmt: skip
    torn = 0
    if shared:
        want = coll.encoder.encode([r[1] for r in shared], "document", progress=False)
        got = np.array([np.asarray(r[2]) for r in shared], dtype=np.float32)
        close = np.abs(got - want).max(axis=1) <= 2e-3
        torn = int(np.sum(~close)) + sum(r[3] != r[4] for r in shared)
    return {
        "rows": len(ids),
        "rows_acknowledged": len(stats.acked),
        "lost_rows": len(stats.acked - ids),
        "extra_rows": len(ids - stats.acked),
        "torn_rows": torn,
    }


def run(
    url: str | None = None,
    *,
    seconds: float = 60.0,
    writers: int = 4,
    searchers: int = 8,
    batch: int = 16,
    shared_every: int = 4,
    shuffle_shared: bool = False,
    model: str | None = None,
    model_dir: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the stress test; returns the result dict (also what main prints)."""
    from pgembed import Collection, db, migrate
    from pgembed.encoders.testing import TINY_NAME, export_tiny

    tmp: tempfile.TemporaryDirectory[str] | None = None
    if model is None:  # the tiny random BERT, exported here unless a model_dir has it
        model = TINY_NAME
        if model_dir is None or not (model_dir / TINY_NAME).is_dir():
            tmp = tempfile.TemporaryDirectory(prefix="pgembed-stress-")
            model_dir = Path(tmp.name)
            export_tiny(model_dir, fp16=False, int8=False)
    engine = db.create_engine(url, pool_size=writers + searchers + 2, max_overflow=4)
    migrate.upgrade(engine)
    encoders = [_encoder(model, model_dir) for _ in range(writers)]
    dim = encoders[0].dim
    prefix = max(1, dim // 4)
    name = f"stress {uuid.uuid4().hex[:8]}"
    texts = _sentences()
    coll = Collection(
        engine, name, encoders[0], kinds=KINDS, matryoshka_dims=(prefix,), binary_bits=2
    ).create()
    stats = Stats()
    try:
        # a first batch so searches have rows from the start (acknowledged like the rest)
        seed_ids = list(range(WRITER_BASE * (writers + 1), WRITER_BASE * (writers + 1) + 64))
        coll.add([texts[i % len(texts)] for i in range(64)], ids=seed_ids, progress=False)
        stats.acked.update(seed_ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            queries = encoders[0].encode(texts[-64:], "query", progress=False)
        handles = [Collection.open(engine, name, enc) for enc in encoders]
        start = time.monotonic()
        deadline = start + seconds
        threads = [
            threading.Thread(
                target=_writer,
                args=(w, handles[w], texts, batch, shared_every, shuffle_shared, deadline, stats),
            )
            for w in range(writers)
        ] + [
            threading.Thread(
                target=_searcher, args=(s, handles[0], queries, prefix, deadline, stats)
            )
            for s in range(searchers)
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation warnings of long sentences
            for th in threads:
                th.start()
            for th in threads:
                th.join(seconds + 300)
        duration = time.monotonic() - start
        hung = sum(th.is_alive() for th in threads)
        consistency = _check(coll, stats)
    finally:
        if not keep:
            coll.drop(force=True)
        engine.dispose()
        if tmp is not None:
            tmp.cleanup()
    result: dict[str, Any] = {
        "benchmark": "stress",
        "seconds": round(duration, 1),
        "writers": writers,
        "searchers": searchers,
        "shuffle_shared": shuffle_shared,
        "model": model,
        "write_ops": stats.write_ops,
        "rows_written": stats.rows_written,
        "search_ops": stats.search_ops,
        "ops_per_s": round((stats.write_ops + stats.search_ops) / duration, 1),
        "errors": len(stats.errors) + hung,
        **consistency,
        "hardware": f"{cpu_name()}, {os.cpu_count()} cores",
    }
    result["ok"] = (
        result["errors"] == 0
        and consistency["lost_rows"] == 0
        and consistency["extra_rows"] == 0
        and consistency["torn_rows"] == 0
        and consistency["rows"] == consistency["rows_acknowledged"]
    )
    for line in stats.errors[:10]:
        print(line, file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--searchers", type=int, default=8)
    p.add_argument("--batch", type=int, default=16, help="texts per add() of a writer")
    p.add_argument("--shared-every", type=int, default=4,
                   help="every Nth add of a writer upserts the shared ids")  # fmt: skip
    p.add_argument("--shuffle-shared", action="store_true",
                   help="upsert the shared ids in a different order per writer")  # fmt: skip
    p.add_argument("--url", help="database URL (default: PGEMBED_DATABASE_URL or embedded)")
    p.add_argument("--model", help="exported model name (default: a tiny random BERT)")
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    # as benchmarks/_smoke.py's flag (inline: tests load this file on its own, off sys.path)
    p.add_argument("--smoke", action="store_true", help="3 seconds, 2 writers, 2 searchers")
    a = p.parse_args(argv)
    if a.smoke:
        a.seconds, a.writers, a.searchers = 3.0, 2, 2
    if a.seconds <= 0 or a.writers < 1 or a.searchers < 0 or a.batch < 1 or a.shared_every < 1:
        p.error("--seconds, --writers, --batch and --shared-every must be positive")
    result = run(
        a.url, seconds=a.seconds, writers=a.writers, searchers=a.searchers, batch=a.batch,
        shared_every=a.shared_every, shuffle_shared=a.shuffle_shared, model=a.model,
        model_dir=a.model_dir, keep=a.keep,
    )  # fmt: skip
    # the headline ratio: rows in the table over acknowledged writes (1.0: none lost or extra)
    result["ratio"] = round(result["rows"] / max(result["rows_acknowledged"], 1), 4)
    result["ratio_of"] = "rows / rows_acknowledged"
    if a.smoke:
        result["smoke"] = True
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
