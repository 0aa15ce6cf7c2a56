"""Binary codes: 1-bit sign codes, multi-bit residual codes, Hamming and level distances.

**Bit order.** Everything here is big-endian within a byte (``np.packbits`` default):
bit i of a code is bit ``7 - i % 8`` of byte ``i // 8``. That is PostgreSQL's ``bit``
layout, and the text form ``'0101...'`` lists bit 0 first. pgvector's
``binary_quantize(v)`` sets bit i when ``v[i] > 0``; :func:`binary_quantize` does the same,
so ``binary_quantize(e)::bit(d)`` in SQL and here give the same bits.

**Residual codes** (after "Binary Embedding-based Retrieval at Tencent"): a b-bit code of
x is b sign vectors with one scale each. Level 0 is ``c_0 = sign(x)`` (+1 where x > 0,
else -1) with scale ``s_0 = mean |x|``; level i is the sign of the residual
``x - sum_{l<i} s_l c_l`` with scale ``s_i`` = mean |residual|. Mean-abs is the least
squares scale for a fixed sign vector (``<r, sign r> / d``), so each level removes as much
of the residual as a single scaled sign vector can, and the reconstruction error never
grows with b. Stored as ``bit(b*d)``: level 0's d bits first, then level 1's, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pgembed._types import Float32Array, Int64Array, UInt8Array
from pgembed.errors import DimensionError, InputError
from pgembed.vectors._checks import as_matrix, as_vectors, check_int

__all__ = [
    "MAX_RESIDUAL_BITS",
    "ResidualCode",
    "binary_quantize",
    "bit_text",
    "bit_texts",
    "hamming_distance",
    "pack_bits",
    "pack_residual",
    "parse_bit_text",
    "residual_decode",
    "residual_distance",
    "residual_encode",
    "residual_from_packed",
    "residual_inner_product",
    "residual_packed",
    "residual_score",
    "residual_texts",
    "unpack_bits",
]

MAX_RESIDUAL_BITS = 16
"""More levels than this only encode float32 rounding noise."""

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
# Cap on the (m, n, bytes) XOR block held at once by hamming_distance.
_BLOCK_ELEMENTS = 1 << 24


def _nbytes(n_bits: int) -> int:
    return (n_bits + 7) // 8


# --- 1-bit codes and bit text ------------------------------------------------------------


def pack_bits(bits: npt.ArrayLike) -> UInt8Array:
    """Pack booleans (..., n) into uint8 (..., ceil(n/8)), big-endian, zero-padded."""
    arr = np.asarray(bits)
    if arr.ndim == 0:
        raise DimensionError("pack_bits needs an array of bits, got a scalar")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise InputError("pack_bits takes booleans or 0/1 values only")
        arr = arr.astype(bool)
    return np.packbits(arr, axis=-1, bitorder="big")


def unpack_bits(packed: npt.ArrayLike, n_bits: int) -> npt.NDArray[np.bool_]:
    """Inverse of :func:`pack_bits`: uint8 (..., ceil(n/8)) → bool (..., n_bits)."""
    arr = np.asarray(packed)
    n_bits = check_int(n_bits, name="n_bits", low=0)
    if arr.dtype != np.uint8:
        raise InputError(f"packed codes must be uint8, got {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != _nbytes(n_bits):
        raise DimensionError(
            f"{n_bits} bits need {_nbytes(n_bits)} bytes per code, got shape {arr.shape}"
        )
    return np.unpackbits(arr, axis=-1, count=n_bits, bitorder="big").astype(bool)


def binary_quantize(x: npt.ArrayLike) -> UInt8Array:
    """pgvector's ``binary_quantize``, packed: bit i set where x[i] > 0.

    x (d,) → uint8 (ceil(d/8),); x (n, d) → uint8 (n, ceil(d/8)).
    """
    arr, single = as_vectors(x, name="binary_quantize input")
    packed = np.packbits(arr > 0, axis=-1, bitorder="big")
    return packed[0] if single else packed


def bit_text(bits: npt.ArrayLike) -> str:
    """pgvector/PostgreSQL ``bit`` text of one code (n,) of booleans: ``'0101...'``."""
    arr = np.asarray(bits)
    if arr.ndim != 1:
        raise DimensionError(f"bit_text takes one code of shape (n,), got {arr.shape}")
    return bit_texts(arr[None, :])[0]


def bit_texts(bits: npt.ArrayLike) -> list[str]:
    """``bit`` texts of a batch (m, n) of boolean codes."""
    arr = np.asarray(bits)
    if arr.ndim != 2:
        raise DimensionError(f"bit_texts takes codes of shape (m, n), got {arr.shape}")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise InputError("bit codes must be booleans or 0/1 values")
    chars = np.where(arr.astype(bool), np.uint8(ord("1")), np.uint8(ord("0"))).astype(np.uint8)
    blob = chars.tobytes().decode("ascii")
    n = arr.shape[1]
    return [blob[i * n : (i + 1) * n] for i in range(arr.shape[0])]


def parse_bit_text(text: str) -> npt.NDArray[np.bool_]:
    """Parse a ``bit`` text ``'0101...'`` into booleans (n,). InputError on other chars."""
    if not isinstance(text, str):
        raise InputError(f"bit text must be a str, got {type(text).__name__}")
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    bad = np.flatnonzero((raw != ord("0")) & (raw != ord("1")))
    if bad.size or len(raw) != len(text):
        pos = int(bad[0]) if bad.size else 0
        raise InputError(f"bit text may only hold '0' and '1'; found {text[pos]!r} at {pos}")
    return np.asarray(raw == ord("1"), dtype=np.bool_)


# --- Hamming distance --------------------------------------------------------------------


def _as_codes(codes: npt.ArrayLike, name: str) -> UInt8Array:
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise InputError(f"{name} must be packed uint8 codes, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionError(f"{name} must be (n_bytes,) or (n, n_bytes), got {arr.shape}")
    return arr


def hamming_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> Int64Array:
    """Hamming distances between packed codes: a (m, nb) or (nb,), b (n, nb) → int64 (m, n).

    XOR then a byte popcount table, in blocks of rows so memory stays bounded. Padding
    bits are zero in both (as :func:`pack_bits` writes them), so they never count.
    """
    qa, qb = _as_codes(a, "a"), _as_codes(b, "b")
    if qa.shape[1] != qb.shape[1]:
        raise DimensionError(f"codes differ in length: {qa.shape[1]} vs {qb.shape[1]} bytes")
    out = np.empty((qa.shape[0], qb.shape[0]), dtype=np.int64)
    rows = max(1, _BLOCK_ELEMENTS // max(1, qb.size))
    for start in range(0, qa.shape[0], rows):  # blocks of rows, not a loop per row
        xor = np.bitwise_xor(qa[start : start + rows, None, :], qb[None, :, :])
        out[start : start + rows] = _POPCOUNT[xor].sum(axis=-1, dtype=np.int64)
    return out


# --- multi-bit residual codes ------------------------------------------------------------


@dataclass(frozen=True)
class ResidualCode:
    """b-level residual sign codes of n vectors of d dims.

    Attributes:
        levels: uint8 (n, b, ceil(d/8)): level l of vector i packed big-endian.
        scales: float32 (n, b): the scale of each level.
        dim: d.
    """

    levels: UInt8Array
    scales: Float32Array
    dim: int

    def __post_init__(self) -> None:
        n, b = self.scales.shape
        if self.levels.shape != (n, b, _nbytes(self.dim)):
            raise DimensionError(
                f"levels shape {self.levels.shape} does not match scales {self.scales.shape} "
                f"and dim {self.dim}"
            )

    @property
    def bits(self) -> int:
        """b, the number of levels (bits per dimension)."""
        return int(self.scales.shape[1])

    def __len__(self) -> int:
        return int(self.scales.shape[0])

    def signs(self) -> Float32Array:
        """The level sign vectors as ±1 float32 (n, b, d)."""
        bits = np.unpackbits(self.levels, axis=-1, count=self.dim, bitorder="big")
        return bits.astype(np.float32) * 2.0 - 1.0


def residual_encode(x: npt.ArrayLike, bits: int) -> ResidualCode:
    """Encode vectors (n, d) (or one (d,)) into ``bits`` residual levels.

    Vectorized over the batch; the loop runs over the b levels only.
    """
    arr, _ = as_vectors(x, name="residual_encode input")
    b = check_int(bits, name="bits", low=1, high=MAX_RESIDUAL_BITS)
    n, d = arr.shape
    residual = arr.astype(np.float64)
    levels = np.empty((n, b, _nbytes(d)), dtype=np.uint8)
    scales = np.empty((n, b), dtype=np.float32)
    for level in range(b):
        positive = residual > 0
        scale = np.abs(residual).mean(axis=1)  # least-squares scale for sign(residual)
        levels[:, level] = np.packbits(positive, axis=-1, bitorder="big")
        scales[:, level] = scale
        # Subtract what the stored (float32) scale reconstructs, so decode matches exactly.
        residual -= np.where(positive, 1.0, -1.0) * scales[:, level, None].astype(np.float64)
    return ResidualCode(levels=levels, scales=scales, dim=d)


def residual_decode(code: ResidualCode) -> Float32Array:
    """Reconstruction ``sum_l scales[:, l] * signs[:, l]``: float32 (n, d)."""
    return np.asarray(np.einsum("nb,nbd->nd", code.scales, code.signs()), dtype=np.float32)


def residual_packed(code: ResidualCode) -> UInt8Array:
    """Packed ``bit(b*d)`` codes, levels concatenated (level 0 first): uint8 (n, ceil(b*d/8))."""
    bits = np.unpackbits(code.levels, axis=-1, count=code.dim, bitorder="big")
    return np.packbits(bits.reshape(len(code), code.bits * code.dim), axis=-1, bitorder="big")


def pack_residual(x: npt.ArrayLike, bits: int) -> UInt8Array:
    """Encode vectors (n, d) and return their packed ``bit(bits*d)`` codes (levels in order).

    Shorthand for ``residual_packed(residual_encode(x, bits))``; the scales are dropped, as
    Hamming search on the stored code does not need them.
    """
    return residual_packed(residual_encode(x, bits))


def residual_texts(code: ResidualCode) -> list[str]:
    """``bit(b*d)`` texts of the concatenated levels, one per vector."""
    bits = np.unpackbits(code.levels, axis=-1, count=code.dim, bitorder="big")
    return bit_texts(bits.reshape(len(code), code.bits * code.dim).astype(bool))


def residual_from_packed(packed: npt.ArrayLike, scales: npt.ArrayLike, dim: int) -> ResidualCode:
    """Rebuild a :class:`ResidualCode` from stored ``bit(b*d)`` codes and scales (n, b)."""
    sc = np.asarray(scales, dtype=np.float32)
    if sc.ndim == 1:
        sc = sc[None, :]
    if sc.ndim != 2:
        raise DimensionError(f"scales must be (n, b), got shape {sc.shape}")
    d = check_int(dim, name="dim", low=1)
    n, b = sc.shape
    flat = unpack_bits(np.asarray(packed).reshape(n, -1), b * d)
    levels = np.packbits(flat.reshape(n, b, d), axis=-1, bitorder="big")
    return ResidualCode(levels=levels, scales=sc, dim=d)


def _level_products(a: ResidualCode, b: ResidualCode) -> Float32Array:
    """<x̂_a, x̂_b> for every pair, from the codes alone: (len(a), len(b)).

    <c_i, c_j> = d - 2 * hamming(c_i, c_j) for ±1 vectors, so the inner product of two
    reconstructions is ``sum_{i,j} s_i s_j (d - 2 H_ij)``: a level-weighted sum of Hamming
    distances.
    """
    if a.dim != b.dim:
        raise DimensionError(f"codes differ in dim: {a.dim} vs {b.dim}")
    na, nb_, ba, bb = len(a), len(b), a.bits, b.bits
    ham = hamming_distance(a.levels.reshape(na * ba, -1), b.levels.reshape(nb_ * bb, -1))
    dots = (a.dim - 2 * ham).reshape(na, ba, nb_, bb).astype(np.float64)
    return np.asarray(np.einsum("ai,aibj,bj->ab", a.scales, dots, b.scales), dtype=np.float32)


def residual_inner_product(a: ResidualCode, b: ResidualCode) -> Float32Array:
    """Symmetric approximate inner product of every pair of codes: float32 (len(a), len(b))."""
    return _level_products(a, b)


def residual_distance(a: ResidualCode, b: ResidualCode) -> Float32Array:
    """Symmetric squared L2 distance between reconstructions, from the codes alone.

    ``|x̂|² + |ŷ|² - 2 <x̂, ŷ>``, each term a level-weighted sum of Hamming distances.
    """
    cross = _level_products(a, b).astype(np.float64)
    sa = np.einsum("ni,nij,nj->n", a.scales, _self_dots(a), a.scales)
    sb = np.einsum("ni,nij,nj->n", b.scales, _self_dots(b), b.scales)
    return np.asarray(np.maximum(sa[:, None] + sb[None, :] - 2.0 * cross, 0.0), dtype=np.float32)


def _self_dots(code: ResidualCode) -> npt.NDArray[np.float64]:
    """<c_i, c_j> between the levels of each code: (n, b, b)."""
    x = np.bitwise_xor(code.levels[:, :, None, :], code.levels[:, None, :, :])
    ham = _POPCOUNT[x].sum(axis=-1, dtype=np.int64)
    return np.asarray(code.dim - 2 * ham, dtype=np.float64)


def residual_score(query: npt.ArrayLike, code: ResidualCode) -> Float32Array:
    """Asymmetric inner product of float queries (m, d) (or (d,)) with codes: (m, n).

    ``q · x̂ = sum_l s_l (q · c_l)``: the rescoring step when the query stays float.
    """
    q = as_matrix(np.atleast_2d(np.asarray(query, dtype=np.float32)), name="query", dim=code.dim)
    per_level = np.einsum("md,nbd->mnb", q, code.signs())
    return np.asarray(np.einsum("mnb,nb->mn", per_level, code.scales), dtype=np.float32)
