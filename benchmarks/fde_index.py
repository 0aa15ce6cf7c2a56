"""Benchmark: which index over the MUVERA FDE column keeps recall for the least build time and
space (GitHub issue 11, item 4).

Data: real MiniLM token vectors (all-MiniLM-L6-v2, pgembed's ONNX encoder, CPU, [CLS]/[SEP]
dropped) of passages of gensim's Wikipedia sample (``pgembed.corpus.wikipedia(words=60)``,
then gensim's ``lee_background.cor`` in 3-sentence passages if more are asked for), seeded
shuffle, the first ``--docs`` indexed and the next ``--insert-rows`` held out for the insert
test. Queries: the articles' lead sentences plus first sentences of seeded random passages
(``--queries`` in all). Document and query FDEs: pgembed's default config (41 x 3 x 12 =
3,936 dims). Ground truth: the exact MaxSim top-10 over every indexed document (numpy, on
the halfvec-rounded tokens that pgembed stores). Vectors and ground truth are cached in
``benchmarks/out/``.

Index options, each on its own copy ``(id bigint, fde halfvec(3936))`` of the FDE column,
one index per table (so the planner has one choice), in one embedded pgembed database:

- ``hnsw_halfvec``: HNSW ``halfvec_ip_ops`` on ``fde`` (m 16, ef_construction 64): today's
  default, the baseline;
- ``ivfflat_halfvec_l{L}``: IVFFlat ``halfvec_ip_ops`` on ``fde``, lists L = rows/1000 and
  rows/300, probes swept;
- ``hnsw_bit``: HNSW ``bit_hamming_ops`` on ``binary_quantize(fde)::bit(3936)``;
- ``ivfflat_bit_l{L}``: IVFFlat ``bit_hamming_ops`` on the same expression, probes swept.

Candidate stage (SQL written here, session settings, plain ``ORDER BY ... LIMIT``): the
float options take the top n by inner product; the bit options take the Hamming top n_bit,
then rescore them by the float FDE (``fde <#> q``) to the top n, the form of
``pgembed.search_multivector``'s bit path. Every option's candidates are then reranked by
exact MaxSim, the same for all: recall in the sweep from numpy on the candidate ids; the
end-to-end latency at the chosen settings with ``pgembed.maxsim`` in the same SQL statement.

For each option: build time (best of ``--build-rounds``, interleaved), index size
(``pg_relation_size``), the cheapest setting (n, ef_search / probes, n_bit) that reaches
each ``--targets`` share of the exact top-10 after the MaxSim rerank, with its latency there
(client ms per query over ``--e2e-queries`` queries, every k-th, run round-robin across
the options' settings, best of ``--rounds`` per query, median over the queries; the
candidate stage alone and the whole query with the
rerank; ``recall10_sql`` is the whole query's recall on those queries), and the cost of
inserting ``--insert-rows`` rows, 50 per statement, into the indexed table (incremental
ingest). "Cheapest" minimizes the sweep's candidate time plus n times the measured
``pgembed.maxsim`` cost per document. The same figures at ``defaults``: the settings that
``pgembed.search_multivector``'s default arguments give on each index (candidates 100,
oversample 10, ef_search / probes as pgembed sets them).

Writes ``docs/fde_index.png`` (recall against end-to-end ms per option) and prints one final
JSON line: each option's figures and its ratios to ``hnsw_halfvec`` at equal recall.

    python benchmarks/fde_index.py [--docs 6000] [--queries 200] [--targets 0.9,0.95]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from _smoke import SMOKE_OUT, add_flag, final, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed.vectors import FDEConfig, FDEEncoder, maxsim_matrix

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
DOCS = ROOT.parent / "docs"
K = 10
MAIN = "fdeix_main"  # every row: id, fde, tokens (the held-out rows too)
N_GRID = (10, 20, 30, 50, 75, 100, 150, 200, 300)  # candidates after the float stage
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


# --- data --------------------------------------------------------------------------------


@dataclass
class Data:
    doc_tokens: list[np.ndarray]  # indexed docs, then the held-out rows; halfvec values
    query_tokens: list[np.ndarray]
    scores: np.ndarray  # (queries, n_docs) exact MaxSim over the indexed docs
    n_docs: int

    @cached_property
    def exact(self) -> np.ndarray:
        """(queries, K): the exact MaxSim top-10."""
        return np.argsort(-self.scores, axis=1, kind="stable")[:, :K]

    def rank(self) -> np.ndarray:
        """rank[q, doc]: the doc's place by exact MaxSim for query q (0 = best)."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        out = np.empty(order.shape, dtype=np.int32)
        np.put_along_axis(out, order, np.arange(order.shape[1], dtype=np.int32)[None, :], 1)
        return out


