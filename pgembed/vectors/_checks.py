"""Input checks shared by the vector encodings.

Every public function in ``pgembed.vectors`` funnels its input through these helpers, so
bad input fails the same way everywhere: a :class:`~pgembed.errors.PgembedError` subclass
whose message names the argument, the offending index and the shapes involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pgembed._types import Float32Array, Int64Array
from pgembed.errors import DimensionError, EmptyInputError, InputError, NonFiniteError


def to_float32(x: object, *, name: str) -> Float32Array:
    """``x`` as a C-contiguous float32 array, or InputError when it is not numeric."""
    try:
        return np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:  # strings, ragged nesting, objects
        raise InputError(f"{name} is not a numeric array: {exc}") from exc


def as_matrix(x: npt.ArrayLike, *, name: str, dim: int | None = None) -> Float32Array:
    """``x`` as a C-contiguous float32 (n, d) array, finite and non-empty."""
    arr = to_float32(x, name=name)
    if arr.ndim != 2:
        raise DimensionError(f"{name} must be a 2-D (n, d) array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise EmptyInputError(f"{name} is empty (0 rows); nothing to encode")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(f"{name} has {arr.shape[1]} dims per vector, expected {dim}")
    check_finite(arr, name=name)
    return arr


def as_vectors(x: npt.ArrayLike, *, name: str) -> tuple[Float32Array, bool]:
    """``x`` as float32 (n, d) plus whether it was a single (d,) vector."""
    arr = to_float32(x, name=name)
    if arr.ndim == 1:
        return as_matrix(arr[None, :], name=name), True
    return as_matrix(arr, name=name), False


def check_finite(arr: npt.NDArray[Any], *, name: str) -> None:
    """Raise NonFiniteError naming the first row that holds NaN or infinity."""
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise NonFiniteError(
            f"{name} holds NaN or infinity (first at index {tuple(int(i) for i in bad)})"
        )


def pack_token_sets(
    token_sets: Sequence[npt.ArrayLike] | npt.NDArray[Any],
    *,
    dim: int | None = None,
    name: str = "token set",
) -> tuple[Float32Array, Int64Array]:
    """Concatenate variable-length token sets into one matrix plus row offsets.

    Returns ``(flat, offsets)``: ``flat`` is float32 (N, d) with every set's rows in order,
    and set ``i`` is ``flat[offsets[i]:offsets[i + 1]]``. A 3-D array (n, t, d) counts as n
    sets of t tokens. A bare 2-D array is refused: it is ambiguous (one set, or n sets of one
    token?), so wrap a single set in a list.

    Raises EmptyInputError for an empty batch or an empty set, DimensionError for a set that
    is not 2-D or whose width differs from ``dim`` (or from the first set), NonFiniteError
    for NaN/inf.
    """
    if isinstance(token_sets, np.ndarray):
        if token_sets.ndim != 3:
            raise DimensionError(
                f"expected a list of (n_i, d) {name}s or a 3-D (n, t, d) array, got an array "
                f"of shape {token_sets.shape}; wrap a single {name} in a list"
            )
        n, t, d = token_sets.shape
        if n == 0:
            raise EmptyInputError(f"the batch of {name}s is empty")
        if t == 0:
            raise EmptyInputError(f"{name} 0 is empty (0 tokens)")
        if dim is not None and d != dim:
            raise DimensionError(f"{name} 0 has {d} dims per token, expected {dim}")
        flat = np.ascontiguousarray(token_sets.reshape(n * t, d), dtype=np.float32)
        offsets = np.arange(0, n * t + 1, t, dtype=np.int64)
    else:
        sets = [to_float32(s, name=f"{name} {i}") for i, s in enumerate(token_sets)]
        if not sets:
            raise EmptyInputError(f"the batch of {name}s is empty")
        width = dim if dim is not None else (sets[0].shape[-1] if sets[0].ndim == 2 else None)
        for i, s in enumerate(sets):  # shape checks only; the math below is vectorized
            if s.ndim != 2:
                raise DimensionError(f"{name} {i} must be 2-D (n_tokens, d), got shape {s.shape}")
            if s.shape[0] == 0:
                raise EmptyInputError(f"{name} {i} is empty (0 tokens)")
            if s.shape[1] != width:
                raise DimensionError(
                    f"{name} {i} has {s.shape[1]} dims per token, expected {width}"
                )
        flat = np.ascontiguousarray(np.concatenate(sets, axis=0), dtype=np.float32)
        offsets = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum([s.shape[0] for s in sets], out=offsets[1:])
    if not np.isfinite(flat).all():
        row = int(np.argwhere(~np.isfinite(flat))[0, 0])
        which = int(np.searchsorted(offsets, row, side="right")) - 1
        raise NonFiniteError(
            f"{name} {which} holds NaN or infinity (token {row - int(offsets[which])})"
        )
    return flat, offsets


def check_int(value: object, *, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name} must be {bound}, got {v}")
    return v
