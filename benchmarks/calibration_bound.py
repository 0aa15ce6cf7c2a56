"""Benchmark: the lower bound target_recall is held against, on small calibration samples.

Per-query recall@k is skewed: most queries find their whole exact top-k, and a few (an HNSW
search that starts in another cluster) find almost none. On a small calibration sample
that happens to hold few of those, the plain normal bound (mean - 1.645 standard errors)
over-claims. pgembed's bound (``calibration.lower_bound``) adds one pseudo-query of
recall 0.5 before taking it. This script measures how often each picks a setting whose
true recall is below the target.

1. ``--builds`` times: a collection of ``--rows`` seeded clustered unit vectors (32 dims,
   40 centres) under a thin HNSW graph (m 4, ef_construction 16), rebuilt each time (the
   graph's levels are random); for every stored row, recall@10 of ``search_knn`` against
   exact search (its own row left out), at each ef_search of the calibration grid. The
   mean over all rows is the setting's true recall on that graph.
2. ``--trials`` random calibration samples per build, of each size in ``--samples``; per
   target in ``--targets``, each bound picks the smallest ef_search it says meets the target.
   A miss: the pick's true recall is below the target (at 95% confidence, at most 5% of
   picks should miss).

Prints one JSON line per (sample size, target) with both bounds' miss rates, mean picked
ef_search (the price of caution) and the share of samples where no setting meets the target
(pgembed then says so in an error; counted here as the largest setting), then one final
JSON line; writes
``docs/calibration_bound.png``.

    python benchmarks/calibration_bound.py [--builds 4] [--rows 3000] [--trials 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _smoke import SMOKE_OUT, add_flag, final, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import Collection, calibration, db, migrate
from pgembed.encoders import Encoder
from pgembed.encoders.testing import TINY_NAME, export_tiny
from pgembed.errors import UnknownCollectionError
from pgembed.storage.schema import IndexParams

DOCS = Path(__file__).resolve().parent.parent / "docs"
NAME = "bench calibration bound"
K = 10
EF = (10, 20, 40, 64, 100, 200, 400)


def clustered(n: int, dim: int = 32, seed: int = 1) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def plain_bound(r: np.ndarray[Any, Any]) -> float:
    return float(r.mean() - 1.645 * r.std(ddof=1) / np.sqrt(r.size))


def per_query_recall(coll: Collection, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """(len(EF), rows) recall@K of every stored row as a query, its own row left out."""
    cos = x @ x.T
    np.fill_diagonal(cos, -np.inf)
    exact = np.argsort(-cos, axis=1, kind="stable")[:, :K]
    out = np.zeros((len(EF), len(x)))
    with tqdm(total=out.size, desc="per-query recall", unit="q") as bar:
        for e, ef in enumerate(EF):
            for i in range(len(x)):
                got = [j for j, _ in coll.search(x[i], k=K + 1, ef_search=ef) if j != i][:K]
                out[e, i] = len(set(got) & set(exact[i].tolist())) / K
                bar.update(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--builds", type=int, default=4)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--samples", type=int, nargs="+", default=[40, 100])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.95])
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, builds=1, rows=300, trials=200, samples=[40], targets=[0.95])
    if args.smoke:
        global DOCS
        DOCS = SMOKE_OUT

    engine = db.create_engine()
    migrate.upgrade(engine)
    x = clustered(args.rows)
    populations = []
    with tempfile.TemporaryDirectory() as tmp:
        export_tiny(Path(tmp), fp16=False, int8=False)
        enc = Encoder.load(TINY_NAME, device="cpu", model_dir=Path(tmp))
        for _ in range(args.builds):
            with contextlib.suppress(UnknownCollectionError):
                Collection.open(engine, NAME, enc).drop(force=True)
            coll = Collection(engine, NAME, enc, text_column=None,
                              index=IndexParams(m=4, ef_construction=16))  # fmt: skip
            coll.create()
            coll.add(
                [f"row {i}" for i in range(len(x))], ids=range(len(x)), vectors=x, progress=False
            )
            populations.append(per_query_recall(coll, x))
            coll.drop(force=True)

    rng = np.random.default_rng(0)
    lines = []
    for n in args.samples:
        for target in args.targets:
            picks: dict[str, list[tuple[int, float, bool]]] = {"plain": [], "pgembed": []}
            for per in populations:
                truth = per.mean(axis=1)
                for _ in range(args.trials):
                    idx = rng.choice(per.shape[1], n, replace=False)
                    for name, bound in (("plain", plain_bound),
                                        ("pgembed", calibration.lower_bound)):  # fmt: skip
                        ok = [e for e in range(len(EF)) if bound(per[e, idx]) >= target]
                        # none meets it: an error in pgembed; counted as the largest setting
                        e = ok[0] if ok else len(EF) - 1
                        picks[name].append((EF[e], float(truth[e]), not ok))
            line: dict[str, Any] = {"sample": n, "target": target}
            for name, got in picks.items():
                line[f"{name}_miss"] = round(float(np.mean([t < target for _, t, _ in got])), 4)
                line[f"{name}_mean_ef"] = round(float(np.mean([ef for ef, _, _ in got])), 1)
                line[f"{name}_none_meets"] = round(float(np.mean([no for _, _, no in got])), 4)
            line["miss_ratio"] = round(line["plain_miss"] / max(line["pgembed_miss"], 1e-4), 1)
            print(json.dumps(line), flush=True)
            lines.append(line)
    truths = [[round(float(v), 4) for v in per.mean(axis=1)] for per in populations]
    _plot(lines)
    worst = max(lines, key=lambda ln: (ln["plain_miss"], ln["sample"]))
    final(args, {"benchmark": "calibration_bound", "rows": args.rows, "builds": args.builds,
                 "trials": args.trials, "ef_search": EF, "true_recall": truths,
                 "machine": f"{platform.machine()}, {platform.python_version()}",
                 "results": lines},
          ratio(worst["plain_miss"], max(worst["pgembed_miss"], 1e-4)),
          "plain_miss / pgembed_miss where the plain bound misses most")  # fmt: skip


def _plot(lines: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"n={ln['sample']}\nt={ln['target']}" for ln in lines]
    pos = np.arange(len(lines))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(pos - 0.2, [ln["plain_miss"] for ln in lines], 0.4, label="mean - 1.645 SE")
    ax.bar(pos + 0.2, [ln["pgembed_miss"] for ln in lines], 0.4,
           label="pgembed (one pseudo-query of 0.5)")  # fmt: skip
    ax.axhline(0.05, color="grey", ls="--", lw=1, label="5% (the bound's confidence)")
    ax.set_xticks(pos, labels)
    ax.set_ylabel("share of picks below the target")
    ax.set_title("knn ef_search picked from a calibration sample")
    ax.legend()
    fig.tight_layout()
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.savefig(DOCS / "calibration_bound.png", dpi=120)


if __name__ == "__main__":
    main()
