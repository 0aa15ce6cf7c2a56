"""Benchmark: the scoring extension's residual-code and query-FDE functions against their SQL
versions and numpy, and their effect on search_binary / search_multivector end to end.

Everything runs in one throw-away database (created, migrated and dropped by this script) on
the embedded server or ``--url``'s server, which must offer pgembed_scoring 0.2.0 (built
first for the embedded server). The wiring is switched inside the run, in interleaved
rounds, so that each figure is what a user gets after ``pgembed db upgrade``:

- ``sql``: every pgembed function in SQL (``PGEMBED_SCORING=sql``);
- ``c_maxsim``: only MaxSim in C (what pgembed_scoring 0.1.0 wired);
- ``c``: everything in ``pgembed.scoring.WIRED`` in C.

Per function (best of ``--repeats``, µs per call; numpy limited to one BLAS thread, as one
backend is one core):
- ``residual_similarity(codes, scales, bits)`` over a table of ``--docs`` stored 2-bit codes
  of 384-dim vectors (``SELECT sum(f(...)) FROM t``), numpy: ``residual_inner_product`` of
  the query code with each stored code, one call per document and all at once;
- ``residual_levels(q, 2)`` over a table of query vectors (LATERAL), numpy:
  ``residual_encode`` per query;
- ``fde_query(config, q)`` for 32-token queries under the default FDE config (384 dims,
  R 41, k 3, d_proj 12 → 3936), numpy: ``FDEEncoder.encode_query`` per query.

End to end: ``pgembed.search_binary`` on a collection of ``--docs`` clustered 384-dim
vectors with 2-bit codes, and ``pgembed.search_multivector`` on ``--mv-docs`` documents of
24-48 token vectors (FDE HNSW, then MaxSim). Each wiring must answer every query with the
same ids (checked), so recall@10 against exact search (cosine / exact MaxSim over all
documents) is equal by construction; it is reported.

Ends with one JSON line: per function the C, SQL and numpy µs per call and the SQL/C and
C/numpy ratios, the end-to-end ms per query per wiring and the speedups, recall, sizes and
the hardware. Writes ``docs/scoring.png``.

    python benchmarks/scoring.py [--docs 5000] [--mv-docs 1500] [--queries 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from _smoke import SMOKE_OUT, add_flag, final, shrink  # type: ignore[import-not-found]
from sqlalchemy.engine import make_url
from tqdm import tqdm

from pgembed import migrate, scoring
from pgembed.db import raw_connection, resolve_url
from pgembed.migrate import VECTOR_SCHEMA, vector_schema_identifier
from pgembed.storage import declare, ingest
from pgembed.storage.catalog import EncoderRecord
from pgembed.storage.columns import VectorArray
from pgembed.vectors import binary
from pgembed.vectors.fde import FDEConfig, FDEEncoder
from pgembed.vectors.maxsim import maxsim

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
rip = binary.residual_inner_product
BITS = 2
WIRINGS = ("sql", "c_maxsim", "c")


def set_wiring(conn: sa.Connection, way: str) -> None:
    """Point pgembed's scoring functions at SQL, at C for MaxSim only, or at C for all."""
    if way == "sql":
        scoring.unwire(conn)
        return
    scoring.wire_c(conn)
    if way == "c_maxsim":
        rest = [w.name for w in scoring.WIRED if w.name != "maxsim"]
        sql = scoring.sql_script(rest).replace(VECTOR_SCHEMA, vector_schema_identifier(conn))
        raw_connection(conn).execute(sql)


def _vec(x: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in x) + "]"


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _hardware() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


# --- data ------------------------------------------------------------------------------------


def make_data(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(64, DIM))
    emb = _unit(centers[rng.integers(0, 64, args.docs)] + 0.7 * rng.normal(size=(args.docs, DIM)))
    queries = _unit(
        emb[rng.integers(0, args.docs, args.queries)] + 0.3 * rng.normal(size=(args.queries, DIM))
    )
    topics = rng.normal(size=(64, DIM))
    docs = [
        _unit(topics[rng.integers(0, 64)] + 1.2 * rng.normal(size=(int(rng.integers(24, 49)), DIM)))
        for _ in range(args.mv_docs)
    ]
    mv_queries = [
        _unit(
            docs[int(i)][rng.integers(0, len(docs[int(i)]), 32)] + 0.5 * rng.normal(size=(32, DIM))
        )
        for i in rng.integers(0, args.mv_docs, args.queries)
    ]
    return {"emb": emb, "queries": queries, "docs": docs, "mv_queries": mv_queries}


