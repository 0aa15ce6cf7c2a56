"""Benchmark: BM25 and hybrid retrieval in PostgreSQL against each dense strategy.

Two retrieval sets, both from text that ships offline in gensim's wheel, each with known
relevant documents:
- ``wikipedia``: the quickstart's set (pgembed.corpus.wikipedia): passages of about 100
  words of the Wikipedia sample; each article's held-out lead sentence is the query, its
  article's passages the relevant documents (a sentence-long query, several relevant
  passages, articles on unrelated topics).
- ``lee``: the 300 news stories of ``lee_background.cor``; each story's second sentence is
  held out as the query, and the story without it is the one relevant document (a
  mid-story sentence, one relevant document among stories on overlapping news topics).

Per set, one collection with every kind (single, matryoshka, binary with 2-bit codes, fde,
multivector, lexical), the real all-MiniLM-L6-v2. Reports R@1, R@10 and MRR (of the first
relevant document) and the median latency of bm25, each dense strategy (knn, funnel,
binary, multivector), and hybrid (rrf and convex, each with every dense side; the table
shows the best dense side).

BM25 parity: pgembed.search_bm25's scores over every matching row against bm25s
(method "lucene") fed the lexemes PostgreSQL produced (each lexeme repeated once per
position), so that only the scoring is compared: max relative error and the share of
queries whose top-10 agree (ties within 1e-6 aside).

Latency: on ``--synthetic`` (default 100,000) documents of 20-80 words drawn by frequency
from the Wikipedia sample's vocabulary, pgembed.search_bm25's top-10 against the manual
pattern (``ts_rank_cd`` ORDER BY over a GIN ``@@`` match on the OR of the query's
lexemes), both given the query text; the EXPLAIN ANALYZE of the statements that
search_bm25 runs (auto_explain, nested statements) shows what dominates.

Writes ``docs/hybrid.png`` (R@10 against median latency) and ``benchmarks/out/hybrid.json``
and prints one final JSON line.

    PGEMBED_HOME=$(mktemp -d /tmp/pgembed-hybrid-XXXX) python benchmarks/hybrid.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from _smoke import add_flag, final, out_dir, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import Collection, Encoder, corpus, db, migrate, sqlfuncs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
K = 10
DENSE = ("knn", "funnel", "binary", "multivector")
FUSIONS = ("rrf", "convex")
KINDS = ("single", "matryoshka", "binary", "fde", "multivector", "lexical")


@dataclass
class RetrievalSet:
    name: str
    docs: list[str]
    doc_group: list[int]
    queries: list[str]
    query_group: list[int]


def wikipedia_set(max_articles: int | None) -> RetrievalSet:
    data = corpus.wikipedia(max_articles=max_articles)
    return RetrievalSet(
        "wikipedia",
        [p.text for p in data.passages],
        [p.article for p in data.passages],
        [q.text for q in data.queries],
        [q.article for q in data.queries],
    )


_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def lee_set(limit: int | None = None) -> RetrievalSet:
    docs: list[str] = []
    queries: list[str] = []
    groups: list[int] = []
    qgroups: list[int] = []
    for story in corpus.lee_background()[:limit]:
        sents = _SENT.split(story)
        if len(sents) < 3 or len(sents[1].split()) < 6:
            continue
        g = len(queries)
        queries.append(sents[1])
        qgroups.append(g)
        docs.append(" ".join([sents[0], *sents[2:]]))
        groups.append(g)
    return RetrievalSet("lee", docs, groups, queries, qgroups)


def quality(found: list[list[int]], rs: RetrievalSet) -> dict[str, float]:
    r1 = r10 = rr = 0.0
    for ids, target in zip(found, rs.query_group, strict=True):
        groups = [rs.doc_group[i] for i in ids[:K]]
        if groups and groups[0] == target:
            r1 += 1
        if target in groups:
            r10 += 1
            rr += 1 / (groups.index(target) + 1)
    n = len(found)
    return {"r1": r1 / n, "r10": r10 / n, "mrr": rr / n}


def _run(conn: sa.Connection, stmts: list[Any], desc: str) -> tuple[list[list[int]], float]:
    found, lat = [], []
    for stmt in tqdm(stmts, desc=desc, leave=False):
        t0 = time.perf_counter()
        rows = conn.execute(stmt).all()
        lat.append((time.perf_counter() - t0) * 1000)
        found.append([int(r[0]) for r in rows])
    return found, float(np.median(lat))


def _reuse(engine: sa.Engine, enc: Encoder, name: str, rows: int, reuse: bool) -> Any:
    """With ``--reuse``, a collection of the same name and row count from an earlier run;
    otherwise (or when it differs) it is dropped and None returned."""
    import contextlib

    from pgembed.errors import UnknownCollectionError

    with contextlib.suppress(UnknownCollectionError):
        old = Collection.open(engine, name, enc)
        with engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(old.table())).scalar_one()
        if reuse and n == rows:
            return old
        old.drop(force=True)
    return None


def evaluate(engine: sa.Engine, enc: Encoder, rs: RetrievalSet, reuse: bool) -> dict[str, Any]:
    name = f"hybrid bench {rs.name}"
    coll = _reuse(engine, enc, name, len(rs.docs), reuse)
    if coll is None:
        coll = Collection(engine, name, enc, kinds=KINDS, binary_bits=2).create()
        coll.add(rs.docs, range(len(rs.docs)), progress=True)
    with engine.connect() as conn:
        conn.execute(sa.text(f'ANALYZE "{coll.spec.table_name}"'))
    qvecs, qtoks = enc.encode_both(rs.queries, "query", progress=False)
    out: dict[str, Any] = {"docs": len(rs.docs), "queries": len(rs.queries)}
    runs: dict[str, Any] = {}
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")

        def dense_stmt(s: str, i: int) -> Any:
            fn = getattr(sqlfuncs, f"search_{s}")
            return sa.select(fn(name, qtoks[i] if s == "multivector" else qvecs[i], K))

        plans: dict[str, list[Any]] = {
            "bm25": [sa.select(sqlfuncs.search_bm25(name, q, K)) for q in rs.queries]
        }
        for s in DENSE:
            plans[s] = [dense_stmt(s, i) for i in range(len(rs.queries))]
        for s in DENSE:
            for f in FUSIONS:
                plans[f"hybrid_{f}_{s}"] = [
                    sa.select(sqlfuncs.search_hybrid(
                        name, q, qtoks[i] if s == "multivector" else qvecs[i], K,
                        dense=s, fusion=f))
                    for i, q in enumerate(rs.queries)
                ]  # fmt: skip
        for key, stmts in plans.items():
            _run(conn, stmts[:5], f"{rs.name} warm {key}")
            found, p50 = _run(conn, stmts, f"{rs.name} {key}")
            runs[key] = {**quality(found, rs), "p50_ms": p50}
    best_dense = max(DENSE, key=lambda s: (runs[s]["r10"], runs[s]["mrr"]))
    out["runs"] = runs
    out["best_dense"] = best_dense
    for f in FUSIONS:
        runs[f"hybrid_{f}"] = runs[f"hybrid_{f}_{best_dense}"]
    out["parity"] = parity(engine, coll, rs)
    return out


def _lexemes(conn: sa.Connection, table: str) -> dict[int, list[str]]:
    rows = conn.execute(sa.text(
        f'SELECT r.id, u.lexeme, cardinality(u.positions) FROM "{table}" r '
        "LEFT JOIN LATERAL unnest(r.lexemes) u ON true ORDER BY r.id, u.lexeme")
    ).all()  # fmt: skip
    out: dict[int, list[str]] = {}
    for i, lex, tf in rows:
        out.setdefault(int(i), [])
        if lex is not None:
            out[int(i)] += [str(lex)] * int(tf)
    return out


def parity(engine: sa.Engine, coll: Collection, rs: RetrievalSet) -> dict[str, Any]:
    """pgembed.search_bm25 against bm25s given PostgreSQL's lexemes."""
    import bm25s  # type: ignore[import-untyped]

    with engine.connect() as conn:
        docs = _lexemes(conn, coll.spec.table_name)
        ids = sorted(docs)
        vocab = sorted({t for toks in docs.values() for t in toks})
        index = {t: j for j, t in enumerate(vocab)}
        retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        retriever.index(
            bm25s.tokenization.Tokenized(ids=[[index[t] for t in docs[i]] for i in ids],
                                         vocab=dict(index)),
            show_progress=False,
        )  # fmt: skip
        worst, agree, compared = 0.0, 0, 0
        for q in tqdm(rs.queries, desc=f"{rs.name} parity", leave=False):
            qlex = conn.execute(sa.text(
                "SELECT coalesce(array_agg(lexeme), '{}') FROM unnest(to_tsvector('english', :q))"),
                {"q": q}).scalar_one()  # fmt: skip
            qlex = [t for t in qlex if t in index]
            if not qlex:
                continue
            got = conn.execute(sa.select(sqlfuncs.search_bm25(coll.spec.name, q, len(ids)))).all()
            want_all = retriever.get_scores(qlex)
            want = {ids[j]: float(s) for j, s in enumerate(want_all) if s > 0}
            gotd = {int(i): float(s) for i, s in got}
            if set(gotd) != set(want):
                worst = math.inf
            for i, s in gotd.items():
                w = want.get(i, 0.0)
                worst = max(worst, abs(s - w) / max(abs(w), 1e-300))
            top = sorted(want.items(), key=lambda x: (-x[1], x[0]))[:K]
            same = all(
                int(i) == j or math.isclose(s, w, rel_tol=1e-6)
                for (i, s), (j, w) in zip(got[:K], top, strict=True)
            ) and len(got[:K]) == len(top)
            agree += same
            compared += 1
    return {"max_rel_error": worst, "top10_agreement": agree / max(compared, 1),
            "queries": compared}  # fmt: skip


