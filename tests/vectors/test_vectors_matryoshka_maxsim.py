"""Matryoshka prefixes and exact MaxSim."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from _tolerance import assert_sums_close

from pgembed.errors import DimensionError, EmptyInputError, InputError, NonFiniteError
from pgembed.vectors.matryoshka import truncate
from pgembed.vectors.maxsim import maxsim, maxsim_matrix, maxsim_topk

# --- Matryoshka ---------------------------------------------------------------------------


def test_truncate_renormalizes() -> None:
    v = np.array([3.0, 4.0, 12.0], dtype=np.float32)
    np.testing.assert_allclose(truncate(v, 2), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(truncate(v, 3), v / 13.0, rtol=1e-6)
    np.testing.assert_allclose(truncate(v, 2, normalize=False), [3.0, 4.0])
    batch = np.array([[3, 4, 1], [0, -2, 5]], dtype=np.float32)
    out = truncate(batch, 2)
    assert out.shape == (2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_truncate_bad_input() -> None:
    v = np.ones(4, dtype=np.float32)
    with pytest.raises(DimensionError, match=r"dims=5 is outside 1\.\.4"):
        truncate(v, 5)
    with pytest.raises(DimensionError, match=r"dims=0 is outside"):
        truncate(v, 0)
    with pytest.raises(DimensionError, match="must be an integer"):
        truncate(v, 2.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="prefix of row 1 is all zeros"):
        truncate(np.array([[1, 1, 0], [0, 0, 1]], dtype=np.float32), 2)
    with pytest.raises(NonFiniteError, match="NaN"):
        truncate(np.array([1.0, np.nan]), 1)
    with pytest.raises(EmptyInputError, match="empty"):
        truncate(np.zeros((0, 3)), 2)
    with pytest.raises(DimensionError, match="2-D"):
        truncate(np.zeros((2, 2, 2)), 1)


# --- MaxSim --------------------------------------------------------------------------------


def _naive(q: np.ndarray, d: np.ndarray) -> float:
    return float(sum(max(float(qi @ dj) for dj in d) for qi in q))


def test_maxsim_matches_naive() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((6, 16)).astype(np.float32)
    docs = [rng.standard_normal((int(n), 16)).astype(np.float32) for n in rng.integers(1, 30, 40)]
    got = maxsim(q, docs)
    assert got.shape == (40,) and got.dtype == np.float32
    np.testing.assert_allclose(got, [_naive(q, d) for d in docs], rtol=1e-5, atol=1e-5)
    # hand example: q = e0, e1; doc tokens (2, 0), (0.5, 3) → 2 + 3
    assert maxsim(np.eye(2), [np.array([[2.0, 0.0], [0.5, 3.0]])])[0] == pytest.approx(5.0)


def test_maxsim_chunked_and_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    queries = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in (1, 3, 7)]
    docs = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(1, 20, 30)]
    full = maxsim_matrix(queries, docs)
    assert full.shape == (3, 30)
    # Bound of sum |q_t . d_s| over the terms that were summed, for the rounding tolerance.
    scale = maxsim_matrix([np.abs(q) for q in queries], [np.abs(d) for d in docs])
    for i, q in enumerate(queries):
        assert_sums_close(full[i], maxsim(q, docs), scale[i], terms=8 + len(q))
    maxsim_mod = importlib.import_module(
        "pgembed.vectors.maxsim"
    )  # the package's `maxsim` is the function
    monkeypatch.setattr(maxsim_mod, "_BLOCK_ELEMENTS", 5)  # tiny chunks
    assert_sums_close(maxsim_matrix(queries, docs), full, scale, terms=8 + 7)


def test_maxsim_topk() -> None:
    docs = [np.array([[float(s), 0.0]], dtype=np.float32) for s in (1, 5, 3, 5, -2)]
    idx, scores = maxsim_topk(np.array([[1.0, 0.0]]), docs, 3)
    assert idx.tolist() == [1, 3, 2]  # tie between 1 and 3: lower index first
    assert scores.tolist() == [5.0, 5.0, 3.0]
    idx, _ = maxsim_topk(np.array([[1.0, 0.0]]), docs, 99)
    assert idx.tolist() == [1, 3, 2, 0, 4]
    with pytest.raises(InputError, match="k must be >= 1, got 0"):
        maxsim_topk(np.array([[1.0, 0.0]]), docs, 0)


def test_maxsim_bad_input() -> None:
    doc = [np.ones((3, 4), dtype=np.float32)]
    with pytest.raises(EmptyInputError, match="query is empty"):
        maxsim(np.zeros((0, 4)), doc)
    with pytest.raises(EmptyInputError, match="document 1 is empty"):
        maxsim(np.ones((1, 4)), [doc[0], np.zeros((0, 4))])
    with pytest.raises(DimensionError, match="query has 5 dims per vector, expected 4"):
        maxsim(np.ones((1, 5)), doc)
    with pytest.raises(NonFiniteError, match="query holds NaN"):
        maxsim(np.array([[np.nan, 0, 0, 0]]), doc)
    with pytest.raises(NonFiniteError, match="document 0 holds NaN"):
        maxsim(np.ones((1, 4)), [np.full((2, 4), np.inf)])


def test_non_numeric_input_is_an_input_error() -> None:
    from pgembed.vectors import FDEEncoder, binary_quantize

    with pytest.raises(InputError, match="query is not a numeric array"):
        maxsim([["a", "b"]], [np.ones((1, 2))])
    with pytest.raises(InputError, match="document 1 is not a numeric array"):
        FDEEncoder().encode_document([np.ones((1, 384)), "text"])
    with pytest.raises(InputError, match="not a numeric array"):
        binary_quantize([[1.0, 2.0], [3.0]])
