"""Benchmark: pgvector HNSW recall against exact search, and how insertion order affects it.

After "The Impacts of Data, Ordering, and Intrinsic Dimensionality on Recall in HNSW":
recall@10 of pgvector's HNSW index (pgembed's defaults: ``halfvec(384)``, cosine, m=16,
ef_construction=64) against exact cosine search on the same halfvec values, at
``hnsw.ef_search`` 20, 40 (pgvector's default) and 80, for four insertion orders:
``random`` (a seeded permutation), ``lid-asc`` and ``lid-desc`` (ordered by local intrinsic
dimensionality, the Levina-Bickel MLE from each point's k nearest neighbours), and as a
control ``grouped``: similar rows together (the corpus order, article by article, for
MiniLM; cluster by cluster for the synthetic set), which is how documents usually arrive.

Insertion order is the order in which rows reach the index:
- ``build``: rows are COPYed into a fresh table in that order, then ``CREATE INDEX ...
  USING hnsw`` runs with ``max_parallel_maintenance_workers = 0``, so the build scans the
  heap, and inserts into the graph, in exactly that order;
- ``insert``: the index is created on the empty table and rows are COPYed in that order
  (batches of 1,000), each insert going through the on-disk graph.

Data:
- ``minilm``: the 4,443 MiniLM passage vectors of ``pgembed.corpus.wikipedia()`` with the
  lead-sentence + first-sentence queries (read from ``benchmarks/out/storage_vectors.npz``,
  written by ``benchmarks/storage.py``; if it is missing, encoded here with the 100 lead
  sentences only as queries);
- ``synthetic``: ``--synthetic-rows`` seeded unit vectors of 384 dims in clusters whose
  intrinsic dimensionality ranges from 2 to 96 (plus small isotropic noise), and 500
  held-out queries from the same clusters.

Each (data, mode, order) is built ``--minilm-repeats`` (MiniLM) or ``--repeats``
(synthetic) times: a new permutation for ``random``; for the other orders the order is
fixed and the spread comes from pgvector's random level assignment. Prints mean
[min..max] recall, the difference of each order's ef 40 mean to ``random`` with Welch's t
statistic, writes ``benchmarks/out/hnsw_order.png`` and ends with one JSON line.
Default run (synthetic ``build`` only): about 7 minutes on 2 shared cores; add
``--synthetic-modes build,insert`` for the on-disk inserts too (about 12 minutes).

    python benchmarks/hnsw_order.py [--synthetic-rows 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from _smoke import SMOKE_OUT, add_flag, final, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import db, migrate, query
from pgembed.storage import ingest
from pgembed.storage.schema import CollectionSpec, table

OUT = Path(__file__).resolve().parent / "out"
K = 10
EF = (20, 40, 80)
ORDERS = ("random", "grouped", "lid-asc", "lid-desc")


# --- LID ---------------------------------------------------------------------------------


def knn_distances(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Euclidean distances to the k nearest other points, ascending: (n, k)."""
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty((len(x), k), dtype=np.float64)
    for s in range(0, len(x), block):
        d2 = sq[s : s + block, None] + sq[None, :] - 2.0 * (x[s : s + block] @ x.T)
        rows = np.arange(min(block, len(x) - s))
        d2[rows, s + rows] = np.inf  # not its own neighbour
        part = np.partition(d2, k - 1, axis=1)[:, :k]
        out[s : s + block] = np.sqrt(np.maximum(np.sort(part, axis=1), 0.0))
    return out


def lid_mle(x: np.ndarray, k: int = 20) -> np.ndarray:
    """Levina-Bickel MLE of local intrinsic dimensionality: (k-1) / sum_j log(T_k / T_j)."""
    dist = np.maximum(knn_distances(np.asarray(x, dtype=np.float32), k), 1e-12)
    logs = np.log(dist[:, -1:] / dist[:, :-1]).sum(axis=1)
    return np.asarray((k - 1) / np.maximum(logs, 1e-12))


