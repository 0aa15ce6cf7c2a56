"""Benchmark: MaxSim inside PostgreSQL (``pgembed.maxsim``) against numpy, per document.

Data: seeded random token sets, 32 query tokens x 200 document tokens x 128 dims (unit
vectors), stored as ``halfvec(128)[]`` rows in a throw-away database (created, migrated and
dropped by this script) on the embedded server or ``--url``'s server.

Timed, best of ``--repeats``, interleaved:
- ``pgembed.maxsim(q, tokens)`` over the whole table (``SELECT sum(...) FROM t``), so the
  figure includes reading and detoasting each row's tokens;
- the same with a parallel plan allowed (Gather over a parallel seq scan; maxsim is
  PARALLEL SAFE), as numpy's BLAS also uses every core;
- the portable formulation: unnest both sides, cross join, GROUP BY query token, in one
  statement over the table;
- numpy: ``pgembed.vectors.maxsim.maxsim`` on the same (fp16-rounded) tokens held in memory,
  all documents in one call (its fastest form), and one call per document.

- the scoring extension's C MaxSim (``pgembed_scoring.maxsim``, extension ``pgembed_scoring``)
  over the same table, called directly and through a function shaped like the wired
  ``pgembed.maxsim`` (LANGUAGE c with its ``SET search_path``), and with the portable
  kernel (``pgembed_scoring.kernel = portable``). The database is migrated with
  ``PGEMBED_SCORING=sql``, so ``pgembed.maxsim`` is the SQL one, and the extension is created
  beside it (for the embedded server pgembed builds it first; ``--url``'s server must have it
  installed, else the C figures are skipped).

End to end (``--e2e-queries``, 0 skips it): the documents also go into a multivector
collection (FDE of the tokens, HNSW on it), and ``pgembed.search_multivector`` answers the
same queries with ``pgembed.maxsim`` wired to C and to SQL, interleaved. Same candidates, so
the same results (checked: identical ids, scores within float rounding) and the same
recall@10 against exact numpy MaxSim over all documents.

Ends with one JSON line: pgembed_sql_us_per_doc, numpy_us_per_doc (numpy's faster form),
ratio, c_us_per_doc, c_ratio, portable_sql_us_per_doc, the end-to-end milliseconds per query
and speedup, the other figures, the hardware and the sizes.

    python benchmarks/maxsim.py [--docs 2000] [--repeats 3] [--numpy-threads 1] [--url ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa
from _smoke import add_flag, final, shrink  # type: ignore[import-not-found]
from sqlalchemy.engine import make_url
from tqdm import tqdm

from pgembed import migrate, scoring
from pgembed.db import resolve_url
from pgembed.storage import ingest
from pgembed.storage.columns import VectorArray
from pgembed.storage.schema import CollectionSpec, table
from pgembed.vectors.maxsim import maxsim

PORTABLE = """
SELECT sum(s.score) FROM (
    SELECT m.id, sum(m.best) AS score
    FROM (SELECT t.id, a.i, max(-(a.qt <#> dt)) AS best
          FROM bench_maxsim AS t
          CROSS JOIN unnest(CAST(:q AS halfvec[])) WITH ORDINALITY AS a(qt, i)
          CROSS JOIN unnest(t.tokens) AS dt
          GROUP BY t.id, a.i) AS m
    GROUP BY m.id) AS s
"""


C_DIRECT = "SELECT sum(pgembed_scoring.maxsim(CAST(:q AS halfvec[]), tokens)) FROM bench_maxsim"
C_WIRED = "SELECT sum(bench_wired_maxsim(CAST(:q AS halfvec[]), tokens)) FROM bench_maxsim"


def _create_scoring_extension(engine: sa.Engine, embedded_url: str | None) -> bool:
    """CREATE EXTENSION pgembed_scoring (built first for the embedded server), and a function
    shaped like the wired pgembed.maxsim; False when the server cannot have it."""
    if embedded_url is not None:
        home = scoring.embedded_home(sa.create_engine(embedded_url))
        if home is not None and scoring.compiler() is not None:
            scoring.build(home)
    with engine.begin() as conn:
        if not scoring.available(conn):
            return False
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pgembed_scoring"))
        conn.execute(
            sa.text(
                "CREATE FUNCTION bench_wired_maxsim(q halfvec[], d halfvec[]) "
                "RETURNS double precision LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE "
                "SECURITY INVOKER COST 1000 SET search_path = pg_catalog, pg_temp "
                "AS 'pgembed_scoring', 'pgembed_scoring_maxsim_halfvec'"
            )
        )
    return True


def c_portable(conn: sa.Connection, q_param: dict[str, Any]) -> Callable[[], float]:
    def go() -> float:
        with conn.begin():
            conn.execute(sa.text("SET LOCAL pgembed_scoring.kernel = portable"))
            return float(conn.execute(sa.text(C_DIRECT), q_param).scalar_one())

    return go


def end_to_end(
    engine: sa.Engine,
    docs: list[np.ndarray],
    qs: list[np.ndarray],
    repeats: int,
    candidates: int,
) -> dict[str, Any]:
    """pgembed.search_multivector with pgembed.maxsim wired to C, then to SQL, interleaved."""
    from pgembed.storage import declare
    from pgembed.storage.catalog import EncoderRecord
    from pgembed.vectors.fde import FDEConfig

    dim = docs[0].shape[1]
    rec = EncoderRecord(name="bench-maxsim", fingerprint="bench-maxsim", dim=dim, max_length=512)
    spec, fde = declare.spec_for(
        "bench_mv", rec, ("fde",), FDEConfig(dimension=dim), None, text_column=None
    )
    assert fde is not None
    with engine.begin() as conn:
        declare.declare_spec(conn, spec, rec, fde)
    for start in tqdm(range(0, len(docs), 250), desc="load e2e", unit="batch"):
        part = docs[start : start + 250]
        with engine.begin() as conn:
            ingest.write(
                conn,
                spec,
                ingest.Rows(
                    ids=np.arange(start, start + len(part), dtype=np.int64),
                    fde=fde.encode_document(part),
                    tokens=part,
                ),
            )
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE bench_mv"))
    stmt = sa.text(
        "SELECT id, score FROM pgembed.search_multivector('bench_mv', CAST(:q AS vector[]), 10, :c)"
    )
    params = [{"q": VectorArray().bind_processor(None)(q), "c": candidates} for q in qs]
    exact = [set(np.argsort(-maxsim(q, docs))[:10].tolist()) for q in qs]
    best = {"c": float("inf"), "sql": float("inf")}
    hits: dict[str, list[list[tuple[int, float]]]] = {}
    with engine.connect() as conn:
        for _ in range(repeats):
            for way in ("c", "sql"):
                with conn.begin():
                    (scoring.wire_c if way == "c" else scoring.unwire)(conn)
                with conn.begin():
                    conn.execute(stmt, params[0]).all()  # warm: plans and caches
                t0 = time.perf_counter()
                got = []
                for p in params:
                    with conn.begin():
                        got.append([(int(i), float(s)) for i, s in conn.execute(stmt, p).all()])
                best[way] = min(best[way], time.perf_counter() - t0)
                hits[way] = got
        with conn.begin():
            scoring.unwire(conn)
    for c_rows, sql_rows in zip(hits["c"], hits["sql"], strict=True):
        assert [i for i, _ in c_rows] == [i for i, _ in sql_rows], (c_rows, sql_rows)
        for (_, a), (_, b) in zip(c_rows, sql_rows, strict=True):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (a, b)
    recall = float(
        np.mean([len(exact[n] & {i for i, _ in hits["c"][n]}) / 10 for n in range(len(qs))])
    )
    n = len(qs)
    return {
        "e2e_candidates": candidates,
        "e2e_queries": n,
        "e2e_c_ms_per_query": round(best["c"] * 1e3 / n, 2),
        "e2e_sql_ms_per_query": round(best["sql"] * 1e3 / n, 2),
        "e2e_speedup": round(best["sql"] / best["c"], 2),
        "e2e_recall_at_10": round(recall, 3),
    }


def _hardware() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _interleaved(
    methods: dict[str, Callable[[], float]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best time of each method; rounds interleave them so background load hits all alike."""
    best = dict.fromkeys(methods, float("inf"))
    value: dict[str, float] = {}
    with tqdm(total=repeats * len(methods), desc="timing") as bar:
        for _ in range(repeats):
            for key, fn in methods.items():
                t0 = time.perf_counter()
                value[key] = fn()
                best[key] = min(best[key], time.perf_counter() - t0)
                bar.update(1)
    return best, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--doc-tokens", type=int, default=200)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--url", default=None, help="server URL (default: the embedded server)")
    ap.add_argument(
        "--e2e-queries",
        type=int,
        default=20,
        help="queries for the multivector search comparison, C vs SQL MaxSim (0: skip it)",
    )
    ap.add_argument("--candidates", type=int, default=100, help="FDE candidates reranked")
    ap.add_argument(
        "--numpy-threads",
        type=int,
        default=None,
        help="BLAS threads for numpy (default: all; 1 compares per core, like one backend)",
    )
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, docs=60, doc_tokens=40, repeats=1, e2e_queries=3, candidates=20)

    rng = np.random.default_rng(0)
    dim = args.dim
    # fp16-rounded, so numpy and the halfvec rows hold the same numbers
    docs = [
        _unit(rng.normal(size=(args.doc_tokens, dim))).astype(np.float16).astype(np.float32)
        for _ in range(args.docs)
    ]
    q = _unit(rng.normal(size=(args.query_tokens, dim))).astype(np.float16).astype(np.float32)

    qs = [
        _unit(rng.normal(size=(args.query_tokens, dim))).astype(np.float16).astype(np.float32)
        for _ in range(args.e2e_queries)
    ]

    admin_url = resolve_url(args.url)
    name = f"pgembed_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # generated name, no user input
    engine = sa.create_engine(make_url(admin_url).set(database=name))
    try:
        os.environ[scoring.MODE_ENV] = "sql"  # pgembed.maxsim: the SQL one
        migrate.upgrade(engine)
        has_c = _create_scoring_extension(engine, admin_url if args.url is None else None)
        spec = CollectionSpec(
            "bench_maxsim", dim, "bench", kinds=("multivector",), text_column=None
        )
        with engine.begin() as conn:
            table(spec, sa.MetaData()).create(conn)
            for start in tqdm(range(0, args.docs, 250), desc="load", unit="batch"):
                part = docs[start : start + 250]
                ids = np.arange(start, start + len(part), dtype=np.int64)
                ingest.write(conn, spec, ingest.Rows(ids=ids, tokens=part))
            conn.execute(sa.text("ANALYZE bench_maxsim"))

        q_param = {"q": VectorArray().bind_processor(None)(q)}
        ours = sa.text(
            "SELECT sum(pgembed.maxsim(CAST(:q AS halfvec[]), tokens)) FROM bench_maxsim"
        )
        portable = sa.text(PORTABLE)
        parallel = [
            "SET LOCAL min_parallel_table_scan_size = 0",  # the heap is tiny: tokens are TOASTed
            "SET LOCAL parallel_setup_cost = 0",
            "SET LOCAL parallel_tuple_cost = 0",
        ]

        with engine.connect() as conn:
            conn.execute(ours, q_param).scalar()  # warm the cache once
            conn.commit()

            def sql_parallel() -> float:
                with conn.begin():
                    for stmt in parallel:
                        conn.execute(sa.text(stmt))
                    return float(conn.execute(ours, q_param).scalar_one())

            with conn.begin():
                for stmt in parallel:
                    conn.execute(sa.text(stmt))
                plan = conn.execute(sa.text("EXPLAIN " + str(ours)), q_param).scalars().all()
                gathers = sum("Workers Planned" in line for line in plan)
            kernel = (
                conn.execute(sa.text("SELECT pgembed_scoring.kernel()")).scalar() if has_c else None
            )
            conn.commit()

            def run_sql(stmt: Any) -> Callable[[], float]:
                def go() -> float:
                    with conn.begin():
                        return float(conn.execute(stmt, q_param).scalar_one())

                return go

            methods: dict[str, Callable[[], float]] = {
                "sql": run_sql(ours),
                **(
                    {
                        "c": run_sql(sa.text(C_DIRECT)),
                        "c_wired": run_sql(sa.text(C_WIRED)),
                        "c_portable": c_portable(conn, q_param),
                    }
                    if has_c
                    else {}
                ),
                "parallel": sql_parallel,
                "portable": run_sql(portable),
                "numpy": lambda: float(maxsim(q, docs).sum()),
                "numpy_loop": lambda: sum(float(maxsim(q, [d])[0]) for d in docs),
            }
            if args.numpy_threads is not None:
                from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

                with threadpool_limits(limits=args.numpy_threads):
                    best, value = _interleaved(methods, args.repeats)
            else:
                best, value = _interleaved(methods, args.repeats)
        # the same number every way (fp16 tokens; float32 vs float64 sums)
        for key, v in value.items():
            assert abs(v - value["numpy"]) <= 1e-3 * abs(value["numpy"]), (key, v, value)
        e2e = (
            end_to_end(engine, docs, qs, args.repeats, args.candidates)
            if has_c and args.e2e_queries
            else {}
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    per_doc = 1e6 / args.docs
    # the baseline is numpy's faster form on this machine (batched or one call per document)
    numpy_best = min(best["numpy"], best["numpy_loop"])
    result = {
        "pgembed_sql_us_per_doc": round(best["sql"] * per_doc, 1),
        "numpy_us_per_doc": round(numpy_best * per_doc, 1),
        "ratio": round(best["sql"] / numpy_best, 2),
        "portable_sql_us_per_doc": round(best["portable"] * per_doc, 1),
        "portable_ratio": round(best["portable"] / numpy_best, 2),
        "pgembed_sql_parallel_us_per_doc": round(best["parallel"] * per_doc, 1),
        "parallel_workers_planned": gathers > 0,
        "numpy_batched_us_per_doc": round(best["numpy"] * per_doc, 1),
        "numpy_per_call_us_per_doc": round(best["numpy_loop"] * per_doc, 1),
        **(
            {
                "c_us_per_doc": round(best["c"] * per_doc, 1),
                "c_ratio": round(best["c"] / numpy_best, 2),
                "c_wired_us_per_doc": round(best["c_wired"] * per_doc, 1),
                "c_portable_us_per_doc": round(best["c_portable"] * per_doc, 1),
                "c_kernel": kernel,
                "sql_over_c": round(best["sql"] / best["c"], 1),
            }
            if has_c
            else {"c": "skipped: the server has no pgembed_scoring extension"}
        ),
        **e2e,
        "numpy_threads": args.numpy_threads or "all",
        "docs": args.docs,
        "query_tokens": args.query_tokens,
        "doc_tokens": args.doc_tokens,
        "dim": dim,
        "hardware": _hardware(),
    }
    final(args, result, result["ratio"], "pgembed_sql_us_per_doc / numpy_us_per_doc")


if __name__ == "__main__":
    main()
