"""Exact MaxSim (Chamfer similarity): the ground truth for every multi-vector search.

``maxsim(q, d) = sum over query tokens i of max over document tokens j of <q_i, d_j>``.

All documents are scored in one pass: their tokens are concatenated into one matrix, one
matmul gives every query-token/document-token dot product, and ``np.maximum.reduceat``
takes the per-document max over contiguous segments. Documents are processed in chunks
so the similarity matrix stays bounded in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pgembed._types import Float32Array, Int64Array
from pgembed.errors import DimensionError
from pgembed.vectors._checks import as_matrix, check_int, pack_token_sets

__all__ = ["maxsim", "maxsim_matrix", "maxsim_packed", "maxsim_topk", "pack_token_sets"]

# Cap on the float32 similarity block (query tokens x document tokens) held at once.
_BLOCK_ELEMENTS = 1 << 23

TokenSets = Sequence[npt.ArrayLike] | npt.NDArray[Any]


def maxsim_packed(query: npt.ArrayLike, flat: Float32Array, offsets: Int64Array) -> Float32Array:
    """MaxSim of one query (t, d) against documents packed by :func:`pack_token_sets`.

    ``flat`` holds every document's tokens, document ``i`` being
    ``flat[offsets[i]:offsets[i + 1]]`` (no empty documents). Returns float32 (n_docs,).
    """
    q = as_matrix(query, name="query", dim=flat.shape[1])
    q_offsets = np.array([0, q.shape[0]], dtype=np.int64)
    return np.asarray(maxsim_matrix_packed(q, q_offsets, flat, offsets)[0], dtype=np.float32)


def maxsim_matrix_packed(
    q_flat: Float32Array, q_offsets: Int64Array, flat: Float32Array, offsets: Int64Array
) -> Float32Array:
    """MaxSim of every packed query against every packed document: (n_queries, n_docs)."""
    if q_flat.shape[1] != flat.shape[1]:
        raise DimensionError(
            f"queries have {q_flat.shape[1]} dims per token, documents {flat.shape[1]}"
        )
    n_docs = len(offsets) - 1
    out = np.empty((len(q_offsets) - 1, n_docs), dtype=np.float32)
    tokens_per_chunk = max(1, _BLOCK_ELEMENTS // max(1, q_flat.shape[0]))
    # Chunk boundaries on whole documents, each chunk about tokens_per_chunk tokens.
    starts = np.searchsorted(offsets, np.arange(0, offsets[-1], tokens_per_chunk))
    bounds = np.unique(np.concatenate([starts, [n_docs]]))
    for a, b in itertools.pairwise(bounds):
        lo, hi = offsets[a], offsets[b]
        sims = q_flat @ flat[lo:hi].T  # (Q tokens, chunk tokens)
        per_doc = np.maximum.reduceat(sims, offsets[a:b] - lo, axis=1)  # (Q tokens, docs)
        out[:, a:b] = np.add.reduceat(per_doc, q_offsets[:-1], axis=0)
    return out


def maxsim(query: npt.ArrayLike, docs: TokenSets) -> Float32Array:
    """Exact MaxSim of one query (t, d) against each document (n_i, d): float32 (n_docs,)."""
    flat, offsets = pack_token_sets(docs, name="document")
    return maxsim_packed(query, flat, offsets)


def maxsim_matrix(queries: TokenSets, docs: TokenSets) -> Float32Array:
    """Exact MaxSim of every query against every document: float32 (n_queries, n_docs)."""
    q_flat, q_offsets = pack_token_sets(queries, name="query")
    flat, offsets = pack_token_sets(docs, dim=q_flat.shape[1], name="document")
    return maxsim_matrix_packed(q_flat, q_offsets, flat, offsets)


def topk_indices(scores: npt.NDArray[np.floating[Any]], k: int) -> Int64Array:
    """Indices of the k highest scores along the last axis, best first.

    Ties keep the lower index first, so rankings are reproducible.
    """
    n = scores.shape[-1]
    k = min(k, n)
    # Stable sort of the negated scores: descending, ties by index.
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return order.astype(np.int64)


def maxsim_topk(query: npt.ArrayLike, docs: TokenSets, k: int) -> tuple[Int64Array, Float32Array]:
    """Exact top-k documents by MaxSim: ``(indices, scores)``, best first.

    ``k`` larger than the number of documents returns them all. Ties rank the lower index
    first.
    """
    k = check_int(k, name="k", low=1)
    scores = maxsim(query, docs)
    idx = topk_indices(scores, k)
    return idx, scores[idx]
