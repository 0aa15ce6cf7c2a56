"""Search builders that return plain SQLAlchemy ``Select`` statements.

Each builder takes a mapped column (``Doc.embedding``) or a Core column and the query
vector(s), and returns ``SELECT <entity or table columns>, score`` ordered best first.
Filters passed as ``where=`` apply to the candidate stage, so the ``k`` results all satisfy
them; with selective filters, set ``hnsw.iterative_scan`` so the HNSW scan keeps going.
The expressions match the collection indexes of :mod:`pgembed.storage.schema` exactly, so
PostgreSQL uses them. The SQL functions (``pgembed.search_*``) run the same plans server-side.

Scores are higher-is-better: cosine similarity, inner product, or MaxSim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR

from pgembed.errors import ConfigError, DimensionError, EmptyInputError, NonFiniteError

_MAX_OVERSAMPLE = 1000


def _vector(q: Any, dim: int | None, what: str = "query") -> np.ndarray[Any, np.dtype[np.float32]]:
    arr = np.asarray(q, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise DimensionError(f"the {what} must be one non-empty vector, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise DimensionError(f"the {what} has {arr.shape[0]} dims; the column has {dim}")
    if not np.isfinite(arr).all():
        raise NonFiniteError(f"the {what} holds NaN or infinity")
    return arr


def _check_k(k: int, oversample: int = 1) -> None:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if not isinstance(oversample, int) or not 1 <= oversample <= _MAX_OVERSAMPLE:
        raise ConfigError(f"oversample must be in 1..{_MAX_OVERSAMPLE}, got {oversample!r}")


def _parts(column: Any) -> tuple[Any, Any, list[Any]]:
    """(selectable entity, table, primary key columns) of a mapped or Core column."""
    entity = getattr(column, "class_", None)
    table = column.table if hasattr(column, "table") else column.parent.class_.__table__
    pk = list(table.primary_key.columns)
    if not pk:
        raise ConfigError(f"table {table.name!r} needs a primary key for two-stage search")
    return (entity if entity is not None else table), table, pk


def _vec_type(column: Any, dim: int) -> Any:
    return HALFVEC(dim) if isinstance(column.type, HALFVEC) else VECTOR(dim)


def _similarity(column: Any, q: Any, distance: str) -> Any:
    if distance == "cosine":
        return 1 - column.cosine_distance(q)
    if distance == "ip":
        return -column.max_inner_product(q)
    raise ConfigError(f"distance must be 'cosine' or 'ip', got {distance!r}")


def _two_stage(
    column: Any, order: Any, n: int, where: Sequence[Any], score: Any, k: int
) -> sa.Select[Any]:
    """The ``n`` best rows by ``order`` (an index scan), reranked by ``score``, top ``k``."""
    entity, _, pk = _parts(column)
    cand = sa.select(*pk).where(*where).order_by(order).limit(n).subquery("candidates")
    cond = sa.and_(*(c == cand.c[c.key] for c in pk))
    label = score.label("score")
    return sa.select(entity, label).join(cand, cond).order_by(label.desc()).limit(k)


def knn(
    column: Any, q: Any, *, k: int = 10, distance: str = "cosine", where: Sequence[Any] = ()
) -> sa.Select[Any]:
    """Plain (HNSW) nearest neighbours on the full vector."""
    _check_k(k)
    vec = _vector(q, column.type.dim)
    entity, _, _ = _parts(column)
    qp = sa.bindparam("q", vec, type_=column.type, unique=True)
    order = column.cosine_distance(qp) if distance == "cosine" else column.max_inner_product(qp)
    score = _similarity(column, qp, distance).label("score")
    return sa.select(entity, score).where(*where).order_by(order).limit(k)


def funnel(
    column: Any,
    q: Any,
    *,
    k: int = 10,
    prefix: int,
    oversample: int = 8,
    distance: str = "cosine",
    where: Sequence[Any] = (),
) -> sa.Select[Any]:
    """Matryoshka funnel: ANN on the first ``prefix`` dims (k*oversample), exact rerank."""
    _check_k(k, oversample)
    dim = column.type.dim
    vec = _vector(q, dim)
    if not 1 <= prefix < dim:
        raise DimensionError(f"prefix {prefix} must be in 1..{dim - 1}")
    ptype = _vec_type(column, prefix)
    head = sa.cast(sa.func.subvector(column, 1, prefix), ptype)
    qhead = sa.bindparam("q_prefix", vec[:prefix], type_=ptype, unique=True)
    order = head.op("<=>", return_type=sa.Float)(qhead)
    qp = sa.bindparam("q", vec, type_=column.type, unique=True)
    return _two_stage(column, order, k * oversample, where, _similarity(column, qp, distance), k)


def binary_rerank(
    column: Any,
    q: Any,
    *,
    k: int = 10,
    oversample: int = 10,
    distance: str = "cosine",
    where: Sequence[Any] = (),
) -> sa.Select[Any]:
    """Hamming ANN on ``binary_quantize(column)`` (k*oversample), then exact rerank."""
    _check_k(k, oversample)
    dim = column.type.dim
    vec = _vector(q, dim)
    code = sa.cast(sa.func.binary_quantize(column), BIT(dim))
    bits = "".join("1" if x > 0 else "0" for x in vec)  # binary_quantize's rule
    order = code.op("<~>", return_type=sa.Float)(
        sa.bindparam("q_bits", bits, type_=BIT(dim), unique=True)
    )
    qp = sa.bindparam("q", vec, type_=column.type, unique=True)
    return _two_stage(column, order, k * oversample, where, _similarity(column, qp, distance), k)


def multivector(
    fde_column: Any,
    tokens_column: Any,
    q_tokens: Any,
    q_fde: Any,
    *,
    k: int = 10,
    candidates: int = 100,
    where: Sequence[Any] = (),
) -> sa.Select[Any]:
    """FDE inner-product ANN (``candidates`` rows), then exact MaxSim on the token vectors.

    ``q_fde`` is the query FDE (``FDEEncoder.encode_query`` in Python, or
    ``pgembed.fde_query(config, tokens)`` in SQL).
    """
    _check_k(k, max(1, candidates // max(k, 1)))
    if candidates < k:
        raise ConfigError(f"candidates ({candidates}) must be at least k ({k})")
    tokens = np.asarray(q_tokens, dtype=np.float32)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise EmptyInputError(f"the query needs at least one token vector, got {tokens.shape}")
    fde = _vector(q_fde, fde_column.type.dim, "query FDE")
    order = fde_column.max_inner_product(
        sa.bindparam("q_fde", fde, type_=fde_column.type, unique=True)
    )
    qt = sa.bindparam("q_tokens", tokens, type_=tokens_column.type, unique=True)
    score = sa.func.pgembed.maxsim(qt, tokens_column, type_=sa.Float)
    return _two_stage(tokens_column, order, candidates, where, score, k)
