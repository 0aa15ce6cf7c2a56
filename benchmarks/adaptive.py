"""Benchmark: target_recall against fixed settings, on queries held out from calibration.

Data: ``--rows`` (default 100,000) seeded clustered synthetic vectors of ``--dim`` (128)
dimensions whose variance decays along the dimensions, as in Matryoshka-trained models
(the generator of ``benchmarks/search.py``), in one collection with knn, a funnel on the
prefixes dim/4 and dim/2, and 1-bit binary codes. The encoder is a tiny random BERT of the
same width, exported here: only its dimension matters, the vectors are given.

1. ``Collection.calibrate(queries=...)`` on ``--calib`` fresh query vectors from the same
   clusters (``--calib-from stored``: that many stored rows, each leaving itself out).
2. ``--queries`` other fresh vectors, never stored nor used in calibration, are the
   held-out set; their exact top-10 is computed in numpy over the stored (halfvec) values.
3. Per strategy, interleaved over ``--rounds`` rounds: the search with ``target_recall``
   (``--target``), the strategy at its fixed defaults, and every setting of the
   calibration grid (what a user could pick by hand). Time is the database's executor
   time of each search statement (auto_explain, median per query; best round kept), so
   the client's constant overhead does not dilute the ratios.

``--real``: the same comparison on real text instead, for recall (a few thousand rows: the
times say little): all-MiniLM-L6-v2 (``PGEMBED_MODEL_DIR`` holding its export) on the
passages of the shipped Wikipedia sample, with knn, a funnel on prefixes 128 and 256 (MiniLM
is not Matryoshka-trained) and binary codes; queries are the articles' lead sentences and
the first sentence of every other passage, split at random into a calibration half and a
held-out half.

Prints one JSON line per strategy: target, achieved held-out recall, the chosen setting,
``ms``, ``fixed_default_ms`` (and its recall), the best hand-picked setting that meets the
target on the held-out queries and its ``ms``, and the ratios; then one final JSON line
with all of them. Writes ``docs/adaptive.png``.

Run it against a server of its own (``PGEMBED_HOME=/some/dir``, or a
``PGEMBED_DATABASE_URL``): it upgrades pgembed's schema there.

    python benchmarks/adaptive.py [--rows 100000] [--queries 200] [--target 0.95]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from _smoke import SMOKE_OUT, add_flag, final, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import Collection, calibration, db, migrate, sqlfuncs, strategies
from pgembed.encoders import Encoder
from pgembed.encoders.testing import build_tiny_bert, export_tiny
from pgembed.errors import UnknownCollectionError

DOCS = Path(__file__).resolve().parent.parent / "docs"
K = 10
NAME = "bench adaptive"


def synthetic(n: int, nq: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors with a decaying spectrum (std of dim j ∝ (j+1)^-0.5)."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(dim) + 1.0) ** -0.5
    centers = rng.normal(size=(max(n // 100, 10), dim)) * scale
    pick = rng.integers(0, len(centers), n + nq)
    x = centers[pick] + 0.6 * rng.normal(size=(n + nq, dim)) * scale
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:n], x[n:]


def real_text(enc: Encoder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MiniLM passage vectors of the Wikipedia sample, and two halves of the queries."""
    from pgembed.corpus import _SENTENCE_END, wikipedia

    corpus = wikipedia()
    texts = [p.text for p in corpus.passages]
    queries = [q.text for q in corpus.queries]
    queries += [_SENTENCE_END.split(p.text, maxsplit=1)[0] for p in corpus.passages[1::2]]
    queries = [q for q in queries if len(q.split()) >= 5]
    x = enc.encode(texts, "document")
    qv = enc.encode(queries, "query")
    order = np.random.default_rng(0).permutation(len(qv))
    half = len(order) // 2
    return x, qv[order[:half]], qv[order[half:]]