# --- data --------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def minilm(cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Passage vectors, query vectors, and the corpus order (article by article)."""
    if cache.is_file():
        z = np.load(cache)
        return z["docs"], z["queries"], np.arange(len(z["docs"]))
    from pgembed import Encoder
    from pgembed.corpus import wikipedia

    corpus = wikipedia()
    enc = Encoder.load("all-minilm-l6-v2", device="cpu")
    docs = enc.encode([p.text for p in corpus.passages], progress=True)
    return docs, enc.encode([q.text for q in corpus.queries], "query"), np.arange(len(docs))


def synthetic(
    n: int, nq: int = 500, dim: int = 384, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clusters on random subspaces of dimension 2..96, noise 0.02, all unit-normalized.

    Returns the rows (in random cluster order), held-out queries, and the cluster-by-cluster
    order of the rows.
    """
    rng = np.random.default_rng(seed)
    dims = (2, 4, 8, 16, 32, 64, 96)
    n_clusters = 56
    centers = _unit(rng.standard_normal((n_clusters, dim)))
    cdim = np.array([dims[i % len(dims)] for i in range(n_clusters)])
    pick = rng.integers(0, n_clusters, n + nq)
    x = np.empty((n + nq, dim), dtype=np.float32)
    for c in range(n_clusters):
        idx = np.flatnonzero(pick == c)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, cdim[c])))
        z = rng.standard_normal((len(idx), cdim[c])) * (0.5 / np.sqrt(cdim[c]))
        x[idx] = (
            centers[c] + z @ basis.T + 0.02 / np.sqrt(dim) * rng.standard_normal((len(idx), dim))
        )
    x = _unit(x)
    return x[:n], x[n:], np.argsort(pick[:n], kind="stable")


# --- builds and searches -----------------------------------------------------------------


def build(engine: sa.Engine, x: np.ndarray, order: np.ndarray, mode: str) -> tuple[Any, float]:
    """Fresh table bench_hnsw_order, rows reaching the index in ``order``; build seconds."""
    spec = CollectionSpec("bench_hnsw_order", x.shape[1], "bench", text_column=None)
    md = sa.MetaData()
    t = table(spec, md)
    indexes = list(t.indexes)
    t.indexes.clear()
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
    t0 = time.perf_counter()

    def create_index() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
            conn.execute(sa.text("SET max_parallel_maintenance_workers = 0"))
            for ix in indexes:
                ix.create(conn)

    if mode == "insert":
        create_index()
    for s in range(0, len(order), 1000):
        rows = order[s : s + 1000]
        with engine.begin() as conn:
            ingest.write(conn, spec, ingest.Rows(ids=rows.astype(np.int64), embedding=x[rows]))
    if mode == "build":
        create_index()
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE bench_hnsw_order"))
    return t, time.perf_counter() - t0


def search(engine: sa.Engine, t: Any, queries: np.ndarray, ef: int) -> np.ndarray:
    got = np.full((len(queries), K), -1, dtype=np.int64)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :v, false)"), {"v": str(ef)})
        for i, q in enumerate(queries):
            stmt = query.knn(t.c.embedding, q, k=K)
            ids = [r[0] for r in conn.execute(stmt.with_only_columns(t.c.id)).all()]
            got[i, : len(ids)] = ids
    return got


def uses_index(engine: sa.Engine, q: np.ndarray) -> bool:
    from pgvector.sqlalchemy import HALFVEC

    stmt = sa.text(
        "EXPLAIN SELECT id FROM bench_hnsw_order ORDER BY embedding <=> :q LIMIT 10"
    ).bindparams(sa.bindparam("q", q, type_=HALFVEC(len(q))))
    with engine.connect() as conn:
        plan = conn.execute(stmt).all()
    return any("hnsw" in str(r[0]) for r in plan)


def recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(g) & set(e)) / K for g, e in zip(got.tolist(), exact.tolist(), strict=True)]
        )
    )


def run_dataset(
    engine: sa.Engine,
    name: str,
    x: np.ndarray,
    qs: np.ndarray,
    grouped: np.ndarray,
    modes: tuple[str, ...],
    repeats: int,
    lid_k: int,
    bar: tqdm,
) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    lid = lid_mle(x, lid_k)
    print(
        f"{name}: LID (k={lid_k}) median {np.median(lid):.1f}, p10 {np.percentile(lid, 10):.1f}, "
        f"p90 {np.percentile(lid, 90):.1f} ({time.perf_counter() - t0:.0f}s)"
    )
    xh = x.astype(np.float16).astype(np.float32)
    sims = _unit(qs) @ _unit(xh).T
    exact = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    asc = np.argsort(lid, kind="stable")
    rows = []
    for mode in modes:
        for order_name in ORDERS:
            for rep in range(repeats):
                if order_name == "random":
                    order = np.random.default_rng(1000 + rep).permutation(len(x))
                elif order_name == "grouped":
                    order = grouped
                else:
                    order = asc if order_name == "lid-asc" else asc[::-1].copy()
                t, secs = build(engine, x, order, mode)
                if not uses_index(engine, qs[0]):
                    raise RuntimeError("the kNN query does not use the HNSW index")
                res = {
                    "data": name,
                    "mode": mode,
                    "order": order_name,
                    "repeat": rep,
                    "build_s": secs,
                }
                for ef in EF:
                    res[f"recall_ef{ef}"] = recall(search(engine, t, qs, ef), exact)
                rows.append(res)
                bar.update(1)
                bar.set_postfix_str(f"{name}/{mode}/{order_name}: {res['recall_ef40']:.4f}")
    return rows


# --- report ------------------------------------------------------------------------------


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["data"], r["mode"]) for r in rows}, key=lambda k: (k[0] != "minilm", k[1]))
    for data, mode in keys:
        for order in ORDERS:
            rs = [r for r in rows if (r["data"], r["mode"], r["order"]) == (data, mode, order)]
            if not rs:
                continue
            agg: dict[str, Any] = {
                "data": data,
                "mode": mode,
                "order": order,
                "n": len(rs),
                "build_s": float(np.mean([r["build_s"] for r in rs])),
            }
            for ef in EF:
                v = np.array([r[f"recall_ef{ef}"] for r in rs])
                agg[f"ef{ef}"] = [
                    round(float(v.mean()), 4),
                    round(float(v.min()), 4),
                    round(float(v.max()), 4),
                ]
            base = np.array(
                [
                    r["recall_ef40"]
                    for r in rows
                    if (r["data"], r["mode"], r["order"]) == (data, mode, "random")
                ]
            )
            v = np.array([r["recall_ef40"] for r in rs])
            agg["d40"], agg["t40"] = welch(v, base)
            out.append(agg)
    return out


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean difference a - b and Welch's t statistic (0 when undefined)."""
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return round(diff, 4), 0.0
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    return round(diff, 4), round(diff / se, 1) if se > 0 else 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plot(agg: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(a["data"], a["mode"]) for a in agg}, key=lambda k: (k[0] != "minilm", k[1]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.2), squeeze=False)
    for ax, (data, mode) in zip(axes[0], groups, strict=True):
        for order, style in zip(ORDERS, ("o-", "x-.", "s--", "^:"), strict=True):
            a = next(
                (a for a in agg if (a["data"], a["mode"], a["order"]) == (data, mode, order)), None
            )
            if a is None:
                continue
            mean = [a[f"ef{ef}"][0] for ef in EF]
            lo = [a[f"ef{ef}"][0] - a[f"ef{ef}"][1] for ef in EF]
            hi = [a[f"ef{ef}"][2] - a[f"ef{ef}"][0] for ef in EF]
            ax.errorbar(EF, mean, yerr=[lo, hi], fmt=style, capsize=3, label=order)
        ax.set_xscale("log", base=2)
        ax.set_xticks(EF, [str(e) for e in EF])
        ax.set_xlabel("hnsw.ef_search")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{data}, {mode}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"pgvector HNSW (m=16, ef_construction=64) by insertion order; {cpu_model()}", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--synthetic-rows", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3, help="builds per order, synthetic")
    ap.add_argument("--minilm-repeats", type=int, default=10, help="builds per order, minilm")
    ap.add_argument("--lid-k", type=int, default=20)
    ap.add_argument("--synthetic-modes", default="build", help="comma list of build,insert")
    ap.add_argument("--minilm-modes", default="build,insert", help="comma list of build,insert")
    ap.add_argument("--cache", type=Path, default=OUT / "storage_vectors.npz")
    add_flag(ap)
    args = ap.parse_args()
    # smoke: synthetic only (the MiniLM set needs storage.py's cache or minutes of encoding)
    shrink(args, synthetic_rows=1000, repeats=1, minilm_modes="", synthetic_modes="build")
    out = SMOKE_OUT if args.smoke else OUT
    t0 = time.perf_counter()
    engine = db.create_engine()
    migrate.upgrade(engine)
    datasets: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], int]] = []
    mm = tuple(m for m in args.minilm_modes.split(",") if m)
    sm = tuple(m for m in args.synthetic_modes.split(",") if m)
    if mm:
        datasets.append(("minilm", *minilm(args.cache), mm, args.minilm_repeats))
    if sm and args.synthetic_rows:
        name = f"synthetic{args.synthetic_rows // 1000}k"
        datasets.append((name, *synthetic(args.synthetic_rows), sm, args.repeats))
    total = sum(len(m) * len(ORDERS) * r for *_, m, r in datasets)
    rows: list[dict[str, Any]] = []
    with tqdm(total=total, desc="HNSW builds") as bar:
        for name, x, qs, grouped, modes, reps in datasets:
            rows += run_dataset(engine, name, x, qs, grouped, modes, reps, args.lid_k, bar)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_hnsw_order"))
    agg = aggregate(rows)
    print(
        f"\nhardware: {cpu_model()}, {os.cpu_count()} cores; recall@10 mean [min..max] "
        "over n builds per order"
    )
    print(
        f"{'data':14s} {'mode':7s} {'order':9s} "
        + " ".join(f"{'ef ' + str(e):>22s}" for e in EF)
        + f" {'build s':>8s} {'n':>3s} {'Δ ef40':>7s} {'t':>5s}"
    )
    for a in agg:
        cells = " ".join(
            f"{a[f'ef{e}'][0]:.4f} [{a[f'ef{e}'][1]:.3f}..{a[f'ef{e}'][2]:.3f}]" for e in EF
        )
        head = f"{a['data']:14s} {a['mode']:7s} {a['order']:9s}"
        print(f"{head} {cells} {a['build_s']:8.1f} {a['n']:3d} {a['d40']:+7.4f} {a['t40']:5.1f}")
    png = out / "hnsw_order.png"
    plot(agg, png)
    (out / "hnsw_order.json").write_text(json.dumps({"runs": rows, "summary": agg}, indent=1))
    print(f"plot: {png}; {time.perf_counter() - t0:.0f}s in all")
    summary: dict[str, Any] = {"hardware": f"{cpu_model()}, {os.cpu_count()} cores"}
    for a in agg:
        summary[f"{a['data']}/{a['mode']}/{a['order']}"] = {
            "n": a["n"],
            "ef40": a["ef40"],
            "vs_random": a["d40"],
            "t": a["t40"],
        }
    first = {
        a["order"]: a for a in agg if (a["data"], a["mode"]) == (agg[0]["data"], agg[0]["mode"])
    }
    final(
        args,
        summary,
        ratio(first["grouped"]["ef40"][0], first["random"]["ef40"][0]),
        f"{agg[0]['data']}/{agg[0]['mode']}: grouped ef40 recall / random ef40 recall",
    )


if __name__ == "__main__":
    main()