def load(engine: sa.Engine, data: dict[str, Any]) -> dict[str, Any]:
    """Two collections: 'bench_bin' (single + 2-bit binary) and 'bench_mv' (fde + multivector),
    plus the tables the per-function timings scan."""
    rec = EncoderRecord(name="bench-scoring", fingerprint="bench-scoring", dim=DIM, max_length=512)
    bin_spec, _ = declare.spec_for(
        "bench_bin", rec, ("single", "binary"), None, None, binary_bits=BITS, text_column=None
    )
    mv_spec, fde = declare.spec_for(
        "bench_mv", rec, ("fde",), FDEConfig(dimension=DIM), None, text_column=None
    )
    assert fde is not None
    with engine.begin() as conn:
        declare.declare_spec(conn, bin_spec, rec, None)
        fde_id = declare.declare_spec(conn, mv_spec, rec, fde)
    emb, docs = data["emb"], data["docs"]
    for start in tqdm(range(0, len(emb), 1000), desc="load binary", unit="batch"):
        part = emb[start : start + 1000]
        with engine.begin() as conn:
            ingest.write(conn, bin_spec, ingest.Rows(
                ids=np.arange(start, start + len(part), dtype=np.int64), embedding=part,
                embedding_bits=binary.pack_residual(part, BITS)))  # fmt: skip
    for start in tqdm(range(0, len(docs), 250), desc="load multivector", unit="batch"):
        part = docs[start : start + 250]
        with engine.begin() as conn:
            ingest.write(conn, mv_spec, ingest.Rows(
                ids=np.arange(start, start + len(part), dtype=np.int64),
                fde=fde.encode_document(part), tokens=part))  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE bench_bin"))
        conn.execute(sa.text("ANALYZE bench_mv"))
        conn.execute(sa.text("CREATE TABLE bench_q (i int, q vector)"))
        conn.execute(
            sa.text(
                "INSERT INTO bench_q SELECT i, CAST(q AS vector) "
                "FROM unnest(CAST(:q AS text[])) WITH ORDINALITY AS u(q, i)"
            ),
            {"q": [_vec(q) for q in data["queries"]]},
        )
        conn.execute(sa.text("CREATE TABLE bench_mq (i int, q vector[])"))
        for i, q in enumerate(data["mv_queries"]):
            conn.execute(
                sa.text("INSERT INTO bench_mq VALUES (:i, CAST(:q AS vector[]))"),
                {"i": i, "q": VectorArray().bind_processor(None)(q)},
            )
    return {"fde": fde, "fde_id": fde_id}


# --- per function ----------------------------------------------------------------------------