# --- latency on synthetic documents ------------------------------------------------------


def synthetic_texts(n: int, vocab_from: list[str], seed: int = 0) -> list[str]:
    words: dict[str, int] = {}
    for t in vocab_from:
        for w in re.findall(r"[a-z]+", t.lower()):
            words[w] = words.get(w, 0) + 1
    vocab = np.array(sorted(words))
    p = np.array([words[w] for w in vocab], dtype=np.float64)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 81, n)
    flat = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    out, at = [], 0
    for ln in lengths:
        out.append(" ".join(vocab[flat[at : at + ln]]))
        at += ln
    return out


MANUAL = (
    "WITH q AS (SELECT pg_catalog.string_agg(array_to_tsvector(ARRAY[u.lexeme])::text, ' | ')"
    "::tsquery AS tq FROM unnest(to_tsvector('english', :q)) u) "
    'SELECT r.id, ts_rank_cd(r.lexemes, (SELECT tq FROM q)) AS s FROM "{t}" r '
    "WHERE r.lexemes @@ (SELECT tq FROM q) ORDER BY s DESC LIMIT 10"
)


def latency(
    engine: sa.Engine, enc: Encoder, n: int, nq: int, vocab_from: list[str], reuse: bool
) -> dict[str, Any]:
    name = "hybrid bench latency"
    texts = synthetic_texts(n, vocab_from)
    coll = _reuse(engine, enc, name, n, reuse)
    insert_s = None
    if coll is None:
        coll = Collection(engine, name, enc, kinds=("single", "lexical")).create()
        t = coll.table()
        batch = 5000
        t0 = time.perf_counter()
        for at in tqdm(range(0, n, batch), desc="synthetic insert", leave=False):
            with engine.begin() as conn:
                rows = [{"id": at + j, "content": s} for j, s in enumerate(texts[at : at + batch])]
                conn.execute(t.insert(), rows)
        insert_s = time.perf_counter() - t0
    t = coll.table()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text(f'VACUUM ANALYZE "{t.name}"'))
    rng = np.random.default_rng(1)
    queries = []
    for i in rng.choice(n, nq, replace=False):
        w = texts[i].split()
        start = int(rng.integers(0, len(w) - 8))
        queries.append(" ".join(w[start : start + int(rng.integers(4, 9))]))
    manual = sa.text(MANUAL.format(t=t.name))
    ours: list[float] = []
    theirs: list[float] = []
    candidates: list[int] = []
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        for q in tqdm(queries, desc="bm25 vs ts_rank_cd", leave=False):
            a, b = [], []
            for _ in range(4):  # the first round warms the cache and is dropped
                t0 = time.perf_counter()
                conn.execute(sa.select(sqlfuncs.search_bm25(name, q, K))).all()
                a.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                conn.execute(manual, {"q": q}).all()
                b.append((time.perf_counter() - t0) * 1000)
            ours.append(float(np.median(a[1:])))
            theirs.append(float(np.median(b[1:])))
            candidates.append(int(conn.execute(sa.text(
                "WITH q AS (SELECT string_agg(array_to_tsvector(ARRAY[u.lexeme])::text, ' | ')"
                "::tsquery AS tq FROM unnest(to_tsvector('english', :q)) u) "
                f'SELECT count(*) FROM "{t.name}" r WHERE r.lexemes @@ (SELECT tq FROM q)'),
                {"q": q}).scalar_one()))  # fmt: skip
        plans = explain(conn, name, t.name, queries[int(np.argmax(candidates))])
    bm25_ms, ts_ms = float(np.median(ours)), float(np.median(theirs))
    return {
        "docs": n, "queries": nq, "insert_s": insert_s,
        "bm25_ms": bm25_ms, "ts_rank_cd_ms": ts_ms, "ratio": bm25_ms / ts_ms,
        "bm25_mean_ms": float(np.mean(ours)), "ts_rank_cd_mean_ms": float(np.mean(theirs)),
        "candidates_median": float(np.median(candidates)),
        "candidates_max": int(max(candidates)),
        "explain": plans,
    }  # fmt: skip


