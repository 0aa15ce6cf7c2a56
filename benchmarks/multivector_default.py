"""Benchmark: the FDE candidate count multivector search needs to keep 0.97 of exact MaxSim.

``pgembed.search_multivector`` with no calibration runs on its default ``candidates``; the
project asks every fallback default to keep recall against exact search >= 0.97 on its
evaluation sets. Data: the MiniLM token vectors of ``benchmarks/fde_index.py`` (all-MiniLM-
L6-v2 on ``--docs`` passages of the shipped Wikipedia sample, 200 queries: the articles' lead
sentences and first sentences of random passages; cached in ``benchmarks/out/``), stored
through ``Collection.add`` in one collection of the ``fde`` kind with pgembed's default FDE
config and index (HNSW on the bit codes, float-FDE rescore). Ground truth: the exact MaxSim
top-10 over every stored document (numpy, on the halfvec values pgembed stores).

For each ``--candidates`` value, interleaved over ``--rounds`` rounds: recall@10 of
``pgembed.search_multivector`` against that ground truth, and the median database ms per
query (statement time measured in the server: clock_timestamp around the search). The
baseline is exact MaxSim over every document in SQL (``pgembed.maxsim``), timed on a few
queries. Prints one JSON line per candidate count, then a final one with the smallest
count that reaches ``--target`` and its time against the exact scan.

    PGEMBED_HOME=$(mktemp -d) python benchmarks/multivector_default.py [--docs 6000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from typing import Any

import fde_index  # type: ignore[import-not-found]
import numpy as np
import sqlalchemy as sa
from _smoke import SMOKE_OUT, add_flag, final, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import Collection, db, migrate, sqlfuncs
from pgembed.encoders import Encoder
from pgembed.errors import UnknownCollectionError

K = 10
NAME = "bench mv default"


def timed(engine: sa.Engine, stmts: list[Any]) -> tuple[list[list[int]], list[float]]:
    """Ids and database seconds of each statement (SELECT clock, ids, clock)."""
    ids, secs = [], []
    with engine.connect() as conn:
        conn.execute(stmts[0]).all()  # warm the plan and the index pages
        conn.rollback()
        for s in stmts:
            with conn.begin():
                start, got, end = conn.execute(s).one()
            ids.append([int(i) for i in got or []])
            secs.append((end - start).total_seconds())
    return ids, secs


def wrap(hits: Any) -> Any:
    agg = sa.select(sa.func.array_agg(hits.c.id)).scalar_subquery()
    return sa.select(sa.func.clock_timestamp(), agg, sa.func.clock_timestamp())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=6000)
    ap.add_argument("--candidates", default="100,150,200,250,300,400,600")
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--exact-queries", type=int, default=10, help="queries the exact scan times")
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, docs=60, candidates="20,40", rounds=1, exact_queries=3)
    counts = [int(c) for c in args.candidates.split(",")]
    n_insert, n_queries = (10, 8) if args.smoke else (300, 200)
    if args.smoke:
        fde_index.OUT = SMOKE_OUT

    data = fde_index.load(args.docs, n_insert, n_queries, 60, 0)  # fde_index.py's cache
    docs = data.doc_tokens[: args.docs]
    queries = data.query_tokens
    exact = data.exact
    engine = db.create_engine()
    migrate.upgrade(engine)
    enc = Encoder.load("all-minilm-l6-v2", device="cpu")
    coll = Collection(engine, NAME, enc, kinds=("fde",), text_column=None)
    with contextlib.suppress(UnknownCollectionError):  # a previous run's
        coll.drop(force=True)
    coll.create()
    t0 = time.perf_counter()
    coll.add([str(i) for i in range(len(docs))], ids=range(len(docs)), vectors=(None, docs))
    load_s = time.perf_counter() - t0

    stmts = {
        c: [wrap(sqlfuncs.search_multivector(NAME, q, k=K, candidates=c)) for q in queries]
        for c in counts
    }
    rec: dict[int, float] = {}
    ms: dict[int, float] = {}
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for c in counts:
            got, secs = timed(engine, stmts[c])
            rec[c] = float(
                np.mean(
                    [len(set(g) & set(e.tolist())) / K for g, e in zip(got, exact, strict=True)]
                )
            )
            m = 1000.0 * float(np.median(secs))
            ms[c] = min(ms.get(c, m), m)
    t = coll.table()
    scan = []
    for q in queries[: args.exact_queries]:
        score = sqlfuncs.maxsim(q, t.c.tokens)
        inner = sa.select(t.c.id).order_by(score.desc().nulls_last(), t.c.id).limit(K).subquery()
        scan.append(wrap(inner))
    got, secs = timed(engine, scan)
    exact_ok = all(
        set(g) == set(e.tolist()) for g, e in zip(got, exact[: args.exact_queries], strict=True)
    )
    exact_ms = 1000.0 * float(np.median(secs))
    lines = []
    for c in counts:
        line = {"candidates": c, "recall": round(rec[c], 4), "ms": round(ms[c], 2),
                "speedup_vs_exact": round(exact_ms / ms[c], 1)}  # fmt: skip
        print(json.dumps(line), flush=True)
        lines.append(line)
    meets = [c for c in counts if rec[c] >= args.target]
    pick = min(meets) if meets else None
    at = pick or max(counts)
    final(args, {
        "benchmark": "multivector_default", "docs": len(docs), "queries": len(queries),
        "target": args.target, "smallest_meeting_target": pick,
        "recall": rec[pick] if pick else None, "ms": ms[pick] if pick else None,
        "exact_maxsim_ms": round(exact_ms, 2), "exact_sql_matches_numpy": exact_ok,
        "load_s": round(load_s, 1), "sweep": lines,
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores",
    }, ratio(exact_ms, ms[at]),
        "exact_maxsim_ms / ms at smallest_meeting_target (else the most candidates)")  # fmt: skip
    coll.drop(force=True)


if __name__ == "__main__":
    main()