def per_function(
    engine: sa.Engine, data: dict[str, Any], coll: dict[str, Any], repeats: int
) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    q = data["queries"][0]
    qcode = binary.residual_encode(q, BITS)
    codes = [binary.bit_text(lv) for lv in binary.unpack_bits(qcode.levels[0], DIM)]
    scales = [float(s) for s in qcode.scales[0]]
    stored = binary.residual_encode(data["emb"], BITS)
    stand_in = binary.ResidualCode(
        levels=stored.levels, scales=np.repeat(qcode.scales, len(stored), axis=0), dim=DIM
    )
    one_by_one = _rows(stand_in)  # numpy's per-document form: one call per stored code
    n_docs, n_q, n_mq = len(data["emb"]), len(data["queries"]), len(data["mv_queries"])
    sim_sql = sa.text(
        "SELECT sum(pgembed.residual_similarity(CAST(:c AS bit varying[]), CAST(:s AS float8[]), "
        "embedding_bits::bit varying)) FROM bench_bin"
    )
    lev_sql = sa.text(
        "SELECT sum(l.scales[2]) FROM bench_q, LATERAL pgembed.residual_levels(bench_q.q, 2) AS l"
    )
    fde_sql = sa.text(
        "SELECT sum(vector_norm(pgembed.fde_query(CAST(:f AS integer), q))) FROM bench_mq"
    )
    fde_enc: FDEEncoder = coll["fde"]

    timings: dict[str, dict[str, float]] = {}
    values: dict[str, dict[str, float]] = {}
    with engine.connect() as conn, threadpool_limits(limits=1):
        for _ in tqdm(range(repeats), desc="per function"):
            for way in ("sql", "c"):
                with conn.begin():
                    set_wiring(conn, way)
                for name, stmt, params, per in (
                    ("residual_similarity", sim_sql, {"c": codes, "s": scales}, n_docs),
                    ("residual_levels", lev_sql, {}, n_q),
                    ("fde_query", fde_sql, {"f": coll["fde_id"]}, n_mq),
                ):
                    with conn.begin():
                        conn.execute(stmt, params).scalar()  # warm
                        t0 = time.perf_counter()
                        v = float(conn.execute(stmt, params).scalar_one())
                        t = time.perf_counter() - t0
                    key = timings.setdefault(name, {})
                    key[way] = min(key.get(way, float("inf")), t * 1e6 / per)
                    values.setdefault(name, {})[way] = v
            numpy_ways: dict[str, Callable[[], float]] = {
                "residual_similarity": lambda: float(
                    sum(float(rip(qcode, row)[0, 0]) for row in one_by_one)
                ),
                "residual_similarity_batched": lambda: float(rip(qcode, stand_in).sum()),
                "residual_levels": lambda: float(
                    sum(binary.residual_encode(x, 2).scales[0, 1] for x in data["queries"])
                ),
                "fde_query": lambda: float(
                    sum(np.linalg.norm(fde_enc.encode_query([x])[0]) for x in data["mv_queries"])
                ),
            }
            for name, fn in numpy_ways.items():
                per = (
                    n_docs
                    if name.startswith("residual_similarity")
                    else (n_q if name == "residual_levels" else n_mq)
                )
                t, v = _best(fn, 1)
                key = timings.setdefault(name.removesuffix("_batched"), {})
                way = "numpy_batched" if name.endswith("_batched") else "numpy"
                key[way] = min(key.get(way, float("inf")), t * 1e6 / per)
                values.setdefault(name.removesuffix("_batched"), {})[way] = v
        with conn.begin():
            set_wiring(conn, "sql")
    # the same sums every way (float rounding aside)
    for name, vs in values.items():
        ref = vs["sql"]
        for way, v in vs.items():
            assert abs(v - ref) <= 1e-3 * max(1.0, abs(ref)), (name, way, v, ref)
    return timings


def _rows(code: binary.ResidualCode) -> list[binary.ResidualCode]:
    return [
        binary.ResidualCode(
            levels=code.levels[i : i + 1], scales=code.scales[i : i + 1], dim=code.dim
        )
        for i in range(len(code))
    ]


# --- end to end ------------------------------------------------------------------------------


