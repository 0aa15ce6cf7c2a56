"""Dense (pooled) vectors: normalization and Matryoshka prefixes (numpy only)."""

from __future__ import annotations

import numpy as np

from pgembed._types import Float32Array
from pgembed.errors import DimensionError


def l2_normalize(x: Float32Array, axis: int = -1) -> Float32Array:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    out: Float32Array = (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)
    return out


def check_dims(dims: int | None, dim: int) -> None:
    if dims is None:
        return
    if isinstance(dims, bool) or not isinstance(dims, int | np.integer):
        raise DimensionError(f"dims must be an int, got {type(dims).__name__}: {dims!r}")
    if not 1 <= dims <= dim:
        raise DimensionError(f"dims={dims} is outside 1..{dim}, the model's dimension")


def matryoshka(x: Float32Array, dims: int | None) -> Float32Array:
    """The first ``dims`` coordinates of each row, renormalized to unit length."""
    if dims is None or dims == x.shape[-1]:
        return x
    return l2_normalize(np.ascontiguousarray(x[..., :dims]))
