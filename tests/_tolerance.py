"""Float comparisons whose tolerance scales with the magnitude of what was summed.

A float32 dot product of n terms carries a rounding error of about n * eps32 * sum|a_i b_i|,
however small the result: a relative tolerance alone fails on results near zero (0.0208
from terms of size 1 differs from its float64 closed form by 3e-7, i.e. 1.4e-5 relative).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def assert_sums_close(
    actual: Any, expected: Any, scale: Any, terms: int, rtol: float = 1e-6
) -> None:
    """Assert ``actual ≈ expected`` for float32 sums of ``terms`` products of total size ``scale``.

    ``scale`` is sum |a_i b_i| per element (or any upper bound of it); the absolute part of
    the tolerance is 2 * terms * eps32 * scale, the relative part ``rtol``.
    """
    atol = 2.0 * terms * EPS32 * np.asarray(scale, dtype=np.float64)
    diff = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    bound = atol + rtol * np.abs(np.asarray(expected, dtype=np.float64))
    bad = np.flatnonzero(np.ravel(diff > bound))
    assert bad.size == 0, (
        f"{bad.size} element(s) differ beyond float32 rounding; first at {int(bad[0])}: "
        f"{np.ravel(actual)[bad[0]]!r} vs {np.ravel(expected)[bad[0]]!r}, "
        f"bound {np.ravel(np.broadcast_to(bound, diff.shape))[bad[0]]:.3g}"
    )