def encoder(dim: int, where: Path) -> Encoder:
    src = build_tiny_bert(where / ".src", hidden=dim, heads=4, intermediate=2 * dim)
    out = export_tiny(where, f"tiny-{dim}", source_dir=src, fp16=False, int8=False)
    return Encoder.load(out)


def _timer(conn: sa.Connection) -> list[float]:
    """Each top-level statement's executor time (ms), as auto_explain logs it."""
    durations: list[float] = []

    def note(diag: Any) -> None:
        m = re.match(r"duration: ([\d.]+) ms", diag.message_primary or "")
        if m:
            durations.append(float(m.group(1)))

    conn.execute(sa.text("LOAD 'auto_explain'"))
    conn.execute(sa.text("SET auto_explain.log_min_duration = 0"))
    conn.execute(sa.text("SET auto_explain.log_level = notice"))
    conn.execute(sa.text("SET client_min_messages = notice"))
    conn.connection.driver_connection.add_notice_handler(note)  # type: ignore[union-attr]
    return durations


def run(
    engine: sa.Engine, strategy: str, qs: np.ndarray, opts: dict[str, Any]
) -> tuple[list[list[int]], float]:
    """Ids per query and the median database ms per query."""
    fn = getattr(sqlfuncs, strategies.STRATEGIES[strategy].function)
    stmts = [sa.select(fn(NAME, q, k=K, **opts).c.id) for q in qs]
    with engine.connect() as conn:
        conn.execute(stmts[0]).all()  # warm
        durations = _timer(conn)
        got = [[int(i) for i in conn.execute(s).scalars()] for s in stmts]
        conn.invalidate()  # auto_explain stays loaded: do not pool this connection
    return got, float(np.median(durations))


