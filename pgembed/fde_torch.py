"""MUVERA FDEs computed with torch, on CPU or CUDA: the same math as :mod:`pgembed.vectors.fde`.

Optional: torch is imported only when these functions run, and ``pgembed.vectors`` never
imports this module (it stays NumPy only). The results equal the NumPy encoder's within
float32 rounding (tests/vectors/test_vectors_fde.py).

>>> from pgembed import fde_torch
>>> fde_torch.encode_document(FDEEncoder(cfg), token_sets, device="cuda")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pgembed._types import Float32Array, Int64Array
from pgembed.errors import DeviceUnavailableError
from pgembed.vectors.fde import ChunkEncoder, FDEConfig, FDEEncoder

__all__ = ["encode_document", "encode_query"]


def encode_query(
    enc: FDEEncoder, token_sets: Sequence[npt.ArrayLike] | npt.NDArray[Any], *, device: str
) -> Float32Array:
    """:meth:`FDEEncoder.encode_query` on ``device`` ("cpu", "cuda", "cuda:1", ...)."""
    return enc._encode(token_sets, query=True, chunk=_chunk_encoder(enc, device))


def encode_document(
    enc: FDEEncoder, token_sets: Sequence[npt.ArrayLike] | npt.NDArray[Any], *, device: str
) -> Float32Array:
    """:meth:`FDEEncoder.encode_document` on ``device`` ("cpu", "cuda", "cuda:1", ...)."""
    return enc._encode(token_sets, query=False, chunk=_chunk_encoder(enc, device))


def _chunk_encoder(enc: FDEEncoder, device: str) -> ChunkEncoder:
    torch = _import_torch(device)
    dev = torch.device(device)
    mats: dict[str, Any] = {"w": torch.from_numpy(enc._weight_matrix()).to(dev)}
    if enc.final_index is not None and enc.final_sign is not None:
        mats["final_index"] = torch.from_numpy(enc.final_index.astype(np.int64)).to(dev)
        mats["final_sign"] = torch.from_numpy(np.array(enc.final_sign)).to(dev)

    def chunk(x: Float32Array, offs: Int64Array, query: bool) -> Float32Array:
        return _encode_chunk(torch, enc.config, mats, x, offs, query, dev)

    return chunk


def _import_torch(device: str) -> Any:
    try:
        import torch
    except ImportError as exc:  # torch is optional
        raise DeviceUnavailableError(
            f"device={device!r} needs torch, which is not installed; use device=None (NumPy)"
        ) from exc
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device={device!r} requested but CUDA is not available")
    return torch


def _encode_chunk(
    torch: Any,
    cfg: FDEConfig,
    mats: dict[str, Any],
    x_np: Float32Array,
    offs_np: Int64Array,
    query: bool,
    dev: Any,
) -> Float32Array:
    """The NumPy chunk encoder's math in torch (index_add_ / scatter_reduce_)."""
    r, k, dp, nb = (
        cfg.num_repetitions,
        cfg.num_simhash_projections,
        cfg.block_dim,
        cfg.num_partitions,
    )
    x = torch.from_numpy(x_np).to(dev)
    offs = torch.from_numpy(offs_np).to(dev)
    n_tok, m = x.shape[0], offs.shape[0] - 1
    lengths = offs[1:] - offs[:-1]
    doc = torch.repeat_interleave(torch.arange(m, device=dev), lengths)
    y = mats["w"] @ x.T  # (k*R + d_proj*R, n_tok), rows as in FDEEncoder._weight_matrix
    sketch = y[: k * r].reshape(k, r, n_tok)
    code = torch.zeros((r, n_tok), dtype=torch.int64, device=dev)
    for j in range(k):
        code = (code << 1) | (sketch[j] > 0).to(torch.int64)
    code = code.T.contiguous()  # (n_tok, R)
    part = code.clone()
    shift = 1
    while shift < 32:
        part ^= part >> shift
        shift <<= 1
    if cfg.projection == "identity":
        proj = x[:, None, :].expand(n_tok, r, dp)
    else:
        proj = y[k * r :].reshape(dp, r, n_tok).permute(2, 1, 0)  # (n_tok, R, d_proj)
    block = (doc[:, None] * r + torch.arange(r, device=dev)) * nb + part
    fde = torch.zeros((m * r * nb, dp), dtype=torch.float64, device=dev)
    fde.index_add_(0, block.reshape(-1), proj.reshape(-1, dp).to(torch.float64))
    fde = fde.reshape(m, r, nb, dp)
    if not query:
        counts = torch.bincount(block.reshape(-1), minlength=m * r * nb).reshape(m, r, nb)
        fde = fde / counts.clamp(min=1)[..., None]
        if cfg.fill_empty_partitions and k > 0:
            empty = counts == 0
            if bool(empty.any()):
                parts = torch.arange(nb, device=dev)
                diff = code[:, :, None] ^ (parts ^ (parts >> 1))
                dist = torch.zeros_like(diff)
                for j in range(k):
                    dist += (diff >> j) & 1
                local = torch.arange(n_tok, device=dev) - offs[:-1][doc]
                span = int(lengths.max())
                key = dist * span + local[:, None, None]
                best = torch.full((m, r, nb), torch.iinfo(torch.int64).max, device=dev)
                best.scatter_reduce_(0, doc[:, None, None].expand(n_tok, r, nb), key, reduce="amin")
                tok = offs[:-1][:, None, None] + best % span
                de, re, pe = torch.nonzero(empty, as_tuple=True)
                fde[de, re, pe, :] = proj[tok[de, re, pe], re, :].to(torch.float64)
    flat = fde.reshape(m, -1)
    if "final_index" in mats:
        out = torch.zeros((m, cfg.output_dim), dtype=torch.float64, device=dev)
        out.index_add_(1, mats["final_index"], flat * mats["final_sign"].to(torch.float64))
        flat = out
    return np.asarray(flat.to(torch.float32).cpu().numpy())
