"""The vector builders of :mod:`pgembed.query` (knn, funnel, binary, multivector)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR

from pgembed import scan, strategies
from pgembed.errors import ConfigError, DimensionError


def _vector(
    q: Any, column: Any, *, what: str = "query vector", prefix: int | None = None
) -> np.ndarray[Any, np.dtype[np.float32]]:
    precision = "halfvec" if isinstance(column.type, HALFVEC) else "vector"
    return strategies.query_vector(
        q, column.type.dim, precision=precision, prefix=prefix, what=what
    )


def _check_k(k: int, oversample: int | None = None) -> None:
    strategies.check_k(k)
    if oversample is not None:
        strategies.OPTIONS["oversample"].check(oversample)


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
    stmt = sa.select(entity, label).join(cand, cond).order_by(label.desc()).limit(k)
    return scan.tag(stmt, n, filtered=bool(where))


def knn(
    column: Any, q: Any, *, k: int = 10, distance: str = "cosine", where: Sequence[Any] = ()
) -> sa.Select[Any]:
    """Plain (HNSW) nearest neighbours on the full vector."""
    _check_k(k)
    vec = _vector(q, column)
    entity, _, _ = _parts(column)
    qp = sa.bindparam("q", vec, type_=column.type, unique=True)
    order = column.cosine_distance(qp) if distance == "cosine" else column.max_inner_product(qp)
    score = _similarity(column, qp, distance).label("score")
    stmt = sa.select(entity, score).where(*where).order_by(order).limit(k)
    return scan.tag(stmt, k, filtered=bool(where), order="strict_order")


def funnel(
    column: Any,
    q: Any,
    *,
    k: int = 10,
    prefix: int,
    oversample: int = strategies.STRATEGIES["funnel"].defaults["oversample"],
    distance: str = "cosine",
    where: Sequence[Any] = (),
) -> sa.Select[Any]:
    """Matryoshka funnel: ANN on the first ``prefix`` dims (k*oversample), exact rerank."""
    _check_k(k, oversample)
    dim = column.type.dim
    strategies.OPTIONS["prefix"].check(prefix)
    if not 1 <= prefix < dim:
        raise DimensionError(f"prefix {prefix} must be in 1..{dim - 1}")
    vec = _vector(q, column, prefix=prefix)
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
    oversample: int = strategies.STRATEGIES["binary"].defaults["oversample"],
    distance: str = "cosine",
    where: Sequence[Any] = (),
) -> sa.Select[Any]:
    """Hamming ANN on ``binary_quantize(column)`` (k*oversample), then exact rerank."""
    _check_k(k, oversample)
    dim = column.type.dim
    vec = _vector(q, column)
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
    candidates: int = strategies.MULTIVECTOR_CANDIDATES,
    oversample: int = strategies.STRATEGIES["multivector"].defaults["oversample"],
    index: str = "bit",
    where: Sequence[Any] = (),
) -> sa.Select[Any]:
    """FDE candidates (``candidates`` rows), then exact MaxSim on the token vectors.

    ``q_fde`` is the query FDE (``FDEEncoder.encode_query`` in Python, or
    ``pgembed.fde_query(config, tokens)`` in SQL). ``index`` is the collection's FDE index
    (``IndexParams.fde``): ``bit`` (the default) takes ``candidates * oversample`` rows by
    Hamming distance on ``binary_quantize(fde)``, as its index is built, and rescores them
    by the float FDE; ``halfvec`` orders by the FDE inner product directly. As
    ``pgembed.search_multivector`` does.
    """
    strategies.check_options(
        "multivector", {"candidates": candidates, "oversample": oversample}, k=k
    )
    if index not in ("bit", "halfvec"):
        raise ConfigError(f"index must be 'bit' or 'halfvec' (the FDE index), got {index!r}")
    tokens = strategies.query_tokens(q_tokens, getattr(tokens_column.type, "dim", None))
    fde = _vector(q_fde, fde_column, what="query FDE")
    qf = sa.bindparam("q_fde", fde, type_=fde_column.type, unique=True)
    qt = sa.bindparam("q_tokens", tokens, type_=tokens_column.type, unique=True)
    score = sa.func.pgembed.maxsim(qt, tokens_column, type_=sa.Float)
    if index == "halfvec":
        return _two_stage(tokens_column, fde_column.max_inner_product(qf), candidates, where,
                          score, k)  # fmt: skip
    dim = fde_column.type.dim
    entity, _, pk = _parts(tokens_column)
    bits = "".join("1" if x > 0 else "0" for x in fde)
    hamming = sa.cast(sa.func.binary_quantize(fde_column), BIT(dim)).op(
        "<~>", return_type=sa.Float
    )(sa.bindparam("q_bits", bits, type_=BIT(dim), unique=True))
    n = candidates * oversample
    pool = (
        sa.select(*pk, fde_column.label("f"))
        .where(*where)
        .order_by(hamming)
        .limit(n)
        .cte("fde_pool")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    rescored = (
        sa.select(*(pool.c[c.key] for c in pk))
        .order_by(pool.c.f.max_inner_product(qf), *(pool.c[c.key] for c in pk))
        .limit(candidates)
        .subquery("candidates")
    )
    cond = sa.and_(*(c == rescored.c[c.key] for c in pk))
    label = score.label("score")
    stmt = sa.select(entity, label).join(rescored, cond).order_by(label.desc()).limit(k)
    return scan.tag(stmt, n, filtered=bool(where))