def recall(got: list[list[int]], exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(g) & set(e.tolist())) / K for g, e in zip(got, exact, strict=True)])
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200, help="held-out queries")
    ap.add_argument("--calib", type=int, default=100, help="calibration queries")
    ap.add_argument("--calib-from", choices=("fresh", "stored"), default="fresh",
                    help="fresh query vectors (default) or stored rows")  # fmt: skip
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--real", action="store_true", help="MiniLM on the Wikipedia sample")
    ap.add_argument("--rounds", type=int, default=3)
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, rows=2000, dim=32, queries=20, calib=40, rounds=1)
    if args.smoke:
        global DOCS
        DOCS = SMOKE_OUT
    warnings.simplefilter("ignore", calibration.CalibrationWarning)

    engine = db.create_engine()
    migrate.upgrade(engine)
    if args.real:
        enc = Encoder.load("all-minilm-l6-v2")
        x, held, calib_q = real_text(enc)
        args.rows, args.dim, args.queries, args.calib = len(x), enc.dim, len(held), len(calib_q)
        dims: tuple[int, ...] = (128, 256)
    else:
        x, fresh = synthetic(args.rows, args.queries + args.calib, args.dim)
        held, calib_q = fresh[: args.queries], fresh[args.queries :]
        with tempfile.TemporaryDirectory() as tmp:
            enc = encoder(args.dim, Path(tmp))
        dims = (args.dim // 4, args.dim // 2)
    coll = Collection(engine, NAME, enc, kinds=("matryoshka", "binary"), matryoshka_dims=dims,
                      text_column=None)  # fmt: skip
    with contextlib.suppress(UnknownCollectionError):  # a previous run's
        coll.drop(force=True)
    coll.create()
    t0 = time.perf_counter()
    coll.add([str(i) for i in range(args.rows)], ids=range(args.rows), vectors=x, mode="bulk")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.calib_from == "fresh":
        cal = coll.calibrate(queries=calib_q, k=K)
    else:
        cal = coll.calibrate(sample=args.calib, k=K, seed=0)
    calib_s = time.perf_counter() - t0
    print(calibration.format_calibration(cal))

    xh = x.astype(np.float16).astype(np.float32)
    exact = np.argsort(-(held @ xh.T), axis=1, kind="stable")[:, :K]
    lines = []
    for strategy in ("knn", "funnel", "binary"):
        with engine.connect() as conn:
            chosen = conn.execute(
                sa.text("SELECT pgembed.calibrated_setting(:c, :s, :t)"),
                {"c": NAME, "s": strategy, "t": args.target},
            ).scalar_one()
        runs: dict[str, dict[str, Any]] = {"target": {"target_recall": args.target}, "default": {}}
        for setting in calibration.grid(coll.spec, strategy, K):
            runs[json.dumps(setting)] = setting
        best: dict[str, tuple[float, float]] = {}
        for _ in tqdm(range(args.rounds), desc=f"{strategy} rounds"):
            for name, opts in runs.items():
                got, ms = run(engine, strategy, held, opts)
                r = recall(got, exact)
                prev = best.get(name)
                best[name] = (r, ms if prev is None else min(prev[1], ms))
        hand = [(ms, name) for name, (r, ms) in best.items()
                if name not in ("target", "default") and r >= args.target]  # fmt: skip
        best_ms, best_name = min(hand) if hand else (float("nan"), None)
        r_t, ms_t = best["target"]
        r_d, ms_d = best["default"]
        line = {
            "strategy": strategy, "target": args.target, "recall": round(r_t, 4),
            "setting": chosen, "ms": round(ms_t, 3),
            "fixed_default_ms": round(ms_d, 3), "fixed_default_recall": round(r_d, 4),
            "speedup_vs_default": round(ms_d / ms_t, 2),
            "best_fixed_setting": json.loads(best_name) if best_name else None,
            "best_fixed_ms": round(best_ms, 3),
            "ms_over_best_fixed": round(ms_t / best_ms, 2) if hand else None,
            "held_out_queries": args.queries, "rows": args.rows,
            "calibrated_on": args.calib_from,
        }  # fmt: skip
        print(json.dumps(line), flush=True)
        lines.append(line)
        _plot_points(strategy, best, cal)
    _save_plot(args)
    knn = lines[0]
    final(args, {
        "benchmark": "adaptive", "data": "wikipedia-minilm" if args.real else "synthetic",
        "rows": args.rows, "dim": args.dim, "target": args.target,
        "calibration_queries": args.calib, "calibrated_on": args.calib_from,
        "held_out_queries": args.queries,
        "load_s": round(load_s, 1), "calibrate_s": round(calib_s, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "strategies": lines,
    }, ratio(knn["fixed_default_ms"], knn["ms"]),
        "knn: fixed_default_ms / ms (target_recall)")  # fmt: skip


_POINTS: dict[str, Any] = {}


def _plot_points(
    strategy: str, best: dict[str, tuple[float, float]], cal: calibration.Calibration
) -> None:
    _POINTS[strategy] = {
        "grid": sorted(
            (ms, r) for name, (r, ms) in best.items() if name not in ("target", "default")
        ),
        "target": best["target"][::-1],
        "default": best["default"][::-1],
    }


def _save_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (strategy, p) in enumerate(_POINTS.items()):
        color = f"C{i}"
        ax.plot([m for m, _ in p["grid"]], [r for _, r in p["grid"]], "o", color=color, ms=3,
                alpha=0.6, label=f"{strategy}: calibration grid")  # fmt: skip
        ax.plot(*p["target"], "*", color=color, ms=14, label=f"{strategy}: target_recall")
        ax.plot(*p["default"], "s", color=color, ms=8, mfc="none", label=f"{strategy}: default")
    ax.axhline(args.target, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("database ms per query (median, log)")
    ax.set_ylabel("recall@10 vs exact, held-out queries")
    what = "MiniLM, Wikipedia passages" if args.real else f"{args.dim} dims"
    ax.set_title(f"target_recall={args.target} on {args.rows:,} rows ({what})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(DOCS / ("adaptive_minilm.png" if args.real else "adaptive.png"), dpi=110)


if __name__ == "__main__":
    main()
