"""Parity of the exported all-MiniLM-L6-v2 with sentence-transformers (real weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pgembed.encoders.encoder import Encoder
from pgembed.encoders.export import THRESHOLDS
from pgembed.encoders.registry import DEFAULT_MODEL
from pgembed.encoders.testing import SAMPLE_TEXTS as SAMPLE
from pgembed.encoders.testing import gensim_sentences

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts() -> list[str]:
    long = " ".join(gensim_sentences(40))  # beyond 256 tokens: truncated by both sides
    return [*SAMPLE, *gensim_sentences(60), long]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_lazy_export_of_default_model(minilm_root: Path) -> None:
    enc = Encoder.load(device="cpu", model_dir=minilm_root)
    assert enc.name == DEFAULT_MODEL and enc.dim == 384 and enc.max_length == 256
    assert enc.matryoshka_dims == (64, 128, 256)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_pooled_and_tokens_match_sentence_transformers(
    precision: str, minilm_root: Path, st_minilm: Any, texts: list[str]
) -> None:
    enc = Encoder.load(DEFAULT_MODEL, device="cpu", precision=precision, model_dir=minilm_root)
    want = st_minilm.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    with pytest.warns(UserWarning, match="1 of .* truncated"):
        pooled, tokens = enc.encode_both(texts, drop_special=False)
    bound = THRESHOLDS[precision]
    assert _cos(pooled, want).min() >= bound
    st_tokens = st_minilm.encode(texts, output_value="token_embeddings", convert_to_numpy=False)
    token_bound = bound if precision != "int8" else 0.98  # per token int8 is noisier
    for got, ref in zip(tokens, st_tokens, strict=True):
        ref = ref.numpy()
        assert got.shape == ref.shape
        assert _cos(got, ref).min() >= token_bound