def explain(conn: sa.Connection, coll: str, table: str, q: str) -> dict[str, Any]:
    """EXPLAIN ANALYZE of search_bm25's statements (auto_explain) and of the manual one."""
    notices: list[str] = []
    raw: Any = conn.connection.driver_connection
    raw.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    out: dict[str, Any] = {"query": q}
    try:
        conn.execute(sa.text("LOAD 'auto_explain'"))
        for k, v in [("log_min_duration", "0"), ("log_analyze", "on"),
                     ("log_nested_statements", "on"), ("log_level", "notice"),
                     ("log_timing", "on")]:  # fmt: skip
            conn.execute(sa.text(f"SET auto_explain.{k} = '{v}'"))
        conn.execute(sa.select(sqlfuncs.search_bm25(coll, q, K))).all()
        conn.execute(sa.text("SET auto_explain.log_min_duration = -1"))
        out["bm25_nested"] = [n for n in notices if "duration" in n]
    except sa.exc.DBAPIError as exc:
        out["bm25_nested"] = [f"auto_explain unavailable: {exc.orig}"]
    manual = (
        conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + MANUAL.format(t=table)), {"q": q})
        .scalars()
        .all()
    )
    out["ts_rank_cd_plan"] = list(manual)
    return out


# --- report ------------------------------------------------------------------------------