def end_to_end(engine: sa.Engine, data: dict[str, Any], repeats: int) -> dict[str, Any]:
    emb, queries, docs, mqs = data["emb"], data["queries"], data["docs"], data["mv_queries"]
    e16 = emb.astype(np.float16).astype(np.float32)
    exact_bin = [set(np.argsort(-(e16 @ q), kind="stable")[:10].tolist()) for q in queries]
    exact_mv = [set(np.argsort(-maxsim(q, docs), kind="stable")[:10].tolist()) for q in mqs]
    bin_sql = "SELECT id, score FROM pgembed.search_binary('bench_bin', CAST(:q AS vector), 10)"
    mv_sql = (
        "SELECT id, score FROM pgembed.search_multivector('bench_mv', CAST(:q AS vector[]), 10)"
    )
    to_array = VectorArray().bind_processor(None)
    searches = {
        "binary": (sa.text(bin_sql), [{"q": _vec(q)} for q in queries], exact_bin, ("sql", "c")),
        "multivector": (sa.text(mv_sql), [{"q": to_array(q)} for q in mqs], exact_mv, WIRINGS),
    }
    # The machine is shared, so the wirings take turns on small chunks of queries; each
    # chunk's figure is its best of `repeats` rounds, and a way's total is its chunks' sum.
    chunk = 5
    best: dict[tuple[str, int], dict[str, float]] = {}
    hits: dict[str, dict[str, list[list[tuple[int, float]]]]] = {}
    rounds = sum(-(-len(params) // chunk) for _, params, _, _ in searches.values()) * repeats
    with engine.connect() as conn, tqdm(total=rounds, desc="end to end") as bar:
        for search, (stmt, params, _, ways) in searches.items():
            for start in range(0, len(params), chunk):
                part = params[start : start + chunk]
                for _ in range(repeats):
                    for way in ways:
                        with conn.begin():
                            set_wiring(conn, way)
                        with conn.begin():
                            conn.execute(stmt, part[0]).all()  # warm: plans and caches
                        t0 = time.perf_counter()
                        got = []
                        for p in part:
                            with conn.begin():
                                rows = conn.execute(stmt, p).all()
                            got.append([(int(i), float(s)) for i, s in rows])
                        dt = time.perf_counter() - t0
                        mine = best.setdefault((search, start), {})
                        mine[way] = min(mine.get(way, float("inf")), dt)
                        seen = hits.setdefault(search, {}).setdefault(way, [])
                        if len(seen) == start:
                            seen.extend(got)
                    bar.update(1)
        with conn.begin():
            set_wiring(conn, "sql")
    per_query = {
        search: {
            way: sum(t[way] for (s, _), t in best.items() if s == search) * 1e3 / len(params)
            for way in ways
        }
        for search, (_, params, _, ways) in searches.items()
    }
    out: dict[str, Any] = {}
    for search, (_, _, exact, ways) in searches.items():
        ref = hits[search]["sql"]
        for way in ways:
            for row, want in zip(hits[search][way], ref, strict=True):
                assert [i for i, _ in row] == [i for i, _ in want], (search, way, row, want)
                for (_, x), (_, y) in zip(row, want, strict=True):
                    assert abs(x - y) <= 1e-4 * max(1.0, abs(y)), (search, way, x, y)
        recall = float(
            np.mean([len(e & {i for i, _ in h}) / 10 for e, h in zip(exact, ref, strict=True)])
        )
        ms = per_query[search]
        for way in ways:
            out[f"e2e_{search}_{way}_ms"] = round(ms[way], 2)
        out[f"e2e_{search}_speedup"] = round(ms["sql"] / ms["c"], 2)
        if "c_maxsim" in ways:
            out[f"e2e_{search}_speedup_over_c_maxsim"] = round(ms["c_maxsim"] / ms["c"], 2)
        out[f"e2e_{search}_recall_at_10"] = round(recall, 3)
    return out


def profile(engine: sa.Engine, data: dict[str, Any]) -> dict[str, Any]:
    """Where each search's time goes, per wiring: pg_stat_user_functions (track_functions =
    all) over one pass of the queries, each pgembed function's total ms per query (a
    function's total includes the pgembed functions it calls; the searches' own statements,
    HNSW included, count in their self time)."""
    to_array = VectorArray().bind_processor(None)
    searches = {
        "binary": (
            "SELECT count(*) FROM pgembed.search_binary('bench_bin', CAST(:q AS vector), 10)",
            [{"q": _vec(q)} for q in data["queries"]], ("sql", "c"),
        ),
        "multivector": (
            "SELECT count(*) FROM pgembed.search_multivector('bench_mv', "
            "CAST(:q AS vector[]), 10)",
            [{"q": to_array(q)} for q in data["mv_queries"]], WIRINGS,
        ),
    }  # fmt: skip
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for search, (sql, params, ways) in searches.items():
            for way in ways:
                with conn.begin():
                    set_wiring(conn, way)
                conn.execute(sa.text(sql), params[0]).scalar()  # warm
                conn.commit()
                conn.execute(sa.text("SELECT pg_stat_reset()"))
                conn.execute(sa.text("SET track_functions = 'all'"))
                conn.commit()
                for p in params:
                    conn.execute(sa.text(sql), p).scalar()
                    conn.commit()
                conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
                conn.commit()
                conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
                rows = conn.execute(
                    sa.text(
                        "SELECT funcname, total_time, self_time FROM pg_stat_user_functions "
                        "WHERE schemaname = 'pgembed' AND total_time > 0.05 * :n "
                        "ORDER BY total_time DESC"
                    ),
                    {"n": len(params)},
                ).all()
                conn.execute(sa.text("RESET track_functions"))
                conn.commit()
                out[f"profile_{search}_{way}_ms"] = {
                    str(f): round(float(total) / len(params), 2) for f, total, _ in rows
                }
        with conn.begin():
            set_wiring(conn, "sql")
    return out


def _runner(conn: sa.Connection, stmt: Any, params: dict[str, Any]) -> Callable[[], Any]:
    return lambda: conn.execute(stmt, params).scalar()


# --- BM25: where search_bm25's time goes ------------------------------------------------------


def bm25_breakdown(engine: sa.Engine, n_docs: int, n_queries: int, repeats: int) -> dict[str, Any]:
    """search_bm25 top-10 against two statements over the same candidates: the GIN match alone
    (``count(*) WHERE lexemes @@ q``) and the match plus the ts_rank calls search_bm25 makes
    per candidate (one per query lexeme, two for the length). What is left is executor work
    on expressions (arrays, array_position, the BM25 arithmetic, the sort): the part a C
    accumulator could remove. Synthetic documents of 20-80 words drawn by frequency from the
    Wikipedia sample's vocabulary, queries of 4-8 words cut from documents."""
    import re

    from pgembed import corpus

    words: dict[str, int] = {}
    for passage in corpus.wikipedia().passages:
        for w in re.findall(r"[a-z]+", passage.text.lower()):
            words[w] = words.get(w, 0) + 1
    vocab = np.array(sorted(words))
    p = np.array([words[w] for w in vocab], dtype=np.float64)
    rng = np.random.default_rng(3)
    lengths = rng.integers(20, 81, n_docs)
    flat = rng.choice(len(vocab), size=int(lengths.sum()), p=p / p.sum())
    texts = [" ".join(x) for x in np.split(vocab[flat], np.cumsum(lengths)[:-1])]
    rec = EncoderRecord(name="bench-bm25", fingerprint="bench-bm25", dim=8, max_length=64)
    # the lexical kind lives beside a vector kind: a small random one here
    spec, _ = declare.spec_for("bench_lex", rec, ("single", "lexical"), None, None)
    with engine.begin() as conn:
        declare.declare_spec(conn, spec, rec, None)
    for start in tqdm(range(0, n_docs, 5000), desc="load lexical", unit="batch"):
        with engine.begin() as conn:
            part = texts[start : start + 5000]
            ids = np.arange(start, start + len(part), dtype=np.int64)
            vecs = _unit(rng.normal(size=(len(part), 8)))
            ingest.write(conn, spec, ingest.Rows(ids=ids, texts=part, embedding=vecs))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE bench_lex"))
    queries = []
    for i in rng.choice(n_docs, n_queries, replace=False):
        w = texts[i].split()
        start = int(rng.integers(0, len(w) - 8))
        queries.append(" ".join(w[start : start + int(rng.integers(4, 9))]))
    lexemes = (
        'SELECT array_agg(u.lexeme ORDER BY u.lexeme COLLATE "C") '
        "FROM unnest(to_tsvector('english', CAST(:q AS text))) AS u"
    )
    tq = (
        "(SELECT string_agg(array_to_tsvector(ARRAY[l])::text, ' | ')::tsquery "
        "FROM unnest(CAST(:lex AS text[])) AS l)"
    )
    bm25 = sa.text("SELECT count(*) FROM pgembed.search_bm25('bench_lex', :q, 10)")
    match = sa.text(f"SELECT count(*) FROM bench_lex AS r WHERE r.lexemes @@ {tq}")
    best = {"bm25": 0.0, "match": 0.0, "ts_rank": 0.0}
    candidates = []
    with engine.connect() as conn:
        for q in tqdm(queries, desc="bm25 breakdown"):
            lex = conn.execute(sa.text(lexemes), {"q": q}).scalar_one()
            if lex is None:
                continue  # only stop words: search_bm25 refuses it
            # one ts_rank per query lexeme and two for the length, as search_bm25 computes
            ranks = " + ".join(
                [f"ts_rank(r.lexemes, array_to_tsvector(ARRAY[(CAST(:lex AS text[]))[{i}]])"
                 f"::text::tsquery)" for i in range(1, len(lex) + 1)]
                + [f"ts_rank(r.lexemes, {tq}, 0)", f"ts_rank(r.lexemes, {tq}, 2)"]
            )  # fmt: skip
            ranked = sa.text(f"SELECT sum({ranks}) FROM bench_lex AS r WHERE r.lexemes @@ {tq}")
            for key, stmt, params in (
                ("bm25", bm25, {"q": q}),
                ("match", match, {"lex": lex}),
                ("ts_rank", ranked, {"lex": lex}),
            ):
                conn.execute(stmt, params).scalar()  # warm
                t, _ = _best(_runner(conn, stmt, params), repeats)
                best[key] += t * 1e3
            candidates.append(int(conn.execute(match, {"lex": lex}).scalar_one()))
            conn.rollback()
    n = len(candidates)
    return {
        "bm25_docs": n_docs,
        "bm25_queries": n,
        "bm25_median_candidates": int(np.median(candidates)),
        "bm25_ms": round(best["bm25"] / n, 2),
        "bm25_match_only_ms": round(best["match"] / n, 2),
        "bm25_match_and_ts_rank_ms": round(best["ts_rank"] / n, 2),
        "bm25_executor_share": round(1 - best["ts_rank"] / best["bm25"], 2),
    }


# --- report ----------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    funcs = ["residual_similarity", "residual_levels", "fde_query"]
    ways = [("sql", "SQL"), ("c", "C"), ("numpy", "numpy (1 thread)")]
    x = np.arange(len(funcs))
    for k, (way, label) in enumerate(ways):
        ax1.bar(x + (k - 1) * 0.27, [result[f"{f}_{way}_us"] for f in funcs], 0.27, label=label)
    ax1.set_xticks(x, funcs)
    ax1.set_yscale("log")
    ax1.set_ylabel("µs per call (log)")
    ax1.set_title("per call")
    ax1.legend(fontsize=8)
    searches = ["binary", "multivector"]
    for k, (way, label) in enumerate(
        [("sql", "all SQL"), ("c_maxsim", "MaxSim in C (0.1.0)"), ("c", "all in C (0.2.0)")]
    ):
        vals = [result.get(f"e2e_{s}_{way}_ms", 0.0) for s in searches]
        ax2.bar(np.arange(2) + (k - 1) * 0.27, vals, 0.27, label=label)
    ax2.set_xticks(np.arange(2), ["search_binary (2-bit)", "search_multivector"])
    ax2.set_ylabel("ms per query")
    ax2.set_title("end to end, same results every way")
    ax2.legend(fontsize=8)
    fig.suptitle(f"pgembed_scoring: C vs SQL vs numpy ({result['hardware']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=5000, help="binary collection rows")
    ap.add_argument("--mv-docs", type=int, default=1500, help="multivector collection rows")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--url", default=None, help="server URL (default: the embedded server)")
    ap.add_argument(
        "--bm25-docs", type=int, default=20000, help="lexical rows for the BM25 breakdown (0: skip)"
    )
    ap.add_argument("--png", default=str(ROOT / "docs" / "scoring.png"))
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, docs=300, mv_docs=60, queries=4, repeats=1, bm25_docs=300,
           png=str(SMOKE_OUT / "scoring.png"))  # fmt: skip

    data = make_data(args)
    admin_url = resolve_url(args.url)
    name = f"pgembed_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # generated name, no user input
    engine = sa.create_engine(make_url(admin_url).set(database=name))
    try:
        os.environ[scoring.MODE_ENV] = "sql"  # start from the SQL functions; wired below
        migrate.upgrade(engine)
        if args.url is None:
            home = scoring.embedded_home(engine)
            if home is not None:
                scoring.build(home)
        with engine.connect() as conn:
            if not scoring.available(conn):
                raise SystemExit(
                    f"the server offers no {scoring.EXTENSION} {scoring.EXTENSION_VERSION}"
                )
        coll = load(engine, data)
        timings = per_function(engine, data, coll, args.repeats)
        e2e = end_to_end(engine, data, args.repeats)
        e2e.update(profile(engine, data))
        if args.bm25_docs:
            e2e.update(bm25_breakdown(engine, args.bm25_docs, args.queries, args.repeats))
        with engine.connect() as conn:
            scoring.wire_c(conn)
            kernel = conn.execute(sa.text("SELECT pgembed_scoring.kernel()")).scalar()
            conn.rollback()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    result: dict[str, Any] = {}
    for fn, t in timings.items():
        result[f"{fn}_c_us"] = round(t["c"], 2)
        result[f"{fn}_sql_us"] = round(t["sql"], 2)
        result[f"{fn}_numpy_us"] = round(t["numpy"], 2)
        if "numpy_batched" in t:
            result[f"{fn}_numpy_batched_us"] = round(t["numpy_batched"], 2)
        result[f"{fn}_sql_over_c"] = round(t["sql"] / t["c"], 1)
        result[f"{fn}_c_over_numpy"] = round(t["c"] / t["numpy"], 2)
    result.update(e2e)
    result.update({
        "kernel": kernel, "numpy_threads": 1, "docs": args.docs, "mv_docs": args.mv_docs,
        "queries": args.queries, "dim": DIM, "bits": BITS, "hardware": _hardware(),
    })  # fmt: skip
    plot(result, Path(args.png))
    final(
        args,
        result,
        result["residual_similarity_c_over_numpy"],
        "residual_similarity: C µs per call / numpy µs per call",
    )


if __name__ == "__main__":
    main()