def _split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]


def _pack(sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    return np.concatenate(sets).astype(np.float16), offsets


def _texts(n_total: int, n_queries: int, words: int, seed: int) -> tuple[list[str], list[str]]:
    from pgembed.corpus import lee_background, wikipedia

    corpus = wikipedia(words=words)
    passages = [p.text for p in corpus.passages]
    if len(passages) < n_total:
        for doc in lee_background():
            sents = _FIRST_SENTENCE.split(doc)
            passages += [" ".join(sents[i : i + 3]) for i in range(0, len(sents), 3)]
    if len(passages) < n_total:
        raise SystemExit(
            f"--docs + --insert-rows = {n_total}, but the corpus has {len(passages)} passages "
            f"at --words {words}; use a smaller --words for more, shorter passages"
        )
    random.Random(seed).shuffle(passages)
    passages = passages[:n_total]
    leads = [q.text for q in corpus.queries][:n_queries]
    rng = random.Random(seed + 1)
    picks = rng.sample(range(n_total), n_queries - len(leads))
    firsts = [_FIRST_SENTENCE.split(passages[i], maxsplit=1)[0] for i in picks]
    return passages, leads + firsts


def load(n_docs: int, n_insert: int, n_queries: int, words: int, seed: int) -> Data:
    """Token vectors and ground truth, from the cache when it matches the arguments (a smoke
    run encodes afresh: it tests the encoding too)."""
    cache = OUT / f"fde_index_{n_docs}_{n_insert}_{n_queries}_{words}_{seed}.npz"
    if cache.is_file() and OUT != SMOKE_OUT:
        z = np.load(cache)
        print(f"token vectors and ground truth from {cache.name}")
        return Data(
            _split(z["dt_flat"], z["dt_off"]),
            _split(z["qt_flat"], z["qt_off"]),
            z["scores"],
            n_docs,
        )
    from pgembed import Encoder

    passages, queries = _texts(n_docs + n_insert, n_queries, words, seed)
    enc = Encoder.load("all-minilm-l6-v2", device="cpu")
    t0 = time.perf_counter()
    dtoks = enc.encode_tokens(passages, progress=True)
    qtoks = enc.encode_tokens(queries, "query", progress=False)
    print(f"encoded {len(passages)} passages, {len(queries)} queries in "
          f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
    dflat, doff = _pack(dtoks)
    qflat, qoff = _pack(qtoks)
    half, qhalf = _split(dflat, doff), _split(qflat, qoff)  # as stored: halfvec values
    t0 = time.perf_counter()
    scores = maxsim_matrix(qhalf, half[:n_docs])
    print(f"exact MaxSim over {n_docs} docs: {time.perf_counter() - t0:.0f}s")
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, dt_flat=dflat, dt_off=doff, qt_flat=qflat, qt_off=qoff, scores=scores)
    return Data(half, qhalf, scores, n_docs)


# --- database ----------------------------------------------------------------------------


def _halfvec_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v.astype(np.float16).astype(np.float32)) + "]"


def _tokens_text(t: np.ndarray) -> str:
    return "{" + ",".join(f'"{_halfvec_text(v)}"' for v in t) + "}"