def plot(sets: dict[str, Any], lat: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["bm25", *DENSE, "hybrid_rrf", "hybrid_convex"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.4), squeeze=False)
    markers = dict(zip(shown, ["s", "o", "D", "^", "v", "P", "X"], strict=True))
    for ax, (name, res) in zip(axes[0], sets.items(), strict=True):
        for s in shown:
            r = res["runs"][s]
            label = s if not s.startswith("hybrid") else f"{s} + {res['best_dense']}"
            ax.scatter(r["p50_ms"], r["r10"], s=70, marker=markers[s], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("median latency per query (ms)")
        ax.set_ylabel("R@10 (known relevant document)")
        ax.set_title(f"{name}: {res['docs']} docs, {res['queries']} queries")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    title = "pgembed BM25, dense and hybrid retrieval (all-MiniLM-L6-v2)"
    if lat:
        title += (f"; BM25 top-10 on {lat['docs']:,} docs {lat['bm25_ms']:.1f} ms vs "
                  f"ts_rank_cd {lat['ts_rank_cd_ms']:.1f} ms")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(sets: dict[str, Any]) -> str:
    lines = []
    for name, res in sets.items():
        lines.append(f"\n{name} ({res['docs']} docs, {res['queries']} queries; best dense "
                     f"{res['best_dense']})")  # fmt: skip
        lines.append(f"{'strategy':<28} {'R@1':>6} {'R@10':>6} {'MRR':>6} {'p50 ms':>8}")
        for key, r in res["runs"].items():
            lines.append(f"{key:<28} {r['r1']:>6.3f} {r['r10']:>6.3f} {r['mrr']:>6.3f} "
                         f"{r['p50_ms']:>8.2f}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-articles", type=int, default=None)
    ap.add_argument("--synthetic", type=int, default=100_000)
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--skip-sets", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep the collections of an earlier run in this PGEMBED_HOME",
    )
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, max_articles=3, synthetic=400, latency_queries=5)
    out = out_dir(args, OUT)

    engine = db.create_engine()
    migrate.upgrade(engine)
    enc = Encoder.load("all-minilm-l6-v2", device="cpu")
    wiki = wikipedia_set(args.max_articles)
    sets: dict[str, Any] = {}
    if not args.skip_sets:
        for rs in (wiki, lee_set(30 if args.smoke else None)):
            sets[rs.name] = evaluate(engine, enc, rs, args.reuse)
            print(table({rs.name: sets[rs.name]}), flush=True)
    lat = None
    if args.synthetic:
        lat = latency(engine, enc, args.synthetic, args.latency_queries, wiki.docs, args.reuse)
    targets: dict[str, Any] = {}
    for name, res in sets.items():
        runs = res["runs"]
        base = max(runs["bm25"]["r10"], runs[res["best_dense"]]["r10"])
        best_h = max(runs["hybrid_rrf"]["r10"], runs["hybrid_convex"]["r10"])
        targets[name] = {"hybrid_r10": best_h, "needed": base + 0.03,
                         "met": best_h >= base + 0.03 - 1e-12}  # fmt: skip
    if lat is not None:
        targets["latency"] = {"ratio": lat["ratio"], "needed": 1.5, "met": lat["ratio"] <= 1.5}
    if sets:
        plot(sets, lat, out / "hybrid.png" if args.smoke else ROOT / "docs" / "hybrid.png")
    load = os.getloadavg()
    result = {
        "hardware": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "sets": sets, "latency": lat, "targets": targets,
    }  # fmt: skip
    (out / "hybrid.json").write_text(json.dumps(result, indent=1, default=str))
    summary = {
        "sets": {n: {k: {m: round(v, 3) for m, v in r.items()}
                     for k, r in res["runs"].items()
                     if k in ("bm25", *DENSE, "hybrid_rrf", "hybrid_convex")}
                 for n, res in sets.items()},
        "best_dense": {n: res["best_dense"] for n, res in sets.items()},
        "parity": {n: res["parity"] for n, res in sets.items()},
        "latency": None if lat is None else {k: lat[k] for k in (
            "docs", "bm25_ms", "ts_rank_cd_ms", "ratio", "candidates_median")},
        "targets": targets, "loadavg": result["loadavg"],
    }  # fmt: skip
    final(
        args,
        summary,
        ratio(lat["bm25_ms"], lat["ts_rank_cd_ms"]) if lat else None,
        "latency: bm25_ms (pgembed.search_bm25) / ts_rank_cd_ms (the manual pattern)",
    )


if __name__ == "__main__":
    main()
