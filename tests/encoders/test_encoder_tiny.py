"""The encoder on a tiny random BERT: parity with torch, batching, outputs, manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pgembed.encoders.encoder import Encoder
from pgembed.encoders.export import THRESHOLDS
from pgembed.encoders.testing import SAMPLE_TEXTS as SAMPLE
from pgembed.encoders.testing import TINY_NAME
from pgembed.encoders.tokenize import plan_batches


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_manifest_and_identity(tiny: Encoder, tiny_root: Path) -> None:
    directory = tiny_root / TINY_NAME
    manifest = json.loads((directory / "manifest.json").read_text())
    sha = hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()
    assert tiny.fingerprint == sha
    assert tiny.name == TINY_NAME and tiny.dim == 32 and tiny.max_length == 64
    assert tiny.matryoshka_dims == (4, 8, 16)
    assert manifest["depths"] == [2, 4]
    assert manifest["pooling"] == "mean" and manifest["normalization"] == "l2"
    assert manifest["query_prefix"] == "query: " and manifest["document_prefix"] == ""
    files = set(manifest["graphs"])
    for stem in ("model", "model.L2"):
        assert {
            f"{stem}.onnx",
            f"{stem}.opt.onnx",
            f"{stem}.fp16.onnx",
            f"{stem}.int8.onnx",
        } <= files
    assert (directory / "tokenizer.json").is_file()
    assert tiny.precision == "fp32" and tiny.device == "cpu" and tiny.layers == 4
    assert not tiny.graph.optimized  # CPU runs the plain graph (faster there)
    assert tiny.count_tokens(["hello world"]).tolist() == [4]
    assert tiny.count_tokens(["hello world"], role="query").tolist() == [6]  # "query: "


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_parity_with_torch(precision: str, tiny_root: Path, tiny_reference: Any) -> None:
    enc = Encoder.load(TINY_NAME, device="cpu", precision=precision, model_dir=tiny_root)
    assert enc.precision == precision
    pooled, tokens = enc.encode_both(SAMPLE, drop_special=False)
    ref_pooled, ref_tokens = tiny_reference(SAMPLE, None)
    bound = THRESHOLDS[precision]
    assert _cos(pooled, ref_pooled).min() >= bound
    for got, want in zip(tokens, ref_tokens, strict=True):
        assert got.shape == want.shape
        assert _cos(got, want).min() >= bound


def test_elastic_depth_matches_torch_with_those_layers(
    tiny_root: Path, tiny_reference: Any, tiny: Encoder
) -> None:
    enc = Encoder.load(TINY_NAME, device="cpu", layers=2, model_dir=tiny_root)
    assert enc.layers == 2
    assert enc.fingerprint != tiny.fingerprint  # a different vector space
    pooled, tokens = enc.encode_both(SAMPLE, drop_special=False)
    ref_pooled, ref_tokens = tiny_reference(SAMPLE, 2)
    assert _cos(pooled, ref_pooled).min() >= THRESHOLDS["fp32"]
    for got, want in zip(tokens, ref_tokens, strict=True):
        assert _cos(got, want).min() >= THRESHOLDS["fp32"]
    full, _ = tiny_reference(SAMPLE, None)
    assert np.abs(pooled - full).max() > 1e-3  # really a shallower model


@pytest.mark.filterwarnings("ignore::pgembed.encoders.tokenize.TruncationWarning")
def test_length_sorted_batches_restore_input_order(tiny: Encoder) -> None:
    texts = [t * (1 + i % 3) for i, t in enumerate(SAMPLE * 3)]
    one_by_one = np.concatenate([tiny.encode([t]) for t in texts])
    tight = tiny.encode(texts, token_budget=24, batch_size=2)
    default = tiny.encode(texts)
    np.testing.assert_allclose(tight, one_by_one, atol=2e-5)
    np.testing.assert_allclose(default, one_by_one, atol=2e-5)
    tokens = tiny.encode_tokens(texts, token_budget=24)
    for text, vecs in zip(texts, tokens, strict=True):
        np.testing.assert_allclose(vecs, tiny.encode_tokens([text])[0], atol=2e-5)


def test_plan_batches_respects_budget() -> None:
    lengths = np.array([5, 60, 7, 7, 30, 2, 64, 9], dtype=np.int64)
    batches = plan_batches(lengths, token_budget=70, max_batch=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for rows in batches:
        assert len(rows) <= 3
        assert len(rows) == 1 or len(rows) * lengths[rows].max() <= 70
    firsts = [int(lengths[rows].max()) for rows in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first


def test_matryoshka_prefixes_are_renormalized(tiny: Encoder) -> None:
    full = tiny.encode(SAMPLE)
    for m in (*tiny.matryoshka_dims, 5, tiny.dim):
        short = tiny.encode(SAMPLE, dims=m)
        assert short.shape == (len(SAMPLE), m) and short.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
        want = full[:, :m] / np.linalg.norm(full[:, :m], axis=1, keepdims=True)
        np.testing.assert_allclose(short, want, atol=1e-6)


def test_outputs_shapes_norms_and_both(tiny: Encoder) -> None:
    pooled = tiny.encode(SAMPLE)
    assert pooled.shape == (len(SAMPLE), 32) and pooled.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    tokens = tiny.encode_tokens(SAMPLE)
    with_special = tiny.encode_tokens(SAMPLE, drop_special=False)
    for t, s in zip(tokens, with_special, strict=True):
        assert t.dtype == np.float32 and t.shape[0] == s.shape[0] - 2  # [CLS] and [SEP]
        np.testing.assert_allclose(t, s[1:-1], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    both_p, both_t = tiny.encode_both(SAMPLE, dims=8)
    np.testing.assert_allclose(both_p, tiny.encode(SAMPLE, dims=8), atol=1e-6)
    for a, b in zip(both_t, tokens, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_query_prefix_from_manifest(tiny: Encoder) -> None:
    q = tiny.encode(["capital of France"], role="query")
    d = tiny.encode(["query: capital of France"], role="document")
    np.testing.assert_allclose(q, d, atol=1e-6)
    assert not np.allclose(q, tiny.encode(["capital of France"]))


def test_streaming_equals_batch(tiny: Encoder) -> None:
    texts = SAMPLE * 4
    chunks = list(tiny.iter_encode((t for t in texts), chunk_size=5, progress=True))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 4]
    np.testing.assert_allclose(np.concatenate(chunks), tiny.encode(texts), atol=2e-5)
    pairs = list(tiny.iter_encode_both(iter(texts), chunk_size=7, dims=8))
    assert sum(len(p) for p, _ in pairs) == len(texts)
    assert sum(len(t) for _, t in pairs) == len(texts)


def test_empty_list_gives_empty_matrix(tiny: Encoder) -> None:
    assert tiny.encode([]).shape == (0, 32)
    assert tiny.encode([], dims=8).shape == (0, 8)
    assert tiny.encode_tokens([]) == []
