"""Benchmark: elastic query depth (2DMSE), calibrated, against the full-depth query encoder.

all-MiniLM-L6-v2 (6 layers) is exported here with shallower graphs (``--layers``, default
2,4; fp32, CPU). Data: the passages of the shipped Wikipedia sample in one knn collection;
queries: the articles' lead sentences and the first sentence of every other passage, split
at random into a calibration half and a held-out half of ``--queries`` each (as
``benchmarks/adaptive.py --real``). ``Collection.calibrate(queries=...)`` measures each
(layers, ef_search); then, for each ``--targets`` value, the held-out texts are searched with
``Collection.search(text, target_recall=t)``: recall@10 against exact search with the
full-depth query, and the encode time per query at the picked depth against the full
depth's, measured side by side (one text at a time, interleaved, ``--rounds`` rounds, median).

MiniLM is not trained for early exits, so its shallow graphs may fail every target: the
pick is then the full depth, and the encode time saved is 0, a measured outcome.

Prints one JSON line per depth (encode ms, best calibrated recall), one per target (picked
layers and setting, held-out recall, ``encode_ms``, ``full_depth_encode_ms``, the ratio),
and a final line with all of them.

    PGEMBED_HOME=$(mktemp -d) python benchmarks/query_depth.py [--targets 0.5,0.8,0.95]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
import warnings

import numpy as np
from _smoke import add_flag, final, ratio, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import Collection, calibration, db, migrate, query_depth
from pgembed.encoders import Encoder
from pgembed.encoders.export import export_model
from pgembed.encoders.testing import export_tiny
from pgembed.errors import UnknownCollectionError

K = 10
NAME = "bench query depth"


def texts(n: int) -> tuple[list[str], list[str], list[str]]:
    from pgembed.corpus import _SENTENCE_END, wikipedia

    corpus = wikipedia()
    docs = [p.text for p in corpus.passages]
    qs = [q.text for q in corpus.queries]
    qs += [_SENTENCE_END.split(p.text, maxsplit=1)[0] for p in corpus.passages[1::2]]
    qs = [q for q in qs if len(q.split()) >= 5]
    order = np.random.default_rng(0).permutation(len(qs))
    half = min(len(order) // 2, n)
    return docs, [qs[i] for i in order[half : 2 * half]], [qs[i] for i in order[:half]]


def encode_ms(encs: dict[int, Encoder], qs: list[str], rounds: int) -> dict[int, float]:
    """Median ms per query of each encoder, one text at a time, interleaved."""
    times: dict[int, list[float]] = {d: [] for d in encs}
    for _ in tqdm(range(rounds), desc="encode rounds"):
        for q in qs:
            for d, enc in encs.items():
                t0 = time.perf_counter()
                enc.encode([q], "query", progress=False)
                times[d].append(time.perf_counter() - t0)
    return {d: 1000.0 * float(np.median(t)) for d, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--layers", default="2,4")
    ap.add_argument("--targets", default="0.5,0.8,0.9,0.95")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=150, help="per half (calibration, held out)")
    add_flag(ap)
    args = ap.parse_args()
    # smoke: the tiny random BERT (4 layers) on 200 passages
    shrink(args, layers="2", targets="0.5", rounds=1, queries=20)
    warnings.simplefilter("ignore", calibration.CalibrationWarning)
    depths = [int(d) for d in args.layers.split(",")]
    targets = [float(t) for t in args.targets.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            out = export_tiny(tmp, depths=depths, fp16=False, int8=False)
        else:
            out = export_model(
                "all-minilm-l6-v2", model_dir=tmp, layers=depths, fp16=False, int8=False
            )
        full = Encoder.load(out.name, device="cpu", precision="fp32", model_dir=tmp)
        encs = {full.layers: full} | {d: query_depth.encoder_at(full, d) for d in depths}
        docs, held, calib_q = texts(args.queries)
        docs = docs[:200] if args.smoke else docs
        engine = db.create_engine()
        migrate.upgrade(engine)
        coll = Collection(engine, NAME, full, text_column=None)
        with contextlib.suppress(UnknownCollectionError):  # a previous run's
            coll.drop(force=True)
        coll.create()
        coll.add(docs, ids=range(len(docs)))
        cal = coll.calibrate(queries=calib_q, k=K, strategies=["knn"])
        x = full.encode(docs, "document", progress=False).astype(np.float16).astype(np.float32)
        qf = full.encode(held, "query", progress=False)
        exact = np.argsort(-(qf @ x.T), axis=1, kind="stable")[:, :K]
        enc_ms = encode_ms(encs, held, args.rounds)
        lines: list[dict[str, object]] = []
        for d in sorted(encs):
            best = max(m.recall for m in cal.depths if m.layers == d)
            line = {"layers": d, "encode_ms": round(enc_ms[d], 3),
                    "best_calibrated_recall": round(best, 4)}  # fmt: skip
            print(json.dumps(line), flush=True)
            lines.append(line)
        for t in targets:
            with engine.connect() as conn:
                pick = query_depth.pick(conn, NAME, "knn", t, {})
            layers = pick.layers if pick else full.layers
            got = [[i for i, _ in coll.search(q, k=K, target_recall=t)] for q in held]
            hits = [len(set(g) & set(e.tolist())) for g, e in zip(got, exact, strict=True)]
            r = float(np.mean(hits)) / K
            line = {"target": t, "layers": layers, "setting": pick.setting if pick else None,
                    "recall": round(r, 4), "encode_ms": round(enc_ms[layers], 3),
                    "full_depth_encode_ms": round(enc_ms[full.layers], 3),
                    "encode_speedup": round(enc_ms[full.layers] / enc_ms[layers], 2)}  # fmt: skip
            print(json.dumps(line), flush=True)
            lines.append(line)
        coll.drop(force=True)
    first = next(ln for ln in lines if "target" in ln)
    final(args, {
        "benchmark": "query_depth", "model": full.name, "rows": len(docs),
        "calibration_queries": len(calib_q), "held_out_queries": len(held), "results": lines,
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores",
    }, ratio(first["full_depth_encode_ms"], first["encode_ms"]),
        f"target {first['target']}: full_depth_encode_ms / encode_ms, picked depth")  # fmt: skip


if __name__ == "__main__":
    main()
