"""Dense (pooled) vectors: normalization, and Matryoshka prefixes (owned by pgembed.vectors)."""

from __future__ import annotations

import numpy as np

from pgembed._types import Float32Array
from pgembed.vectors.matryoshka import truncate


def l2_normalize(x: Float32Array, axis: int = -1) -> Float32Array:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    out: Float32Array = (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)
    return out


def matryoshka(x: Float32Array, dims: int | None) -> Float32Array:
    """The first ``dims`` coordinates of each row, renormalized (:func:`vectors.truncate`)."""
    if dims is None or dims == x.shape[-1]:
        return x
    return truncate(x, dims)
