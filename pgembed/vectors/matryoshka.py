"""Matryoshka prefixes: keep the first ``dims`` coordinates, then renormalize.

Matryoshka-trained models put the most information in the leading dims, so a prefix is a
usable embedding of its own once rescaled to unit length (cosine and inner product then
agree again). The database side indexes ``subvector(e, 1, m)::halfvec(m)``; this is the
same prefix on the Python side.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pgembed._types import Float32Array
from pgembed.errors import DimensionError, InputError
from pgembed.vectors._checks import as_vectors

__all__ = ["check_prefix", "truncate"]


def check_prefix(dims: object, d: int) -> None:
    """Raise DimensionError unless ``dims`` is an integer prefix length in [1, d]."""
    if isinstance(dims, bool) or not isinstance(dims, int | np.integer):
        raise DimensionError(f"dims must be an integer in 1..{d}, got {dims!r}")
    if not 1 <= dims <= d:
        raise DimensionError(
            f"dims={dims} is outside 1..{d}, the dimension of the vectors; pass a prefix "
            "length in that range"
        )


def truncate(x: npt.ArrayLike, dims: int, *, normalize: bool = True) -> Float32Array:
    """The first ``dims`` coordinates of a vector (d,) or a batch (n, d), unit-normalized.

    Returns float32 with the input's shape except the last axis, which becomes ``dims``.
    Raises DimensionError when ``dims`` is not in [1, d], NonFiniteError for NaN/inf, and
    InputError when a prefix is all zeros and so has no direction to normalize (pass
    ``normalize=False`` to get the raw prefix).
    """
    arr, single = as_vectors(x, name="matryoshka input")
    check_prefix(dims, arr.shape[1])
    prefix = np.array(arr[:, :dims], dtype=np.float32)
    if normalize:
        # float64 norms: float32 squares of large coordinates could overflow to inf.
        norms = np.linalg.norm(prefix.astype(np.float64), axis=1)
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise InputError(
                f"the {dims}-dim prefix of row {int(zero[0])} is all zeros and cannot be "
                "normalized; use normalize=False"
            )
        prefix = (prefix / norms[:, None]).astype(np.float32)
    return prefix[0] if single else prefix
