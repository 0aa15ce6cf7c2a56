"""pgembed.vectors: pure-NumPy vector encodings (no database, onnxruntime or torch imports).

- :mod:`~pgembed.vectors.matryoshka`: prefix truncation with renormalization.
- :mod:`~pgembed.vectors.binary`: 1-bit sign codes, multi-bit residual codes, Hamming.
- :mod:`~pgembed.vectors.fde`: MUVERA fixed-dimensional encodings.
- :mod:`~pgembed.vectors.maxsim`: exact MaxSim (Chamfer), the multi-vector ground truth.
"""

from __future__ import annotations

from pgembed.vectors._checks import pack_token_sets
from pgembed.vectors.binary import (
    ResidualCode,
    binary_quantize,
    bit_text,
    bit_texts,
    hamming_distance,
    pack_bits,
    pack_residual,
    parse_bit_text,
    residual_decode,
    residual_distance,
    residual_encode,
    residual_from_packed,
    residual_inner_product,
    residual_packed,
    residual_score,
    residual_texts,
    unpack_bits,
)
from pgembed.vectors.fde import FDEConfig, FDEEncoder, partition_index, partition_sign_bits
from pgembed.vectors.matryoshka import truncate
from pgembed.vectors.maxsim import maxsim, maxsim_matrix, maxsim_packed, maxsim_topk

# Spelled out, not built from the submodules' __all__, so that readers and type checkers
# see every public name here.
__all__ = [
    "FDEConfig",
    "FDEEncoder",
    "ResidualCode",
    "binary_quantize",
    "bit_text",
    "bit_texts",
    "hamming_distance",
    "maxsim",
    "maxsim_matrix",
    "maxsim_packed",
    "maxsim_topk",
    "pack_bits",
    "pack_residual",
    "pack_token_sets",
    "parse_bit_text",
    "partition_index",
    "partition_sign_bits",
    "residual_decode",
    "residual_distance",
    "residual_encode",
    "residual_from_packed",
    "residual_inner_product",
    "residual_packed",
    "residual_score",
    "residual_texts",
    "truncate",
    "unpack_bits",
]
