"""Benchmark: which vector representation gives the best recall for a fixed memory budget.

After "Experimental Analysis of Large-scale Learnable Vector Storage Compression": on real
MiniLM vectors (all-MiniLM-L6-v2, pgembed's ONNX encoder, CPU) of the 4,443 passages of
gensim's Wikipedia sample (``pgembed.corpus.wikipedia()``), with queries = the 100
held-out lead sentences plus the first sentence of ``--extra-queries`` seeded random
passages, every representation below is searched by brute force in NumPy (the question is
the representation, not the index) and scored by recall@10 against exact float32 cosine.

Single vectors (bytes per vector = the payload, no row or index overhead):
- ``fp32`` / ``fp16``: the full 384 dims (pgvector ``vector`` / ``halfvec``);
- ``mrl{m}-fp32`` / ``mrl{m}-fp16``: Matryoshka prefixes m = 64, 128, 256, renormalized;
- ``res{b}`` / ``mrl{m}-res{b}``: b = 1, 2, 4 bit residual codes (``residual_encode``),
  scored asymmetrically with ``residual_score`` (float query); one float32 scale per level
  is counted (4 B per bit of depth);
- ``bin`` / ``mrl{m}-bin``: 1-bit sign codes scored by Hamming distance (what pgvector's
  ``bit_hamming_ops`` index sees), no scale; ``bin-asym``: the same codes scored against
  the float query (``q · sign(x)``);
- ``int8`` / ``int4``: per-dimension min/max scalar quantization (not a pgvector type; for
  reference);
- ``pca{m}-fp16``: PCA fitted on the corpus, m dims (a learned compression, not in pgembed;
  for reference, since MiniLM is not Matryoshka-trained);
- ``A→B``: funnels: the top-``--candidates`` of A, reranked by B. Bytes = A + B (both are
  stored: A in the first-stage index, B for the rerank); ``hot`` is A alone.

Multi-vector (recall@10 against exact float32 MaxSim, on ``--mv-queries`` of the queries):
bytes per document of the default FDE (halfvec) and of the token multivector (halfvec),
FDE-only ranking, and FDE top-100 (and 200) reranked by MaxSim on halfvec tokens.

Prints a table, writes ``benchmarks/out/storage.png`` (recall against bytes per vector,
log x) and copies it to ``docs/storage.png``; ends with one JSON line: the best
representation per budget.

    python benchmarks/storage.py [--extra-queries 400] [--mv-queries 200]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _smoke import SMOKE_OUT, add_flag, final, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed.vectors import (
    FDEConfig,
    FDEEncoder,
    binary_quantize,
    hamming_distance,
    maxsim_matrix,
    residual_encode,
    residual_score,
    truncate,
)

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
DOCS = ROOT.parent / "docs"
K = 10
BUDGETS = (16, 24, 48, 96, 192, 384, 768, 1536)
PREFIXES = (64, 128, 256)
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


# --- data --------------------------------------------------------------------------------


@dataclass
class Data:
    docs: np.ndarray  # (n, d) float32, unit norm
    queries: np.ndarray  # (m, d) float32, unit norm
    n_lead: int  # the first n_lead queries are the lead sentences
    doc_tokens: list[np.ndarray]
    query_tokens: list[np.ndarray]


def _split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]


def load(extra_queries: int, seed: int, cache: Path, limit: int | None = None) -> Data:
    """Pooled and token MiniLM vectors of the passages and queries (cached as npz); the first
    ``limit`` passages only, when given."""
    if cache.is_file():
        z = np.load(cache)
        if int(z["extra"]) == extra_queries and int(z["seed"]) == seed:
            print(f"vectors from cache {cache.name}")
            return Data(
                z["docs"],
                z["queries"],
                int(z["n_lead"]),
                _split(z["dt_flat"], z["dt_off"]),
                _split(z["qt_flat"], z["qt_off"]),
            )
    from pgembed import Encoder
    from pgembed.corpus import wikipedia

    corpus = wikipedia()
    passages = corpus.passages[:limit]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(passages), size=extra_queries, replace=False)
    firsts = [_FIRST_SENTENCE.split(passages[i].text, maxsplit=1)[0] for i in picks]
    leads = [q.text for q in corpus.queries][: 20 if limit else None]
    qtexts = leads + firsts
    enc = Encoder.load("all-minilm-l6-v2", device="cpu")
    t0 = time.perf_counter()
    docs, dtoks = enc.encode_both([p.text for p in passages], progress=True)
    queries, qtoks = enc.encode_both(qtexts, "query", progress=True)
    print(
        f"encoded {len(docs)} passages and {len(queries)} queries in "
        f"{time.perf_counter() - t0:.0f}s"
    )

    def pack(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        off = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
        return np.concatenate(sets).astype(np.float16), off

    dflat, doff = pack(dtoks)
    qflat, qoff = pack(qtoks)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        docs=docs,
        queries=queries,
        n_lead=len(leads),
        extra=extra_queries,
        seed=seed,
        dt_flat=dflat,
        dt_off=doff,
        qt_flat=qflat,
        qt_off=qoff,
    )
    # Tokens go through the cache's float16 rounding either way, so every run sees the same.
    return Data(docs, queries, len(corpus.queries), _split(dflat, doff), _split(qflat, qoff))


# --- representations ---------------------------------------------------------------------


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (stable on ties)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(set(g[:K].tolist()) & set(e.tolist())) / K
                for g, e in zip(got, exact, strict=True)
            ]
        )
    )


def _fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


@dataclass
class Rep:
    name: str
    family: str
    bytes: int
    score: Callable[[], np.ndarray]  # (m, n) scores, higher is better
    hot: int | None = None


def representations(docs: np.ndarray, queries: np.ndarray) -> list[Rep]:
    d = docs.shape[1]
    reps: list[Rep] = []

    def views(m: int) -> tuple[np.ndarray, np.ndarray, str]:
        if m == d:
            return docs, queries, ""
        return truncate(docs, m), truncate(queries, m), f"mrl{m}-"

    for m in (*PREFIXES, d):
        x, q, tag = views(m)
        fam = "matryoshka" if tag else "float"
        reps.append(Rep(f"{tag}fp32", fam, 4 * m, lambda x=x, q=q: q @ x.T))
        reps.append(Rep(f"{tag}fp16", fam, 2 * m, lambda x=x, q=q: q @ _fp16(x).T))
        reps.append(
            Rep(
                f"{tag}bin",
                "binary (hamming)",
                m // 8,
                lambda x=x, q=q: (
                    -hamming_distance(binary_quantize(q), binary_quantize(x)).astype(np.float32)
                ),
            )
        )
        reps.append(
            Rep(
                f"{tag}bin-asym",
                "binary (float query)",
                m // 8,
                lambda x=x, q=q: q @ np.where(x > 0, 1.0, -1.0).astype(np.float32).T,
            )
        )
        for b in (1, 2, 4):
            reps.append(
                Rep(
                    f"{tag}res{b}",
                    f"residual {b}-bit",
                    b * m // 8 + 4 * b,
                    lambda x=x, q=q, b=b: residual_score(q, residual_encode(x, b)),
                )
            )
    # int8/int4 scalar quantization, per-dimension range (reference: not a pgvector type).
    lo, hi = docs.min(axis=0), docs.max(axis=0)
    for bits in (8, 4):
        step = (hi - lo) / (2**bits - 1)
        sq = (np.round((docs - lo) / step) * step + lo).astype(np.float32)
        reps.append(
            Rep(
                f"int{bits}",
                "reference (not pgvector)",
                d * bits // 8,
                lambda sq=sq: queries @ sq.T,
            )
        )
    # PCA fitted on the corpus (for reference: a learned projection pgembed does not ship).
    mean = docs.mean(axis=0)
    _, _, vt = np.linalg.svd(docs - mean, full_matrices=False)
    for m in PREFIXES:
        px = _unit((docs - mean) @ vt[:m].T)
        pq = _unit((queries - mean) @ vt[:m].T)
        reps.append(
            Rep(
                f"pca{m}-fp16",
                "reference (not pgvector)",
                2 * m,
                lambda px=px, pq=pq: pq @ _fp16(px).T,
            )
        )
    return reps


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


FUNNELS = (
    ("bin", "res2"),
    ("bin", "res4"),
    ("bin", "fp16"),
    ("bin", "fp32"),
    ("mrl128-bin", "res4"),
    ("mrl64-fp16", "fp16"),
    ("mrl128-fp16", "fp16"),
    ("res2", "fp16"),
)


def evaluate(data: Data, candidates: int) -> list[dict[str, Any]]:
    docs, queries = data.docs, data.queries
    exact = topk(queries @ docs.T, K)
    reps = representations(docs, queries)
    by_name = {r.name: r for r in reps}
    scores: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    lead = slice(0, data.n_lead)
    for r in tqdm(reps, desc="representations"):
        s = r.score()
        scores[r.name] = s
        got = topk(s, K)
        rows.append(
            {
                "name": r.name,
                "family": r.family,
                "bytes": r.bytes,
                "hot": r.bytes,
                "recall10": recall(got, exact),
                "recall10_lead": recall(got[lead], exact[lead]),
            }
        )
    for a, b in tqdm(FUNNELS, desc="funnels"):
        cand = topk(scores[a], candidates)
        rescored = np.take_along_axis(scores[b], cand, axis=1)
        got = np.take_along_axis(cand, topk(rescored, K), axis=1)
        rows.append(
            {
                "name": f"{a}→{b}",
                "family": f"funnel (A top-{candidates} → B)",
                "bytes": by_name[a].bytes + by_name[b].bytes,
                "hot": by_name[a].bytes,
                "recall10": recall(got, exact),
                "recall10_lead": recall(got[lead], exact[lead]),
            }
        )
    return rows


def multivector(data: Data, n_queries: int) -> dict[str, Any]:
    """FDE and token multivector bytes per document, recall@10 against exact MaxSim."""
    dtoks, qtoks = data.doc_tokens, data.query_tokens[:n_queries]
    t0 = time.perf_counter()
    # Exact ground truth on the (float16-rounded, as cached) tokens in float32 arithmetic.
    truth = maxsim_matrix(qtoks, dtoks)
    exact = topk(truth, K)
    fde = FDEEncoder(FDEConfig(dimension=dtoks[0].shape[1]))
    dfde = _fp16(fde.encode_document(dtoks))
    qfde = fde.encode_query(qtoks)
    approx = qfde @ dfde.T
    out: dict[str, Any] = {
        "docs": len(dtoks),
        "queries": len(qtoks),
        "mean_tokens": float(np.mean([len(t) for t in dtoks])),
        "fde_dim": fde.output_dim,
        "fde_bytes": 2 * fde.output_dim,
        "multivector_bytes": float(np.mean([2 * t.size for t in dtoks])),
        "fde_only_recall10": recall(topk(approx, K), exact),
    }
    for c in (100, 200):
        cand = topk(approx, c)
        got = np.take_along_axis(cand, topk(np.take_along_axis(truth, cand, axis=1), K), axis=1)
        out[f"fde{c}_maxsim_recall10"] = recall(got, exact)
        out[f"fde{c}_maxsim_recall10_lead"] = recall(got[: data.n_lead], exact[: data.n_lead])
    out["fde_plus_tokens_bytes"] = out["fde_bytes"] + out["multivector_bytes"]
    out["seconds"] = time.perf_counter() - t0
    return out


# --- report ------------------------------------------------------------------------------


def best_per_budget(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for budget in BUDGETS:
        fits = [r for r in rows if r["bytes"] <= budget and not r["family"].startswith("reference")]
        if fits:
            top = max(fits, key=lambda r: (round(r["recall10"], 4), -r["bytes"]))
            best[str(budget)] = {
                "rep": top["name"],
                "bytes": top["bytes"],
                "recall10": round(top["recall10"], 3),
            }
    return best


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plot(rows: list[dict[str, Any]], mv: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 1.3]})
    families = sorted({r["family"] for r in rows})
    markers = "osD^v<>ph*"
    for i, fam in enumerate(families):
        rs = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["bytes"])
        ax.scatter(
            [r["bytes"] for r in rs],
            [r["recall10"] for r in rs],
            marker=markers[i % 10],
            label=fam,
            s=36,
            alpha=0.85,
        )
        for r in rs:
            ax.annotate(
                r["name"],
                (r["bytes"], r["recall10"]),
                fontsize=6,
                alpha=0.8,
                xytext=(3, -7),
                textcoords="offset points",
            )
    front, last = [], -1.0
    for r in sorted(
        (r for r in rows if not r["family"].startswith("reference")),
        key=lambda r: (r["bytes"], -r["recall10"]),
    ):
        if r["recall10"] > last:
            front.append(r)
            last = r["recall10"]
    ax.step(
        [r["bytes"] for r in front],
        [r["recall10"] for r in front],
        where="post",
        color="k",
        lw=0.8,
        alpha=0.5,
        label="best so far (pgvector types)",
    )
    for b in BUDGETS:
        ax.axvline(b, color="grey", lw=0.4, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per vector (payload)")
    ax.set_ylabel("recall@10 vs exact float32 cosine")
    ax.set_title(f"MiniLM-L6 (384 d), {len(rows)} representations, Wikipedia passages")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    names = ["FDE only", "FDE top-100\n→ MaxSim", "FDE top-200\n→ MaxSim"]
    vals = [mv["fde_only_recall10"], mv["fde100_maxsim_recall10"], mv["fde200_maxsim_recall10"]]
    ax2.bar(names, vals, color=["#999", "#4a8", "#286"])
    for i, v in enumerate(vals):
        ax2.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax2.set_ylim(0, 1.08)
    ax2.set_ylabel("recall@10 vs exact MaxSim")
    ax2.set_title(
        f"multi-vector: FDE {mv['fde_bytes']} B/doc,\n"
        f"tokens {mv['multivector_bytes'] / 1000:.0f} kB/doc",
        fontsize=9,
    )
    ax2.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    global OUT, DOCS
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--extra-queries", type=int, default=400)
    ap.add_argument("--mv-queries", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=OUT / "storage_vectors.npz")
    add_flag(ap)
    args = ap.parse_args()
    # smoke: 260 passages (PCA fits up to 256 dims), 40 queries, encoded afresh (no cache)
    shrink(args, extra_queries=20, mv_queries=10, cache=SMOKE_OUT / "storage_vectors.npz")
    if args.smoke:
        OUT = DOCS = SMOKE_OUT
        args.cache.unlink(missing_ok=True)
    t0 = time.perf_counter()
    data = load(args.extra_queries, args.seed, args.cache, 260 if args.smoke else None)
    rows = evaluate(data, args.candidates)
    print(f"multi-vector: exact MaxSim of {args.mv_queries} queries over {len(data.docs)} docs")
    mv = multivector(data, args.mv_queries)

    print(
        f"\nhardware: {cpu_model()}, {os.cpu_count()} cores; {len(data.docs)} passages, "
        f"{len(data.queries)} queries ({data.n_lead} lead sentences)"
    )
    print(
        f"{'representation':20s} {'family':28s} {'bytes':>6s} {'hot':>5s} "
        f"{'R@10':>6s} {'R@10 lead':>9s}"
    )
    for r in sorted(rows, key=lambda r: (r["bytes"], -r["recall10"])):
        print(
            f"{r['name']:20s} {r['family']:28s} {r['bytes']:6d} {r['hot']:5d} "
            f"{r['recall10']:6.3f} {r['recall10_lead']:9.3f}"
        )
    best = best_per_budget(rows)
    print("\nbest per budget (pgvector-storable representations):")
    for budget, b in best.items():
        print(
            f"  <= {budget:>5s} B: {b['rep']:18s} {b['bytes']:5d} B  recall@10 {b['recall10']:.3f}"
        )
    print(
        f"\nmulti-vector ({mv['docs']} docs, {mv['queries']} queries, "
        f"{mv['mean_tokens']:.0f} tokens/doc): FDE {mv['fde_dim']} dims halfvec = "
        f"{mv['fde_bytes']} B/doc, tokens halfvec = {mv['multivector_bytes']:.0f} B/doc"
    )
    print(
        f"  FDE only R@10 {mv['fde_only_recall10']:.3f}; FDE top-100 → MaxSim "
        f"{mv['fde100_maxsim_recall10']:.3f} (lead sentences only "
        f"{mv['fde100_maxsim_recall10_lead']:.3f}); top-200 → MaxSim "
        f"{mv['fde200_maxsim_recall10']:.3f}"
    )
    png = OUT / "storage.png"
    plot(rows, mv, png)
    if DOCS != OUT:
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(png, DOCS / "storage.png")
    copied = "" if DOCS == OUT else " (copied to docs/storage.png)"
    print(f"plot: {png}{copied}; {time.perf_counter() - t0:.0f}s in all")
    summary = {
        "hardware": f"{cpu_model()}, {os.cpu_count()} cores",
        "docs": len(data.docs),
        "queries": len(data.queries),
        "best_per_budget": best,
        "mv_fde_bytes": mv["fde_bytes"],
        "mv_tokens_bytes": round(mv["multivector_bytes"]),
        "mv_fde_only_recall10": round(mv["fde_only_recall10"], 3),
        "mv_fde100_maxsim_recall10": round(mv["fde100_maxsim_recall10"], 3),
        "mv_fde200_maxsim_recall10": round(mv["fde200_maxsim_recall10"], 3),
    }
    by = {r["name"]: r for r in rows}
    final(
        args,
        summary,
        round(by["bin→fp16"]["recall10"] / by["fp16"]["recall10"], 3),
        "recall@10 of bin→fp16 (binary codes, halfvec rerank) / of fp16 (exact halfvec)",
    )


if __name__ == "__main__":
    main()