def load_rows(conn: Any, fde: np.ndarray, tokens: list[np.ndarray], dim: int) -> None:
    """One table of every row (id, fde, tokens) by binary COPY; no index."""
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    register_vector(conn)
    conn.execute(f"DROP TABLE IF EXISTS {MAIN}")
    conn.execute(
        f"CREATE TABLE {MAIN} (id bigint PRIMARY KEY, fde halfvec({fde.shape[1]}), "
        f"tokens halfvec({dim})[])"
    )
    with conn.cursor().copy(f"COPY {MAIN} (id, fde, tokens) FROM STDIN (FORMAT binary)") as cp:
        cp.set_types(["bigint", "halfvec", "halfvec[]"])
        for i in tqdm(range(len(fde)), desc="load rows", unit="row", mininterval=1):
            cp.write_row((i, HalfVector(fde[i]), [HalfVector(v) for v in tokens[i]]))
    conn.execute(f"ANALYZE {MAIN}")


@dataclass
class Option:
    name: str
    kind: str  # "halfvec" or "bit"
    method: str  # "hnsw" or "ivfflat"
    lists: int = 0
    table: str = ""
    index: str = ""
    build_s: float = math.inf
    index_bytes: int = 0
    insert_ms_per_row: float = 0.0
    sweep: list[dict[str, Any]] = field(default_factory=list)  # one point per (setting, n)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> point

    def create_sql(self, dim: int) -> str:
        if self.kind == "halfvec":
            col, ops = "fde", "halfvec_ip_ops"
        else:
            col, ops = f"(binary_quantize(fde)::bit({dim}))", "bit_hamming_ops"
        with_ = "m = 16, ef_construction = 64" if self.method == "hnsw" else f"lists = {self.lists}"
        return (f"CREATE INDEX {self.index} ON {self.table} USING {self.method} "
                f"({col} {ops}) WITH ({with_})")  # fmt: skip

    def settings(self) -> list[dict[str, Any]]:
        """The sweep: session settings plus the candidate-stage LIMITs (n_max, n_bit)."""
        out: list[dict[str, Any]] = []
        if self.method == "hnsw" and self.kind == "halfvec":
            # HNSW returns at most ef_search rows; the top n for n <= ef is a prefix.
            for ef in (40, 60, 100, 150, 200, 300, 400):
                out.append({"ef_search": ef, "n_max": min(ef, N_GRID[-1])})
        elif self.method == "ivfflat" and self.kind == "halfvec":
            for p in _probes(self.lists):
                out.append({"probes": p, "n_max": N_GRID[-1]})
        elif self.method == "hnsw":
            # pgembed's rule (pgembed.hnsw_begin): ef_search = n_bit, at most 1000, and an
            # iterative scan beyond that.
            for n_bit in (100, 200, 300, 500, 1000, 2000):
                out.append({"ef_search": min(1000, n_bit), "n_bit": n_bit,
                            "n_max": min(n_bit, N_GRID[-1])})  # fmt: skip
        else:
            for p, n_bit in itertools.product(_probes(self.lists), (300, 1000, 2000)):
                out.append({"probes": p, "n_bit": n_bit, "n_max": min(n_bit, N_GRID[-1])})
        return out


def _probes(lists: int) -> list[int]:
    grid = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, math.ceil(math.sqrt(lists))}
    return sorted(p for p in grid if p <= lists)


# pgembed.search_multivector's defaults: candidates 100, oversample 10 (the bit index takes
# the Hamming top 1000), ef_search max(40, rows asked for) up to 1000, probes ceil(sqrt(lists)).
DEFAULT_N, DEFAULT_OVERSAMPLE = 100, 10


def default_setting(opt: Option) -> dict[str, Any]:
    n_bit = DEFAULT_N * DEFAULT_OVERSAMPLE
    s: dict[str, Any] = {"n_bit": n_bit} if opt.kind == "bit" else {}
    if opt.method == "hnsw":
        s["ef_search"] = min(1000, max(40, n_bit if opt.kind == "bit" else DEFAULT_N))
    else:
        s["probes"] = math.ceil(math.sqrt(opt.lists))
    return s


def gucs(s: dict[str, Any]) -> list[str]:
    out = []
    if "ef_search" in s:
        scan = "relaxed_order" if s.get("n_bit", 0) > 1000 else "off"
        out += [f"SET hnsw.ef_search = {s['ef_search']}", f"SET hnsw.iterative_scan = {scan}"]
    if "probes" in s:
        out += [f"SET ivfflat.probes = {s['probes']}", "SET ivfflat.iterative_scan = off"]
    return out


