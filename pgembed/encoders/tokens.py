"""Per-token vectors (multi-vectors) from the graph's token output (numpy only)."""

from __future__ import annotations

import numpy as np

from pgembed._types import Float32Array
from pgembed.encoders.dense import l2_normalize


def split_tokens(
    hidden: Float32Array,
    lengths: list[int],
    special: list[list[int]] | None,
) -> list[Float32Array]:
    """Rows of ``hidden`` (b, s, d) without padding, minus special tokens if ``special``.

    Each token vector is L2-normalized, so MaxSim is a sum of dot products.
    """
    out: list[Float32Array] = []
    for j, n in enumerate(lengths):
        rows = hidden[j, :n]
        if special is not None:
            keep = np.asarray(special[j][:n], dtype=bool)
            rows = rows[~keep]
        out.append(l2_normalize(np.array(rows, dtype=np.float32)))
    return out
