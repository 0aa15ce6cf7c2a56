"""MUVERA fixed-dimensional encodings (FDE) of token sets.

Follows the reference algorithm, google/graph-mining
``sketching/point_cloud/fixed_dimensional_encoding.cc`` (arXiv 2405.19504). For each
repetition r = 0..R-1:

1. **SimHash partition.** ``sketch[j] = <x, simhash[r, :, j]>`` for j = 0..k-1, sign bits
   ``b_j = 1 if sketch[j] > 0 else 0``. The bits are read as a Gray code, exactly like the
   reference's ``AppendToGrayCode`` loop (``p = (p << 1) + (b_j XOR (p & 1))``)::

       c_j = b_0 XOR b_1 XOR ... XOR b_j            (prefix XOR)
       partition = sum_j c_j * 2**(k-1-j)           (b_0 is the most significant bit)

   i.e. ``partition`` is the binary number whose Gray code is the bit string
   ``b_0 b_1 ... b_{k-1}``. Conversely the sign bits of partition p are ``p XOR (p >> 1)``
   (the reference's misnamed ``GrayCodeToBinary``). Example, k = 3, bits 1 1 0:
   c = 1 0 0, partition 4; and 4 XOR 2 = 6 = 0b110 gives the bits back. With k = 0 every
   token lands in partition 0.
2. **Projection** to d_proj dims: identity (d_proj = d), or an AMS sketch, one ±1 entry per
   input dim: ``projected[t] = sum over j with ams_index[r, j] == t of ams_sign[r, j] * x[j]``.
   Like the reference (``AMSProjectionMatrixFromSeed``), there is **no** 1/sqrt(d_proj)
   scaling: the same sketch is applied to queries and documents, so a constant factor would
   only rescale every score.
3. **Aggregation.** Queries SUM their projected tokens per partition. Documents AVERAGE them.
4. **Empty document partitions** (``fill_empty_partitions``, documents only, k > 0) get the
   projected vector of the document token whose sign bits are nearest, in Hamming distance,
   to the partition's sign bits ``p XOR (p >> 1)``; ties go to the earliest token
   (the reference's ``DistanceToSimHashPartition`` scan with a strict ``<``).
5. The repetitions are concatenated, repetition-major, then partition, then projected dim:
   element ``(r * B + p) * d_proj + t`` with B = 2**k. An optional final count sketch maps
   this to D dims: ``out[final_index[i]] += final_sign[i] * fde[i]`` (no scaling either).

The random matrices live in :class:`FDEEncoder` and are stored by the database as plain
arrays (``simhash``, ``ams_index``, ``ams_sign``, ``final_index``, ``final_sign``), so a
SQL function reproduces the query FDE from the stored values, with no RNG to match. The
seeded generator uses only PCG64's raw 64-bit stream (stable across NumPy versions), see
:func:`_generate`.

Encoding is batched: all token sets are concatenated, one matmul computes every SimHash
sketch and every AMS projection of every repetition, and ``np.bincount`` scatter-adds the
projected tokens into their blocks. Empty-partition filling is a segment-min over
(Hamming distance, token position) keys. The same math in torch, on CPU or CUDA, lives in the
optional :mod:`pgembed.fde_torch`, so that this package never imports torch.

Defaults: R = 41, k_sim = 3 (8 partitions), d_proj = 12 (ams_sketch), no final projection
→ D = 3936, under the 4000 dims pgvector indexes as ``halfvec`` with HNSW. Measured on
MiniLM token vectors (special tokens dropped, tokens normalized) of gensim's
``lee_background`` corpus, queries = 134 sentences of gensim's ``lee.cor``, ground truth =
exact MaxSim. Recall = share of the exact top-10 found in the FDE top-N:

=============================================  =======  ========  ========  ===========
config (R, k_sim, d_proj → D)                  top-50   top-100   top-200   long docs*
=============================================  =======  ========  ========  ===========
41, 3, 12 → 3936 (default)                     0.799    0.922     0.981     0.913
40, 4, 16 → 10240 (no final projection)        0.828    0.934     0.986     --
40, 4, 16 → 10240 → count sketch 4000          0.722    0.857     0.959     0.863
100, 2, 16 → 6400 → count sketch 4000          0.820    0.923     0.984     0.922
31, 3, 16 → 3968                               0.799    0.902     0.977     0.907
20, 4, 8 → 2560                                0.623    0.772     0.904     --
=============================================  =======  ========  ========  ===========

Passages: 971 passages of 3 sentences (about 75 tokens). *long docs: the 300 whole
documents (about 197 tokens), top-50 of 300. Count-sketching a larger FDE down to 4000
costs recall (collisions add noise), so the default fits R * 2**k * d_proj under 4000
directly; k_sim = 3 beat k_sim = 4 at equal D on both passages and long documents, and its
matmul is also narrower (R * (k + d_proj) = 615 columns), hence faster. See
benchmarks/fde.py.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pgembed._types import Float32Array, Int64Array
from pgembed.errors import (
    DimensionError,
    FDEConfigError,
    InputError,
)
from pgembed.vectors._checks import pack_token_sets

# (flat tokens of whole sets, their offsets from 0, query?) -> float32 (n_sets, output_dim)
ChunkEncoder = Callable[[Float32Array, Int64Array, bool], Float32Array]

__all__ = [
    "MAX_SIMHASH_PROJECTIONS",
    "FDEConfig",
    "FDEEncoder",
    "partition_index",
    "partition_sign_bits",
]

Int32Array = npt.NDArray[np.int32]
Projection = Literal["identity", "ams_sketch"]

MAX_SIMHASH_PROJECTIONS = 30
"""Like the reference (which refuses >= 31): 2**30 partitions already is absurdly large."""

_INT32_MAX = 2**31 - 1
# Tokens encoded per chunk: bounds the (tokens x R x B) fill keys and the bincount indices.
_CHUNK_TOKENS = 8192
_CHUNK_FDE_ELEMENTS = 1 << 24
# Elements per slab of (candidate, partition) keys in the empty-partition fill.
_FILL_SLAB = 1 << 22
_MAGIC = b"PGEMBED-FDE\x00"
_FORMAT_VERSION = 1
_ARRAY_NAMES = ("simhash", "ams_index", "ams_sign", "final_index", "final_sign")
# Independent PCG64 streams per matrix, so changing one field never reshuffles another.
_STREAM_SIMHASH, _STREAM_AMS, _STREAM_FINAL = 1, 2, 3


def _config_error(field: str, value: object, message: str) -> FDEConfigError:
    err = FDEConfigError(f"FDEConfig.{field}={value!r}: {message}")
    # Machine-readable copies of the offending field, for callers that report it.
    setattr(err, "field", field)  # noqa: B010
    setattr(err, "value", value)  # noqa: B010
    return err


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


@dataclass(frozen=True)
class FDEConfig:
    """Parameters of a MUVERA fixed-dimensional encoding. Validated on construction.

    Attributes:
        dimension: input token dimension d (default 384, all-MiniLM-L6-v2).
        num_repetitions: independent repetitions R, concatenated (default 41).
        num_simhash_projections: SimHash bits k per repetition, 2**k partitions; 0..30
            (default 3).
        projection: per-token projection, ``"identity"`` (keep d dims) or ``"ams_sketch"``
            (default ``"ams_sketch"``).
        projection_dimension: d_proj of the AMS sketch (default 12); ignored for identity,
            whose block width is ``dimension``.
        fill_empty_partitions: fill empty document partitions from the nearest token
            (default True; never applied to queries).
        final_projection_dimension: D of the final count sketch, or None for no final
            projection (default None: the defaults already give 41 * 8 * 12 = 3936 dims,
            under the 4000 a halfvec HNSW index takes).
        seed: seed of the random matrices, 0 <= seed < 2**63 (default 42).
    """

    dimension: int = 384
    num_repetitions: int = 41
    num_simhash_projections: int = 3
    projection: Projection = "ams_sketch"
    projection_dimension: int = 12
    fill_empty_partitions: bool = True
    final_projection_dimension: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("dimension", "num_repetitions", "projection_dimension"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _config_error(name, value, "must be an integer >= 1")
        k = self.num_simhash_projections
        if not _is_int(k) or not 0 <= k <= MAX_SIMHASH_PROJECTIONS:
            raise _config_error(
                "num_simhash_projections",
                k,
                f"must be an integer in [0, {MAX_SIMHASH_PROJECTIONS}] (2**k partitions)",
            )
        if self.projection not in ("identity", "ams_sketch"):
            raise _config_error("projection", self.projection, "must be 'identity' or 'ams_sketch'")
        if not isinstance(self.fill_empty_partitions, bool | np.bool_):
            raise _config_error(
                "fill_empty_partitions", self.fill_empty_partitions, "must be a bool"
            )
        final = self.final_projection_dimension
        if final is not None and (not _is_int(final) or not 1 <= final <= _INT32_MAX):
            raise _config_error(
                "final_projection_dimension",
                final,
                f"must be None or an integer in [1, {_INT32_MAX}]",
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise _config_error("seed", self.seed, "must be an integer in [0, 2**63)")
        if self.intermediate_dim > _INT32_MAX:
            raise _config_error(
                "num_repetitions",
                self.num_repetitions,
                f"R * 2**k * d_proj = {self.intermediate_dim} exceeds {_INT32_MAX}",
            )

    @property
    def num_partitions(self) -> int:
        """B = 2**num_simhash_projections."""
        return 1 << int(self.num_simhash_projections)

    @property
    def block_dim(self) -> int:
        """Width of one partition block: d_proj, or d for the identity projection."""
        return int(self.dimension if self.projection == "identity" else self.projection_dimension)

    @property
    def intermediate_dim(self) -> int:
        """R * B * block_dim: the FDE length before the final projection."""
        return int(self.num_repetitions) * self.num_partitions * self.block_dim

    @property
    def output_dim(self) -> int:
        """Length of the encodings: final_projection_dimension, else intermediate_dim."""
        final = self.final_projection_dimension
        return int(final) if final is not None else self.intermediate_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields (ints as Python ints)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, np.integer):
                out[k] = int(v)
            elif isinstance(v, np.bool_):
                out[k] = bool(v)
        return out


# --- Gray-code partitions ----------------------------------------------------------------


def _codes_from_sketch(sketch: npt.NDArray[Any]) -> Int64Array:
    """Sign bits of (..., k) sketches packed MSB-first (b_0 highest) into int64 (...)."""
    k = sketch.shape[-1]
    code = np.zeros(sketch.shape[:-1], dtype=np.int64)
    for j in range(k):  # loop over bits (k <= 30), each pass vectorized over all tokens
        code = (code << 1) | (sketch[..., j] > 0)
    return code


def _gray_decode(code: Int64Array) -> Int64Array:
    """Binary value whose Gray code is ``code``: XOR of all right shifts (prefix XOR)."""
    p = code.copy()
    shift = 1
    while shift < 32:
        p ^= p >> shift
        shift <<= 1
    return p


def partition_index(sketch: npt.ArrayLike) -> Int64Array:
    """Partition of each (..., k) SimHash sketch, read as a Gray code like the reference.

    ``partition = sum_j c_j * 2**(k-1-j)`` with ``c_j = b_0 XOR ... XOR b_j`` and
    ``b_j = sketch[j] > 0``. Example: bits (1, 1, 0) → c = (1, 0, 0) → 4.
    """
    arr = np.asarray(sketch)
    if arr.ndim == 0:
        raise DimensionError("partition_index needs sketches of shape (..., k)")
    return _gray_decode(_codes_from_sketch(arr))


def partition_sign_bits(partition: npt.ArrayLike, k: int) -> npt.NDArray[np.bool_]:
    """Sign bits (..., k) of the tokens that fall in ``partition``: ``p XOR (p >> 1)``."""
    p = np.asarray(partition, dtype=np.int64)
    gray = p ^ (p >> 1)
    shifts = np.arange(k - 1, -1, -1, dtype=np.int64)
    return ((gray[..., None] >> shifts) & 1).astype(bool)


def _popcount(x: Int64Array) -> Int64Array:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    out = np.zeros_like(x)
    y = x.copy()
    while y.any():  # at most k passes
        out += y & 1
        y >>= 1
    return out


# --- random matrices ---------------------------------------------------------------------


def _raw(seed: int, stream: int, n: int) -> npt.NDArray[np.uint64]:
    bits = np.random.PCG64(np.random.SeedSequence([int(seed), stream]))
    return np.asarray(bits.random_raw(n), dtype=np.uint64)


def _gaussian(seed: int, stream: int, n: int) -> Float32Array:
    """n standard normals by Box-Muller from raw 53-bit uniforms in (0, 1)."""
    pairs = (n + 1) // 2
    raw = _raw(seed, stream, 2 * pairs)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(u[0::2]))
    angle = 2.0 * np.pi * u[1::2]
    z = np.empty(2 * pairs, dtype=np.float64)
    z[0::2] = radius * np.cos(angle)
    z[1::2] = radius * np.sin(angle)
    return z[:n].astype(np.float32)


def _index_and_sign(seed: int, stream: int, n: int, high: int) -> tuple[Int32Array, Float32Array]:
    """n indices in [0, high) (multiply-shift of the top 32 bits) and ±1 signs (low bit)."""
    raw = _raw(seed, stream, n)
    index = ((raw >> np.uint64(32)) * np.uint64(high)) >> np.uint64(32)
    sign = (raw & np.uint64(1)).astype(np.float32) * 2.0 - 1.0
    return index.astype(np.int32), sign.astype(np.float32)


def _generate(cfg: FDEConfig) -> dict[str, npt.NDArray[Any] | None]:
    """The seeded matrices. Raw PCG64 output only, so they do not depend on NumPy's
    distribution code; Gaussians are Box-Muller in float64, rounded to float32."""
    r, d, k = int(cfg.num_repetitions), int(cfg.dimension), int(cfg.num_simhash_projections)
    seed = int(cfg.seed)
    out: dict[str, npt.NDArray[Any] | None] = dict.fromkeys(_ARRAY_NAMES)
    out["simhash"] = _gaussian(seed, _STREAM_SIMHASH, r * d * k).reshape(r, d, k)
    if cfg.projection == "ams_sketch":
        index, sign = _index_and_sign(seed, _STREAM_AMS, r * d, cfg.block_dim)
        out["ams_index"], out["ams_sign"] = index.reshape(r, d), sign.reshape(r, d)
    if cfg.final_projection_dimension is not None:
        out["final_index"], out["final_sign"] = _index_and_sign(
            seed, _STREAM_FINAL, cfg.intermediate_dim, cfg.output_dim
        )
    return out


# --- the encoder -------------------------------------------------------------------------


class FDEEncoder:
    """An :class:`FDEConfig` with its random matrices materialized.

    Array attributes (what the database stores; the SQL ``fde_query`` is written against
    them), with R repetitions, d input dims, k SimHash bits, B = 2**k, d_proj = block_dim:

    - ``simhash``: float32 (R, d, k), Gaussian. Sketch of token x in repetition r:
      ``x @ simhash[r]``.
    - ``ams_index``: int32 (R, d) in [0, d_proj), ``ams_sign``: float32 (R, d) of ±1;
      None for the identity projection. ``projected[r, ams_index[r, j]] += ams_sign[r, j]
      * x[j]``.
    - ``final_index``: int32 (R*B*d_proj,) in [0, D), ``final_sign``: float32 (R*B*d_proj,)
      of ±1; None without final projection. ``out[final_index[i]] += final_sign[i] *
      fde[i]``.
    """

    config: FDEConfig
    simhash: Float32Array
    ams_index: Int32Array | None
    ams_sign: Float32Array | None
    final_index: Int32Array | None
    final_sign: Float32Array | None

    def __init__(self, config: FDEConfig | None = None) -> None:
        cfg = config if config is not None else FDEConfig()
        if not isinstance(cfg, FDEConfig):
            raise InputError(f"config must be an FDEConfig, got {type(cfg).__name__}")
        self._assign(cfg, _generate(cfg))

    @classmethod
    def from_arrays(
        cls,
        config: FDEConfig,
        *,
        simhash: npt.ArrayLike,
        ams_index: npt.ArrayLike | None = None,
        ams_sign: npt.ArrayLike | None = None,
        final_index: npt.ArrayLike | None = None,
        final_sign: npt.ArrayLike | None = None,
    ) -> FDEEncoder:
        """An encoder from stored matrices (e.g. read back from ``pgembed.fde_configs``).

        Shapes, dtypes, index ranges and signs are checked against ``config``.
        """
        self = cls.__new__(cls)
        arrays = {
            "simhash": simhash,
            "ams_index": ams_index,
            "ams_sign": ams_sign,
            "final_index": final_index,
            "final_sign": final_sign,
        }
        self._assign(config, arrays)
        return self

    def _assign(self, cfg: FDEConfig, arrays: dict[str, Any]) -> None:
        r, d, k = int(cfg.num_repetitions), int(cfg.dimension), int(cfg.num_simhash_projections)
        ams = cfg.projection == "ams_sketch"
        final = cfg.final_projection_dimension is not None
        expect: dict[str, tuple[tuple[int, ...], type[np.generic], int | None] | None] = {
            "simhash": ((r, d, k), np.float32, None),
            "ams_index": ((r, d), np.int32, cfg.block_dim) if ams else None,
            "ams_sign": ((r, d), np.float32, None) if ams else None,
            "final_index": ((cfg.intermediate_dim,), np.int32, cfg.output_dim) if final else None,
            "final_sign": ((cfg.intermediate_dim,), np.float32, None) if final else None,
        }
        checked: dict[str, npt.NDArray[Any] | None] = {}
        for name, spec in expect.items():
            value = arrays.get(name)
            if spec is None:
                if value is not None:
                    raise InputError(f"{name} must be None for this config ({cfg})")
                checked[name] = None
                continue
            if value is None:
                raise InputError(f"{name} is required for this config ({cfg})")
            shape, dtype, high = spec
            raw = np.asarray(value)
            if raw.shape != shape:
                raise DimensionError(f"{name} has shape {raw.shape}, expected {shape}")
            arr = np.ascontiguousarray(raw, dtype=dtype)
            if not np.array_equal(arr, raw, equal_nan=True):
                raise InputError(f"{name} does not fit dtype {np.dtype(dtype).name} losslessly")
            if dtype is np.float32 and not np.isfinite(arr).all():
                raise InputError(f"{name} holds NaN or infinity")
            if high is not None and arr.size and (arr.min() < 0 or arr.max() >= high):
                raise InputError(
                    f"{name} values must be in [0, {high}), got {arr.min()}..{arr.max()}"
                )
            if name.endswith("_sign") and not np.isin(arr, (-1.0, 1.0)).all():
                raise InputError(f"{name} must hold only -1 and +1")
            arr.setflags(write=False)  # shared with cached derived matrices
            checked[name] = arr
        self.config = cfg
        simhash = checked["simhash"]
        assert simhash is not None  # always expected above
        self.simhash = simhash
        self.ams_index = checked["ams_index"]
        self.ams_sign = checked["ams_sign"]
        self.final_index = checked["final_index"]
        self.final_sign = checked["final_sign"]
        self._weights: Float32Array | None = None

    # --- properties and comparisons ---

    @property
    def output_dim(self) -> int:
        """Length of the encodings (``config.output_dim``)."""
        return self.config.output_dim

    def arrays(self) -> dict[str, npt.NDArray[Any] | None]:
        """The stored matrices by attribute name (None where the config has none)."""
        return {name: getattr(self, name) for name in _ARRAY_NAMES}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FDEEncoder):
            return NotImplemented
        if self.config != other.config:
            return False
        mine, theirs = self.arrays(), other.arrays()
        return all(
            (a is None and b is None)
            or (a is not None and b is not None and a.dtype == b.dtype and np.array_equal(a, b))
            for a, b in ((mine[n], theirs[n]) for n in _ARRAY_NAMES)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FDEEncoder({self.config!r}, output_dim={self.output_dim})"

    # --- serialization ---

    def to_bytes(self) -> bytes:
        """Lossless binary form: magic, version, JSON header (config, array specs), arrays.

        Arrays are raw little-endian C-order buffers, so the bytes are identical across
        processes and machines for the same matrices.
        """
        specs = []
        payload = []
        for name in _ARRAY_NAMES:
            arr = getattr(self, name)
            if arr is None:
                continue
            le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            specs.append({"name": name, "dtype": le.dtype.str, "shape": list(le.shape)})
            payload.append(le.tobytes())
        header = json.dumps(
            {"config": self.config.to_dict(), "arrays": specs}, sort_keys=True
        ).encode()
        return b"".join(
            [_MAGIC, struct.pack("<II", _FORMAT_VERSION, len(header)), header, *payload]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> FDEEncoder:
        """Inverse of :meth:`to_bytes`; InputError on anything malformed or truncated."""
        buf = memoryview(bytes(data))
        head = len(_MAGIC) + 8
        if len(buf) < head or bytes(buf[: len(_MAGIC)]) != _MAGIC:
            raise InputError("not a pgembed FDE encoder blob (bad magic bytes)")
        version, header_len = struct.unpack("<II", buf[len(_MAGIC) : head])
        if version != _FORMAT_VERSION:
            raise InputError(f"unsupported FDE blob version {version}, expected {_FORMAT_VERSION}")
        try:
            header = json.loads(bytes(buf[head : head + header_len]))
            config = FDEConfig(**header["config"])
            specs = header["arrays"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"corrupt FDE blob header: {exc}") from exc
        pos = head + header_len
        arrays: dict[str, npt.NDArray[Any]] = {}
        for spec in specs:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if pos + nbytes > len(buf):
                raise InputError(f"truncated FDE blob: array {spec['name']} is cut short")
            arrays[spec["name"]] = np.frombuffer(buf[pos : pos + nbytes], dtype=dtype).reshape(
                shape
            )
            pos += nbytes
        if pos != len(buf):
            raise InputError(f"FDE blob has {len(buf) - pos} trailing bytes")
        unknown = set(arrays) - set(_ARRAY_NAMES)
        if unknown:
            raise InputError(f"FDE blob holds unknown arrays {sorted(unknown)}")
        return cls.from_arrays(config, **arrays)

    # --- encoding ---

    def _weight_matrix(self) -> Float32Array:
        """All SimHash and AMS columns of every repetition as one (rows, d) matrix.

        Row j*R + r is simhash[r, :, j]; row R*k + t*R + r is the AMS sketch of repetition
        r onto dim t. Transposed and bit/dim-major so that ``W @ x.T`` hands out contiguous
        (R, n_tokens) slabs per SimHash bit and per projected dim. Dense, because one BLAS
        matmul beats a sparse gather.
        """
        if self._weights is None:
            cfg = self.config
            r, d, k = cfg.num_repetitions, cfg.dimension, cfg.num_simhash_projections
            sim = self.simhash.transpose(2, 0, 1).reshape(k * r, d)
            if self.ams_index is None or self.ams_sign is None:
                self._weights = np.array(sim, dtype=np.float32, order="C")  # own, writable copy
            else:
                dp = cfg.block_dim
                ams = np.zeros((dp, r, d), dtype=np.float32)
                reps = np.broadcast_to(np.arange(r)[:, None], (r, d))
                dims = np.broadcast_to(np.arange(d)[None, :], (r, d))
                ams[self.ams_index, reps, dims] = self.ams_sign
                self._weights = np.ascontiguousarray(
                    np.concatenate([sim, ams.reshape(dp * r, d)], axis=0)
                )
        return self._weights

    def partitions(self, tokens: npt.ArrayLike) -> Int64Array:
        """Partition of every token in every repetition: int64 (n_tokens, R)."""
        flat, _ = pack_token_sets([tokens], dim=self.config.dimension, name="token set")
        sketch = np.einsum("nd,rdk->nrk", flat, self.simhash)
        return partition_index(sketch)

    def encode_query(self, token_sets: Sequence[npt.ArrayLike] | npt.NDArray[Any]) -> Float32Array:
        """Query FDEs: tokens SUMmed per partition, never filled. float32 (n, output_dim).

        ``token_sets`` is a list of (n_i, d) arrays (or a 3-D array). An empty set raises
        EmptyInputError (a zero query vector would silently match nothing). The same math
        runs on CPU or CUDA with torch in :mod:`pgembed.fde_torch`.
        """
        return self._encode(token_sets, query=True)

    def encode_document(
        self, token_sets: Sequence[npt.ArrayLike] | npt.NDArray[Any]
    ) -> Float32Array:
        """Document FDEs: tokens AVERAGEd per partition, empty partitions filled (when
        configured) from the nearest token. float32 (n, output_dim).

        An empty document raises EmptyInputError: it has no FDE to fill from, and storing
        a zero vector would make it unreachable by inner product anyway.
        """
        return self._encode(token_sets, query=False)

    def _encode(
        self,
        token_sets: Sequence[npt.ArrayLike] | npt.NDArray[Any],
        *,
        query: bool,
        chunk: ChunkEncoder | None = None,
    ) -> Float32Array:
        """Encode in chunks of whole token sets with ``chunk`` (default: the NumPy one)."""
        kind = "query" if query else "document"
        flat, offsets = pack_token_sets(token_sets, dim=self.config.dimension, name=kind)
        n = len(offsets) - 1
        out = np.empty((n, self.output_dim), dtype=np.float32)
        # Chunks of whole token sets, about _CHUNK_TOKENS tokens each (a Python loop per
        # chunk, not per set).
        starts = np.searchsorted(offsets, np.arange(0, offsets[-1], _CHUNK_TOKENS))
        # ...and few enough sets that their float64 FDE blocks stay bounded too.
        per_chunk = max(1, _CHUNK_FDE_ELEMENTS // self.config.intermediate_dim)
        bounds = np.unique(np.concatenate([starts, np.arange(0, n, per_chunk), [n]]))
        encode = chunk or self._encode_chunk
        for a, b in itertools.pairwise(bounds):
            lo, hi = offsets[a], offsets[b]
            out[a:b] = encode(flat[lo:hi], offsets[a : b + 1] - lo, query)
        return out

    def _encode_chunk(self, x: Float32Array, offs: Int64Array, query: bool) -> Float32Array:
        cfg = self.config
        r, k, dp = cfg.num_repetitions, cfg.num_simhash_projections, cfg.block_dim
        nb = cfg.num_partitions
        n_tok, m = x.shape[0], len(offs) - 1
        n_blocks = m * r * nb
        doc = np.repeat(np.arange(m, dtype=np.int64), np.diff(offs))
        y = self._weight_matrix() @ x.T  # every sketch and projection: one matmul
        sketch = y[: k * r].reshape(k, r, n_tok)
        code = np.zeros((r, n_tok), dtype=np.int64)  # sign bits, b_0 most significant
        for j in range(k):
            code = (code << 1) | (sketch[j] > 0)
        part = _gray_decode(code)
        # Block of each (repetition, token): (set * R + r) * B + partition.
        block = ((doc[None, :] * r + np.arange(r, dtype=np.int64)[:, None]) * nb + part).ravel()
        if self.ams_index is None:
            proj = np.broadcast_to(x.T[:, None, :], (dp, r, n_tok))
        else:
            proj = y[k * r :].reshape(dp, r, n_tok)
        fde = np.empty((n_blocks, dp), dtype=np.float64)
        for t in range(dp):  # one scatter-add per projected dim, over all tokens at once
            fde[:, t] = np.bincount(block, weights=proj[t].ravel(), minlength=n_blocks)
        if not query:
            counts = np.bincount(block, minlength=n_blocks)
            fde /= np.maximum(counts, 1)[:, None]
            if cfg.fill_empty_partitions and k > 0:
                empty = np.flatnonzero(counts == 0)
                if empty.size:
                    tok = self._nearest_tokens(block, code, doc, offs)[empty]  # (n_empty,)
                    rep = (empty // nb) % r
                    fde[empty] = proj[:, rep, tok].T
        flat_fde = fde.reshape(m, -1)
        if self.final_index is None or self.final_sign is None:
            return flat_fde.astype(np.float32)
        dim = cfg.output_dim
        index = (np.arange(m, dtype=np.int64)[:, None] * dim + self.final_index).ravel()
        out = np.bincount(index, weights=(flat_fde * self.final_sign).ravel(), minlength=m * dim)
        return out.reshape(m, dim).astype(np.float32)

    def _nearest_tokens(
        self, block: Int64Array, code: Int64Array, doc: Int64Array, offs: Int64Array
    ) -> Int64Array:
        """Fill source of every (set, repetition, partition) block, as a token row.

        The reference scans the set's tokens in order and keeps the first with the fewest
        sign bits differing from the partition's (``p XOR (p >> 1)``). Minimizing the key
        ``distance * span + position in the set`` gives exactly that token. Two equivalent
        ways, whichever touches fewer (candidate, partition) pairs:

        - by partition: tokens of one non-empty partition q all sit at distance
          popcount(gray(q) XOR gray(p)) from p, so only the first token of each q competes;
        - by token: every token competes (cheaper when sets are short and B large).

        Partitions are processed in slabs so memory stays bounded for large k.
        """
        cfg = self.config
        r, nb = cfg.num_repetitions, cfg.num_partitions
        m, n_tok = len(offs) - 1, doc.shape[0]
        local = np.arange(n_tok, dtype=np.int64) - offs[doc]
        span = int(np.diff(offs).max()) + 1  # above every position: key = dist * span + pos
        parts = np.arange(nb, dtype=np.int64)
        gray = parts ^ (parts >> 1)
        best = np.empty((m, r, nb), dtype=np.int64)  # position in the set
        if n_tok <= m * nb:
            step = max(1, _FILL_SLAB // max(1, r * n_tok))
            for p0 in range(0, nb, step):  # slabs of partitions, not a loop per token
                dist = _popcount(code[:, :, None] ^ gray[p0 : p0 + step])  # (R, n_tok, slab)
                key = dist * span + local[None, :, None]
                seg = np.minimum.reduceat(key, offs[:-1], axis=1)  # (R, set, slab)
                best[:, :, p0 : p0 + step] = seg.transpose(1, 0, 2) % span
        else:
            first = np.full(m * r * nb, span, dtype=np.int64)
            np.minimum.at(first, block, np.broadcast_to(local, (r, n_tok)).ravel())
            first_q = first.reshape(m * r, nb, 1)
            missing = first_q == span  # empty partitions offer no token
            flat_best = best.reshape(m * r, nb)
            step = max(1, _FILL_SLAB // max(1, m * r * nb))
            for p0 in range(0, nb, step):
                dist = _popcount(gray[:, None] ^ gray[None, p0 : p0 + step])  # (q, slab)
                key = np.where(missing, np.iinfo(np.int64).max, dist * span + first_q)
                flat_best[:, p0 : p0 + step] = key.min(axis=1) % span
        return np.asarray((offs[:-1, None, None] + best).ravel(), dtype=np.int64)