def candidate_sql(opt: Option, s: dict[str, Any], n: int, dim: int) -> str:
    """Candidate ids, best first, for the query FDE %(q)s (halfvec text)."""
    if opt.kind == "halfvec":
        return f"SELECT id FROM {opt.table} ORDER BY fde <#> %(q)s::halfvec LIMIT {n}"
    bq = f"binary_quantize(%(q)s::halfvec)::bit({dim})"
    return (
        f"WITH c AS MATERIALIZED (SELECT id, fde FROM {opt.table} "
        f"ORDER BY binary_quantize(fde)::bit({dim}) <~> {bq} LIMIT {s['n_bit']}) "
        f"SELECT id FROM c ORDER BY fde <#> %(q)s::halfvec, id LIMIT {n}"
    )


def end_to_end_sql(opt: Option, s: dict[str, Any], n: int, dim: int) -> str:
    """Candidates, then exact MaxSim in SQL (pgembed.maxsim) on the stored tokens: top-10."""
    return (
        f"WITH cand AS MATERIALIZED ({candidate_sql(opt, s, n, dim)}) "
        f"SELECT cand.id, pgembed.maxsim(%(qt)s::halfvec[], m.tokens) AS score "
        f"FROM cand JOIN {MAIN} m ON m.id = cand.id ORDER BY score DESC, cand.id LIMIT {K}"
    )


def timed(conn: Any, sql: str, params: list[dict[str, str]]) -> tuple[list[list[int]], float]:
    """Run ``sql`` once per params; the ids and the median client ms per query."""
    cur = conn.cursor()
    cur.execute(sql, params[0])
    cur.fetchall()  # warm
    got, times = [], []
    for p in params:
        t0 = time.perf_counter()
        cur.execute(sql, p)
        rows = cur.fetchall()
        times.append(time.perf_counter() - t0)
        got.append([r[0] for r in rows])
    return got, 1000 * float(np.median(times))


def index_used(conn: Any, sql: str, params: dict[str, str], index: str) -> bool:
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())
    return index in plan


def recall(got: list[list[int]], rank: np.ndarray) -> float:
    """Share of the exact top-10 in the top-10 of ``got`` reranked by exact MaxSim.

    ``rank[q, doc]`` is the doc's place by exact MaxSim for query q: the rerank keeps every
    candidate of the exact top-10 (rank < K), so the hits are those candidates.
    """
    hits = sum(
        int((rank[q, np.asarray(ids, dtype=np.int64)] < K).sum())
        for q, ids in enumerate(got)
        if ids
    )
    return hits / (K * len(got))


def server_info(conn: Any) -> dict[str, str]:
    names = ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers",
             "work_mem", "server_version")  # fmt: skip
    out = {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}
    out["pgvector"] = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    ).fetchone()[0]
    return out


# --- the run -----------------------------------------------------------------------------


def build(conn: Any, options: list[Option], dim: int, n_docs: int, rounds: int) -> None:
    """A table per option, then its index built ``rounds`` times, rounds interleaved across
    options (so that the neighbours' load hits all alike); the fastest build is kept."""
    for opt in options:
        conn.execute(f"DROP TABLE IF EXISTS {opt.table}")
        conn.execute(f"CREATE TABLE {opt.table} (id bigint PRIMARY KEY, fde halfvec({dim}))")
        conn.execute(f"INSERT INTO {opt.table} SELECT id, fde FROM {MAIN} WHERE id < {n_docs}")
        conn.execute(f"VACUUM ANALYZE {opt.table}")
    with tqdm(total=rounds * len(options), desc="index builds") as bar:
        for _ in range(rounds):
            for opt in options:
                conn.execute(f"DROP INDEX IF EXISTS {opt.index}")
                conn.execute("CHECKPOINT")
                t0 = time.perf_counter()
                conn.execute(opt.create_sql(dim))
                opt.build_s = min(opt.build_s, time.perf_counter() - t0)
                bar.update(1)
    for opt in options:
        opt.index_bytes = conn.execute(f"SELECT pg_relation_size('{opt.index}')").fetchone()[0]
        conn.execute(f"ANALYZE {opt.table}")


