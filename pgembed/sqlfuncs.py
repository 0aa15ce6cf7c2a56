"""SQLAlchemy wrappers of pgembed's SQL functions (``pgembed--0.1.0--0.2.0.sql``).

Scalar functions return typed SQL expressions; the searches return table-valued
selectables with columns ``id`` (bigint) and ``score`` (float8, higher is better), usable
with plain ``select``::

    hits = sqlfuncs.search_knn("docs", q, k=10)
    sa.select(hits)                                        # (id, score) rows, best first
    sa.select(Doc, hits.c.score).join(hits, hits.c.id == Doc.id).order_by(hits.c.score.desc())

Query vectors may be numpy arrays (or lists), bound as parameters, or SQL expressions.
Every argument is cast to the function's parameter type, so the right overload is chosen
whatever the driver sends. Defaults match the SQL functions' defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import Function
from sqlalchemy.sql.selectable import TableValuedAlias

from pgembed import strategies
from pgembed.storage.columns import VectorArray

__all__ = [
    "fde_query",
    "fuse",
    "halfvec",
    "maxsim",
    "search_binary",
    "search_bm25",
    "search_funnel",
    "search_hybrid",
    "search_knn",
    "search_multivector",
]


def _is_sql(value: Any) -> bool:
    return isinstance(value, ColumnElement | sa.sql.ClauseElement)


def _vector(q: Any, type_: Any = None, *, nonzero: bool = True) -> Any:
    """A vector argument: SQL expressions pass through, arrays become cast parameters."""
    if _is_sql(q):
        return q
    precision = "halfvec" if isinstance(type_, HALFVEC) else "vector"
    arr = strategies.query_vector(q, precision=precision, nonzero=nonzero)
    t = type_ if type_ is not None else VECTOR()
    return sa.cast(sa.bindparam(None, arr, type_=t), t)


def _tokens(q: Any, what: str = "query") -> Any:
    """Token vectors, checked now (not when the statement runs, wrapped in a StatementError)."""
    if _is_sql(q):
        return q
    arr = strategies.query_tokens(q, what=what)
    return sa.cast(sa.bindparam(None, arr, type_=VectorArray()), VectorArray())


def _options(strategy: str, k: Any, **options: Any) -> dict[str, Any]:
    """The options of a search, checked against pgembed.strategies (SQL expressions pass)."""
    if _is_sql(k) or any(_is_sql(v) for v in options.values()):
        return options
    return {**options, **strategies.check_options(strategy, options, k=k)}


def _int(value: int | None) -> Any:
    return sa.cast(sa.bindparam(None, value, type_=sa.Integer), sa.Integer)


def _text(value: str | None) -> Any:
    return sa.cast(sa.bindparam(None, value, type_=sa.Text), sa.Text)


def _float(value: float | None) -> Any:
    return sa.cast(sa.bindparam(None, value, type_=sa.Float), sa.Float)


def _query_text(q: Any) -> Any:
    return q if _is_sql(q) else _text(strategies.query_text(q))


def _hits(fn: Function[Any]) -> TableValuedAlias:
    return fn.table_valued(sa.column("id", sa.BigInteger), sa.column("score", sa.Float))


# --- scalar functions --------------------------------------------------------------------


def maxsim(q: Any, d: Any, *, half: bool = False) -> Any:
    """``pgembed.maxsim(q, d)``: MaxSim of query tokens ``q`` against document tokens ``d``.

    ``d`` is usually a ``tokens`` column (``halfvec[]``); a numpy ``q`` is then bound as
    ``halfvec[]`` (``half=True`` is implied by a MultiVector column). Arrays for both bind as
    ``vector[]``.
    """
    from pgembed.storage.columns import MultiVector

    half = half or isinstance(getattr(d, "type", None), MultiVector)
    if not _is_sql(q):
        q = sa.cast(_tokens(q), MultiVector()) if half else _tokens(q)
    if not _is_sql(d):
        d = sa.cast(_tokens(d, "document"), MultiVector()) if half else _tokens(d, "document")
    return sa.func.pgembed.maxsim(q, d, type_=sa.Float)


def fde_query(config: int | str, q: Any) -> Any:
    """``pgembed.fde_query(config, q)``: the query FDE of token vectors ``q`` (``vector``).

    ``config`` is an FDE config id, or a collection name (its config).
    """
    arg = _text(config) if isinstance(config, str) else _int(config)
    return sa.func.pgembed.fde_query(arg, _tokens(q), type_=VECTOR())


# --- searches ----------------------------------------------------------------------------


def search_knn(
    collection: str,
    q: Any,
    k: int = 10,
    *,
    ef_search: int | None = None,
    iterative_scan: str | None = None,
    target_recall: float | None = None,
) -> TableValuedAlias:
    """``pgembed.search_knn``: HNSW top-k on the single vectors; (id, score) best first.

    ``target_recall`` (every dense search): the cheapest calibrated setting whose measured
    recall@k against exact search meets it (``pgembed calibrate``); explicit options win."""
    _options(
        "knn", k, ef_search=ef_search, iterative_scan=iterative_scan, target_recall=target_recall
    )
    return _hits(
        sa.func.pgembed.search_knn(
            _text(collection),
            _vector(q),
            _int(k),
            _int(ef_search),
            _text(iterative_scan),
            _float(target_recall),
        )
    )


def search_funnel(
    collection: str,
    q: Any,
    k: int = 10,
    *,
    prefix: int | None = None,
    oversample: int | None = None,
    ef_search: int | None = None,
    iterative_scan: str | None = None,
    target_recall: float | None = None,
) -> TableValuedAlias:
    """``pgembed.search_funnel``: prefix HNSW (k*oversample, default 16), exact rerank;
    with ``target_recall``, prefix and oversample from the calibration."""
    _options(
        "funnel",
        k,
        prefix=prefix,
        oversample=oversample,
        ef_search=ef_search,
        iterative_scan=iterative_scan,
        target_recall=target_recall,
    )
    return _hits(
        sa.func.pgembed.search_funnel(
            _text(collection),
            _vector(q),
            _int(k),
            _int(prefix),
            _int(oversample),
            _int(ef_search),
            _text(iterative_scan),
            _float(target_recall),
        )
    )


def search_binary(
    collection: str,
    q: Any,
    k: int = 10,
    *,
    oversample: int | None = None,
    rescore: int | None = None,
    ef_search: int | None = None,
    iterative_scan: str | None = None,
    probes: int | None = None,
    target_recall: float | None = None,
) -> TableValuedAlias:
    """``pgembed.search_binary``: Hamming ANN (HNSW: ``ef_search``; IVFFlat: ``probes``)
    of k*oversample (default 20) candidates, multi-bit rescore, exact rerank."""
    _options(
        "binary",
        k,
        oversample=oversample,
        rescore=rescore,
        ef_search=ef_search,
        iterative_scan=iterative_scan,
        probes=probes,
        target_recall=target_recall,
    )
    return _hits(
        sa.func.pgembed.search_binary(
            _text(collection),
            _vector(q),
            _int(k),
            _int(oversample),
            _int(rescore),
            _int(ef_search),
            _text(iterative_scan),
            _int(probes),
            _float(target_recall),
        )
    )


def search_multivector(
    collection: str,
    q: Any,
    k: int = 10,
    *,
    candidates: int | None = None,
    oversample: int | None = None,
    ef_search: int | None = None,
    iterative_scan: str | None = None,
    target_recall: float | None = None,
) -> TableValuedAlias:
    """``pgembed.search_multivector``: FDE HNSW candidates (default 300), exact MaxSim
    rerank.

    ``q`` is the query's token vectors, an (n, d) array (or a ``vector[]`` expression).
    """
    _options(
        "multivector",
        k,
        candidates=candidates,
        oversample=oversample,
        ef_search=ef_search,
        iterative_scan=iterative_scan,
        target_recall=target_recall,
    )
    return _hits(
        sa.func.pgembed.search_multivector(
            _text(collection),
            _tokens(q),
            _int(k),
            _int(candidates),
            _int(oversample),
            _int(ef_search),
            _text(iterative_scan),
            _float(target_recall),
        )
    )


def search_bm25(
    collection: str, query: Any, k: int = 10, *, k1: float = 1.2, b: float = 0.75
) -> TableValuedAlias:
    """``pgembed.search_bm25``: exact Okapi BM25 over the lexical kind; (id, score) best
    first. ``query`` is the text (or a text expression)."""
    _options("bm25", k, k1=k1, b=b)
    return _hits(
        sa.func.pgembed.search_bm25(
            _text(collection), _query_text(query), _int(k), _float(k1), _float(b)
        )
    )


def search_hybrid(
    collection: str,
    query: Any,
    q: Any,
    k: int = 10,
    *,
    dense: str = "knn",
    fusion: str = "rrf",
    rrf_k: int = 60,
    bm25_weight: float = 1.0,
    dense_weight: float = 1.0,
    alpha: float = 0.5,
    depth: int | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    ef_search: int | None = None,
    target_recall: float | None = None,
) -> TableValuedAlias:
    """``pgembed.search_hybrid``: BM25 of the text ``query`` fused with the dense search
    ``dense`` of ``q`` (a vector; for ``dense="multivector"`` the query's token vectors),
    each side ``depth`` rows deep; ``fusion`` is ``rrf`` (``rrf_k``, per-side weights) or
    ``convex`` (``alpha``, the dense side's weight over min-max normalised scores);
    ``target_recall`` goes to the dense side, which then runs its calibrated setting."""
    _options(
        "hybrid",
        k,
        dense=dense,
        fusion=fusion,
        rrf_k=rrf_k,
        bm25_weight=bm25_weight,
        dense_weight=dense_weight,
        alpha=alpha,
        depth=depth,
        k1=k1,
        b=b,
        ef_search=ef_search,
        target_recall=target_recall,
    )
    qv = _tokens(q) if strategies.STRATEGIES[dense].tokens else _vector(q)
    return _hits(
        sa.func.pgembed.search_hybrid(
            _text(collection),
            _query_text(query),
            qv,
            _int(k),
            _text(dense),
            _text(fusion),
            _int(rrf_k),
            _float(bm25_weight),
            _float(dense_weight),
            _float(alpha),
            _int(depth),
            _float(k1),
            _float(b),
            _int(ef_search),
            _float(target_recall),
        )
    )


def fuse(
    lexical: Sequence[tuple[int, float]],
    dense: Sequence[tuple[int, float]],
    k: int = 10,
    *,
    fusion: str = "rrf",
    rrf_k: int = 60,
    bm25_weight: float = 1.0,
    dense_weight: float = 1.0,
    alpha: float = 0.5,
) -> TableValuedAlias:
    """``pgembed.fuse``: two ranked lists of (id, score), best first, fused as in
    :func:`search_hybrid`."""
    _options(
        "hybrid",
        k,
        fusion=fusion,
        rrf_k=rrf_k,
        bm25_weight=bm25_weight,
        dense_weight=dense_weight,
        alpha=alpha,
    )

    def ids(rows: Sequence[tuple[int, float]]) -> Any:
        t = pg.ARRAY(sa.BigInteger)
        return sa.cast(sa.bindparam(None, [int(i) for i, _ in rows], type_=t), t)

    def scores(rows: Sequence[tuple[int, float]]) -> Any:
        t = pg.ARRAY(sa.Float)
        return sa.cast(sa.bindparam(None, [float(s) for _, s in rows], type_=t), t)

    return _hits(
        sa.func.pgembed.fuse(
            ids(lexical),
            scores(lexical),
            ids(dense),
            scores(dense),
            _int(k),
            _text(fusion),
            _int(rrf_k),
            _float(bm25_weight),
            _float(dense_weight),
            _float(alpha),
        )
    )


def halfvec(q: Sequence[float] | Any) -> Any:
    """A numpy/list vector as a ``halfvec`` parameter (for custom SQL next to these)."""
    return _vector(q, HALFVEC())