def sweep(
    conn: Any, opt: Option, data: Data, qparams: list[dict[str, str]], rank: np.ndarray,
    dim: int, bar: tqdm,
) -> None:  # fmt: skip
    for s in opt.settings():
        for g in gucs(s):
            conn.execute(g)
        sql = candidate_sql(opt, s, s["n_max"], dim)
        if not index_used(conn, sql, qparams[0], opt.index):
            raise RuntimeError(f"{opt.name}: the plan does not use {opt.index}: {sql}")
        got, ms = timed(conn, sql, qparams)
        for n in N_GRID:
            if n > s["n_max"]:
                break
            rec = recall([g[:n] for g in got], rank)
            opt.sweep.append({"setting": {**s, "n": n}, "recall10": rec, "candidate_ms": ms})
        bar.update(1)


def choose(opt: Option, targets: Sequence[float], maxsim_ms: float) -> None:
    """Per target: the setting with the least candidate ms + n * maxsim ms that reaches it.
    Also ``defaults``: pgembed.search_multivector's default arguments on this index."""
    for t in targets:
        ok = [p for p in opt.sweep if p["recall10"] >= t]
        if ok:
            best = min(ok, key=lambda p: p["candidate_ms"] + p["setting"]["n"] * maxsim_ms)
            opt.chosen[f"{t:.2f}"] = dict(best)
    want = default_setting(opt)
    for p in opt.sweep:
        s = p["setting"]
        if s["n"] == DEFAULT_N and all(s.get(k) == v for k, v in want.items()):
            opt.chosen["defaults"] = dict(p)
            break


def end_to_end(
    engine: Any, options: list[Option], data: Data, qparams: list[dict[str, str]], dim: int,
    rounds: int,
) -> None:  # fmt: skip
    """At each chosen setting: the candidate stage alone (at its own n) and the whole query
    (candidates + pgembed.maxsim rerank). One connection per setting, with its session
    settings; the queries run round-robin across the settings (query 1 on every setting,
    then query 2, ...), so a burst of load from the machine's neighbours hits all alike.
    Per setting: each query's best time over the rounds, then the median over queries."""
    todo = [(o, t) for o in options for t in o.chosen]
    exact = data.exact[:: max(1, len(data.exact) // len(qparams))][: len(qparams)]
    conns, stmts = [], []
    for opt, t in todo:
        s = opt.chosen[t]["setting"]
        raw = engine.raw_connection()
        conn = raw.driver_connection
        conn.autocommit = True
        conn.execute("SET enable_seqscan = off")
        for g in gucs(s):
            conn.execute(g)
        conns.append(raw)
        stmts.append((candidate_sql(opt, s, s["n"], dim), end_to_end_sql(opt, s, s["n"], dim)))
    cand_t = np.full((len(todo), len(qparams)), np.inf)
    e2e_t = np.full((len(todo), len(qparams)), np.inf)
    got: list[list[list[int]]] = [[[] for _ in qparams] for _ in todo]
    for c, (cand, e2e) in zip(conns, stmts, strict=True):  # warm: plans, buffers
        cur = c.driver_connection.cursor()
        for sql in (cand, e2e):
            cur.execute(sql, qparams[0])
            cur.fetchall()
    with tqdm(total=rounds * len(qparams), desc="end-to-end timing") as bar:
        for _ in range(rounds):
            for qi, p in enumerate(qparams):
                for ci, (c, (cand, e2e)) in enumerate(zip(conns, stmts, strict=True)):
                    cur = c.driver_connection.cursor()
                    t0 = time.perf_counter()
                    cur.execute(cand, p)
                    cur.fetchall()
                    t1 = time.perf_counter()
                    cur.execute(e2e, p)
                    rows = cur.fetchall()
                    t2 = time.perf_counter()
                    cand_t[ci, qi] = min(cand_t[ci, qi], 1000 * (t1 - t0))
                    e2e_t[ci, qi] = min(e2e_t[ci, qi], 1000 * (t2 - t1))
                    got[ci][qi] = [r[0] for r in rows]
                bar.update(1)
    for ci, (opt, t) in enumerate(todo):
        point = opt.chosen[t]
        hits = [len(set(g) & set(e.tolist())) for g, e in zip(got[ci], exact, strict=True)]
        point["recall10_sql"] = sum(hits) / (K * len(qparams))
        point["cand_ms"] = float(np.median(cand_t[ci]))
        point["e2e_ms"] = float(np.median(e2e_t[ci]))
    for c in conns:
        c.close()


def maxsim_ms_per_doc(conn: Any, data: Data, qparams: list[dict[str, str]]) -> float:
    """Median ms per document of ``pgembed.maxsim`` over 100 stored rows (all of fewer), 50
    queries."""
    rng = np.random.default_rng(0)
    per_doc = []
    rows = min(100, data.n_docs)
    for p in qparams[:50]:
        ids = rng.choice(data.n_docs, rows, replace=False).tolist()
        t0 = time.perf_counter()
        conn.execute(
            f"SELECT sum(pgembed.maxsim(%(qt)s::halfvec[], tokens)) FROM {MAIN} "
            "WHERE id = ANY(%(ids)s)",
            {**p, "ids": ids},
        ).fetchone()
        per_doc.append((time.perf_counter() - t0) * 1000 / rows)
    return float(np.median(per_doc))


def insert_cost(conn: Any, options: list[Option], n_docs: int, n_insert: int) -> None:
    """Rows held out of the build, inserted into each indexed table in statements of 50 rows,
    round-robin across the options (so the neighbours' load hits all alike)."""
    total = dict.fromkeys([o.name for o in options], 0.0)
    chunks = range(n_docs, n_docs + n_insert, 50)
    conn.execute("CHECKPOINT")
    for lo in tqdm(chunks, desc="inserts into indexed tables"):
        hi = min(lo + 50, n_docs + n_insert)
        for opt in options:
            t0 = time.perf_counter()
            conn.execute(
                f"INSERT INTO {opt.table} SELECT id, fde FROM {MAIN} WHERE id >= {lo} AND id < {hi}"
            )
            total[opt.name] += time.perf_counter() - t0
    for opt in options:
        opt.insert_ms_per_row = total[opt.name] * 1000 / n_insert


# --- report ------------------------------------------------------------------------------


def hardware() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(
            line for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )  # fmt: skip
        ram = f"{int(mem.split()[1]) / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        ram = "unknown"
    return {"cpu": model, "cores": os.cpu_count(), "ram": ram}


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (ms, recall) points that no faster point beats on recall."""
    out: list[tuple[float, float]] = []
    for ms, rec in sorted(points):
        if not out or rec > out[-1][1]:
            out.append((ms, rec))
    return out


def plot(options: list[Option], maxsim_ms: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for i, opt in enumerate(options):
        color = f"C{i}"
        label = f"{opt.name} ({opt.index_bytes / 2**20:.1f} MB, build {opt.build_s:.1f} s)"
        best: dict[float, float] = {}  # one point per sweep setting: its largest n
        for p in opt.sweep:
            best[p["candidate_ms"]] = max(best.get(p["candidate_ms"], 0.0), p["recall10"])
        cand = frontier(list(best.items()))
        axes[0].plot(*zip(*cand, strict=True), "o-", ms=3, color=color, label=label)
        est = [(p["candidate_ms"] + p["setting"]["n"] * maxsim_ms, p["recall10"])
               for p in opt.sweep]  # fmt: skip
        axes[1].plot(*zip(*frontier(est), strict=True), "-", color=color, alpha=0.6, label=label)
        for t, p in opt.chosen.items():
            if "e2e_ms" in p:
                axes[1].plot(p["e2e_ms"], p["recall10"], "s" if t == "defaults" else "o",
                             color=color, mfc="none" if t == "defaults" else color)  # fmt: skip
    axes[0].set_xlabel(
        "candidate stage alone, ms per query (each setting at its largest n)", fontsize=9
    )
    axes[1].set_xlabel(
        "whole query, ms (lines: candidates + n x maxsim; dots: measured at the\n"
        "targets; open squares: search_multivector's default arguments)",
        fontsize=9,
    )
    axes[0].set_ylabel("recall of the exact MaxSim top-10 after the MaxSim rerank")
    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(
    options: list[Option], targets: Sequence[float], extra: dict[str, Any]
) -> dict[str, Any]:
    base = options[0]
    out: dict[str, Any] = {**extra, "baseline": base.name, "options": {}, "ratios": {}}
    for opt in options:
        at = {}
        for t, p in opt.chosen.items():
            at[t] = {"setting": p["setting"], "recall10": round(p["recall10"], 4),
                     "recall10_sql": round(p.get("recall10_sql", float("nan")), 4),
                     "sweep_candidate_ms": round(p["candidate_ms"], 2),
                     "candidate_ms": round(p.get("cand_ms", float("nan")), 2),
                     "e2e_ms": round(p.get("e2e_ms", float("nan")), 2)}  # fmt: skip
        out["options"][opt.name] = {
            "build_s": round(opt.build_s, 2),
            "index_bytes": opt.index_bytes,
            "insert_ms_per_row": round(opt.insert_ms_per_row, 3),
            "max_recall10": round(max(p["recall10"] for p in opt.sweep), 4),
            "at": at,
        }
        ratio: dict[str, Any] = {
            "build_vs_baseline": round(opt.build_s / base.build_s, 3),
            "size_vs_baseline": round(opt.index_bytes / base.index_bytes, 4),
            "insert_vs_baseline": round(opt.insert_ms_per_row / base.insert_ms_per_row, 3),
        }
        for t in [f"{x:.2f}" for x in targets] + ["defaults"]:
            if t in opt.chosen and t in base.chosen:
                ratio[f"latency_vs_baseline@{t}"] = round(
                    opt.chosen[t]["e2e_ms"] / base.chosen[t]["e2e_ms"], 3
                )
            else:
                ratio[f"latency_vs_baseline@{t}"] = None  # the target is out of reach
        if "defaults" in opt.chosen and "defaults" in base.chosen:
            ratio["recall_minus_baseline@defaults"] = round(
                opt.chosen["defaults"]["recall10"] - base.chosen["defaults"]["recall10"], 4
            )
        out["ratios"][opt.name] = ratio
    return out


def print_table(options: list[Option]) -> None:
    print(f"\n{'option':22s} {'build s':>8s} {'index MB':>9s} {'ins ms/row':>10s}  "
          f"{'target':>6s} {'setting':38s} {'recall':>6s} {'sql rec':>7s} {'cand ms':>7s} "
          f"{'e2e ms':>7s}")  # fmt: skip
    for opt in options:
        head = (f"{opt.name:22s} {opt.build_s:8.2f} {opt.index_bytes / 2**20:9.2f} "
                f"{opt.insert_ms_per_row:10.3f}")  # fmt: skip
        if not opt.chosen:
            print(f"{head}  (no target reached; max recall "
                  f"{max(p['recall10'] for p in opt.sweep):.3f})")  # fmt: skip
        for t, p in opt.chosen.items():
            s = {k: v for k, v in p["setting"].items() if k != "n_max"}
            nan = float("nan")
            print(f"{head}  {t:>6s} {json.dumps(s):38s} {p['recall10']:6.3f} "
                  f"{p.get('recall10_sql', nan):7.3f} {p.get('cand_ms', nan):7.2f} "
                  f"{p.get('e2e_ms', nan):7.2f}")  # fmt: skip
            head = " " * len(head)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=6000, help="indexed passages")
    ap.add_argument("--insert-rows", type=int, default=300, help="held out, inserted at the end")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--words", type=int, default=60, help="words per Wikipedia passage")
    ap.add_argument("--targets", default="0.9,0.95")
    ap.add_argument("--build-rounds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="end-to-end timing rounds")
    ap.add_argument("--e2e-queries", type=int, default=100, help="queries timed end to end")
    ap.add_argument("--seed", type=int, default=0)
    add_flag(ap)
    args = ap.parse_args(argv)
    shrink(args, docs=60, insert_rows=10, queries=8, build_rounds=1, rounds=1, e2e_queries=4)
    if args.smoke:
        global OUT, DOCS
        OUT = DOCS = SMOKE_OUT
    targets = [float(t) for t in args.targets.split(",")]
    t_start = time.perf_counter()

    data = load(args.docs, args.insert_rows, args.queries, args.words, args.seed)
    enc = FDEEncoder(FDEConfig(dimension=data.doc_tokens[0].shape[1]))
    dim = enc.config.output_dim
    dfde = enc.encode_document(data.doc_tokens)
    qfde = enc.encode_query(data.query_tokens)
    rank = data.rank()
    qparams = [{"q": _halfvec_text(f), "qt": _tokens_text(t)}
               for f, t in zip(qfde, data.query_tokens, strict=True)]  # fmt: skip
    mean_tokens = float(np.mean([len(t) for t in data.doc_tokens]))

    from pgembed import db, migrate

    engine = db.create_engine(pool_size=32)  # a connection per timed setting
    migrate.upgrade(engine)
    raw = engine.raw_connection()
    conn = raw.driver_connection
    conn.autocommit = True
    load_rows(conn, dfde, data.doc_tokens, data.doc_tokens[0].shape[1])
    info = server_info(conn)

    n = args.docs
    lists = sorted({max(1, round(n / 1000)), max(1, round(n / 300))})
    options = [Option("hnsw_halfvec", "halfvec", "hnsw")]
    options += [Option(f"ivfflat_halfvec_l{L}", "halfvec", "ivfflat", L) for L in lists]
    options += [Option("hnsw_bit", "bit", "hnsw")]
    options += [Option(f"ivfflat_bit_l{L}", "bit", "ivfflat", L) for L in lists]
    for opt in options:
        opt.table, opt.index = f"fdeix_{opt.name}", f"fdeix_{opt.name}_idx"

    build(conn, options, dim, n, args.build_rounds)
    conn.execute("SET enable_seqscan = off")  # the planner's choice is not under test
    with tqdm(total=sum(len(o.settings()) for o in options), desc="recall sweep") as bar:
        for opt in options:
            sweep(conn, opt, data, qparams, rank, dim, bar)
    maxsim_ms = maxsim_ms_per_doc(conn, data, qparams)
    for opt in options:
        choose(opt, targets, maxsim_ms)
    stride = max(1, len(qparams) // args.e2e_queries)  # leads and passage sentences alike
    end_to_end(engine, options, data, qparams[::stride][: args.e2e_queries], dim, args.rounds)
    insert_cost(conn, options, n, args.insert_rows)
    for opt in options:
        conn.execute(f"DROP TABLE IF EXISTS {opt.table}")
    conn.execute(f"DROP TABLE IF EXISTS {MAIN}")
    raw.close()

    hw = hardware()
    extra = {
        "hardware": f"{hw['cpu']}, {hw['cores']} cores, {hw['ram']}",
        "docs": n,
        "mean_doc_tokens": round(mean_tokens, 1),
        "queries": len(qfde),
        "fde_dim": dim,
        "maxsim_ms_per_doc": round(maxsim_ms, 4),
        "server": info,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print_table(options)
    print(f"\npgembed.maxsim: {maxsim_ms:.3f} ms per document; server {info}")
    title = (f"FDE index options, {n} MiniLM passages (mean {mean_tokens:.0f} tokens), "
             f"{len(qfde)} queries\n{extra['hardware']}")  # fmt: skip
    plot(options, maxsim_ms, title, DOCS / "fde_index.png")
    (OUT / "fde_index.json").write_text(
        json.dumps({"extra": extra, "options": [o.__dict__ for o in options]}, indent=1)
    )
    print(f"plot: {DOCS / 'fde_index.png'}")
    out = summary(options, targets, extra)
    final(
        args,
        out,
        out["ratios"]["hnsw_bit"]["size_vs_baseline"],
        "hnsw_bit index_bytes / hnsw_halfvec index_bytes (pgembed's / the baseline's)",
    )


if __name__ == "__main__":
    main()
