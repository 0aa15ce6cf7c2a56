"""Search builders that return plain SQLAlchemy ``Select`` statements.

Each builder takes a mapped column (``Doc.embedding``) or a Core column and the query
vector(s), and returns ``SELECT <entity or table columns>, score`` ordered best first.
Filters passed as ``where=`` apply to the candidate stage, so the ``k`` results all satisfy
them: each statement carries the index scan settings it needs (:mod:`pgembed.scan`:
``hnsw.ef_search`` raised to its candidate count, iterative scans under a filter).
The expressions match the collection indexes of :mod:`pgembed.storage.schema` exactly, so
PostgreSQL uses them. The SQL functions (``pgembed.search_*``) run the same plans server-side.

Scores are higher-is-better: cosine similarity, inner product, or MaxSim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import JSONB, REAL, REGCONFIG, TSQUERY

from pgembed import scan, strategies
from pgembed._dense_query import (
    _parts,
    _similarity,
    _vector,
    binary_rerank,
    funnel,
    knn,
    multivector,
)
from pgembed.errors import ConfigError

__all__ = ["binary_rerank", "bm25", "funnel", "hybrid", "knn", "multivector"]


# --- lexical and hybrid ------------------------------------------------------------------


def _entity(entity: Any) -> tuple[Any, sa.Table, Any]:
    """(selectable entity, table, single-column primary key) of a mapped class or Table."""
    from sqlalchemy.orm import Mapper

    if isinstance(entity, sa.Table):
        table = entity
    else:
        mapper = sa.inspect(entity, raiseerr=False)
        if not isinstance(mapper, Mapper):
            raise ConfigError(
                f"pass the collection's mapped class (Doc) or its Table, got "
                f"{type(entity).__name__}"
            )
        table = mapper.local_table  # type: ignore[assignment]
    pk = list(table.primary_key.columns)
    if len(pk) != 1:
        raise ConfigError(
            f"table {table.name!r} needs a single-column primary key for lexical search, "
            f"it has {len(pk)}"
        )
    return entity, table, pk[0]


def _column(table: sa.Table, name: str, kind: str) -> Any:
    if name not in table.c:
        raise ConfigError(
            f"table {table.name!r} has no {name!r} column, which the {kind!r} kind stores; "
            f"declare the collection with that kind (or map the column)"
        )
    return table.c[name]


def _config(table: sa.Table, config: str | None) -> Any:
    """The text search configuration: the one given, or the collection's, read from
    pgembed.collections (an error names the table when none is recorded)."""
    if config is not None:
        from pgembed.storage import names
        from pgembed.storage.schema import check_name

        for part in config.split("."):
            check_name(part, "text search configuration name")
        # spelled so that the cast reads back the configuration named, case and all
        spelled = names.ts_config_sql(config)
        return sa.cast(sa.bindparam("ts_config", spelled, unique=True), REGCONFIG)
    c = sa.table("collections", sa.column("table_schema"), sa.column("table_name"),
                 sa.column("kinds", JSONB), schema="pgembed")  # fmt: skip
    recorded = (
        sa.select(c.c.kinds["lexical"]["config"].astext)
        .where(c.c.table_schema == (table.schema or "public"), c.c.table_name == table.name)
        .scalar_subquery()
    )
    missing = sa.cast(
        sa.func.pgembed.fail(
            "42704",
            f"pgembed: no collection with the lexical kind stores table {table.name!r}",
            "add the lexical kind (op.add_lexical), or pass config= to the builder",
            type_=sa.Float,
        ),
        sa.Text,
    )
    return sa.cast(sa.func.coalesce(recorded, missing), REGCONFIG)


def _bm25_side(
    table: sa.Table,
    pk: Any,
    text: str,
    *,
    limit: int,
    k1: float,
    b: float,
    where: Sequence[Any],
    config: str | None,
) -> sa.Select[Any]:
    """``SELECT id, score`` of the ``limit`` best rows by Okapi BM25 among the rows that
    match any query lexeme and satisfy ``where``, best first (ties by id).

    The same arithmetic as ``pgembed.search_bm25`` (Lucene's IDF from the collection's
    statistics table, which counts every row: the filter narrows the candidates, not the
    statistics), so unfiltered scores are identical to it.
    """
    from pgembed.storage.schema import LEXICAL_COLUMN, index_base

    lexemes = _column(table, LEXICAL_COLUMN, "lexical")
    f8 = sa.Float
    one, half = sa.literal(1.0, f8), sa.literal(0.5, f8)
    k1p = sa.bindparam("k1", k1, type_=f8, unique=True)
    bp = sa.bindparam("b", b, type_=f8, unique=True)

    u = (
        sa.func.unnest(
            sa.func.to_tsvector(_config(table, config), sa.bindparam("text", text, unique=True))
        )
        .table_valued("lexeme", "positions", "weights")
        .render_derived(name="u")
    )
    qlex = sa.select(u.c.lexeme).cte("query_lexemes")
    st = sa.table(f"{index_base(table.name)}_lexical_stats", sa.column("lexeme", sa.Text),
                  sa.column("docs", sa.BigInteger), sa.column("tokens", sa.BigInteger),
                  schema=table.schema)  # fmt: skip
    totals = sa.select(st.c.docs.label("n"), st.c.tokens.label("total")).where(st.c.lexeme == "")
    totals_cte = totals.cte("totals")
    n = sa.cast(totals_cte.c.n, f8)
    df = sa.cast(sa.func.coalesce(st.c.docs, 0), f8)

    def operand(lexeme: Any) -> Any:  # one lexeme, quoted as tsvector's output quotes it
        return sa.cast(sa.func.array_to_tsvector(pg.array([lexeme])), sa.Text)

    qterms = (
        sa.select(
            qlex.c.lexeme,
            sa.cast(operand(qlex.c.lexeme), TSQUERY).label("tsq"),
            sa.func.ln(one + ((n - df) + half) / (df + half)).label("idf"),
        )
        .select_from(qlex.outerjoin(st, st.c.lexeme == qlex.c.lexeme))
        .join(totals_cte, sa.true())
        .cte("query_terms")
    )
    ops = sa.select(operand(qlex.c.lexeme).label("op")).subquery("ops")
    tq = sa.select(
        sa.func.coalesce(
            sa.cast(sa.func.string_agg(ops.c.op, sa.literal_column("' | '")), TSQUERY),
            sa.cast(sa.cast(sa.func.pgembed.fail(
                "22023",
                "pgembed: the query has no searchable words under the collection's text "
                "search configuration: it is empty or holds only stop words",
                "search with words that carry meaning, or use a dense strategy",
                type_=sa.Float), sa.Text), TSQUERY),
        )
    ).scalar_subquery()  # fmt: skip
    avgdl = (
        sa.select(sa.cast(totals_cte.c.total, f8) / sa.cast(totals_cte.c.n, f8))
        .where(totals_cte.c.n > 0)
        .scalar_subquery()
    )
    # document length: ts_rank(v, q, 0) / ts_rank(v, q, 2) (normalisation 2 divides by it)
    dl = sa.func.round(
        sa.cast(sa.func.ts_rank(lexemes, tq, 0), f8) / sa.cast(sa.func.ts_rank(lexemes, tq, 2), f8)
    )
    norm = k1p * ((one - bp) + bp * (dl / avgdl))
    # tf: the index of ts_rank(v, one lexeme) in pgembed.bm25_tf_table() (0 when absent)
    rank1 = sa.func.ts_rank(lexemes, qterms.c.tsq, type_=REAL)
    tf = sa.cast(
        sa.func.coalesce(
            sa.func.array_position(sa.func.pgembed.bm25_tf_table(), sa.func.nullif(rank1, 0)), 0
        ),
        f8,
    )
    # a lexeme the row lacks adds 0 (and no 0/0 when k1 = 0); summed in lexeme order, as
    # pgembed.search_bm25 adds its terms
    term = sa.case((tf > 0, (qterms.c.idf * tf) / (tf + norm)), else_=sa.literal(0.0, f8))
    score = (
        sa.select(sa.func.sum(pg.aggregate_order_by(term, sa.collate(qterms.c.lexeme, "C"))))
        .select_from(qterms)
        .scalar_subquery()
    )
    return (
        sa.select(pk.label("id"), score.label("score"))
        .where(lexemes.op("@@")(tq), *where)
        .order_by(sa.desc("score"), pk)
        .limit(limit)
    )


def bm25(
    entity: Any,
    text: str,
    *,
    k: int = 10,
    k1: float = 1.2,
    b: float = 0.75,
    where: Sequence[Any] = (),
    config: str | None = None,
) -> sa.Select[Any]:
    """Exact Okapi BM25 (Lucene's, as ``pgembed.search_bm25``) over the lexical kind.

    ``entity`` is the mapped class (or Core table) of a collection with the lexical kind.
    The candidates are the rows matching any lexeme of ``text`` (GIN index) that satisfy
    ``where``; IDF and average length come from the collection's statistics, which count
    every row. ``config`` is the text search configuration; by default the collection's,
    read from the catalog. Returns ``SELECT <entity>, score`` best first.
    """
    strategies.check_options("bm25", {"k1": k1, "b": b}, k=k)
    text = strategies.query_text(text)
    ent, table, pk = _entity(entity)
    side = _bm25_side(table, pk, text, limit=k, k1=k1, b=b, where=where,
                      config=config).subquery("bm25")  # fmt: skip
    return (
        sa.select(ent, side.c.score).join(side, pk == side.c.id).order_by(side.c.score.desc(), pk)
    )


def _dense_side(
    table: sa.Table,
    dense: str,
    q: Any,
    *,
    depth: int,
    where: Sequence[Any],
    prefix: int | None,
    q_fde: Any,
    candidates: int | None,
) -> sa.Select[Any]:
    """``SELECT id, score`` of the dense strategy's ``depth`` best rows under ``where``."""
    if dense == "knn":
        col = _column(table, "embedding", "single")
        pk = _parts(col)[2][0]
        vec = _vector(q, col)
        qp = sa.bindparam("q", vec, type_=col.type, unique=True)
        return (
            sa.select(pk.label("id"), _similarity(col, qp, "cosine").label("score"))
            .where(*where)
            .order_by(col.cosine_distance(qp))
            .limit(depth)
        )
    if dense == "funnel":
        col = _column(table, "embedding", "single")
        if prefix is None:
            raise ConfigError("dense='funnel' needs prefix=, the Matryoshka prefix length")
        # the dense depths of pgembed.search_hybrid, which keeps 0.4.0's oversample
        sel = funnel(col, q, k=depth, prefix=prefix, oversample=8, where=where)
    elif dense == "binary":
        sel = binary_rerank(
            _column(table, "embedding", "single"), q, k=depth, oversample=10, where=where
        )
    elif dense == "multivector":
        if q_fde is None:
            raise ConfigError(
                "dense='multivector' needs q_fde=, the query's FDE (FDEEncoder.encode_query, "
                "or pgembed.fde_query in SQL), beside its token vectors as the query"
            )
        sel = multivector(
            _column(table, "fde", "fde"), _column(table, "tokens", "multivector"), q, q_fde,
            k=depth, candidates=max(candidates or 100, depth), where=where,
        )  # fmt: skip
    else:
        raise ConfigError(f"dense must be one of {', '.join(strategies.DENSE)}, got {dense!r}")
    sub = sel.subquery("dense_hits")
    pk = next(iter(table.primary_key.columns))
    return sa.select(sub.c[pk.key].label("id"), sub.c.score)


def _ranked(side: sa.Select[Any], name: str) -> Any:
    """A side's rows with their rank, 1 = best (score descending, ties by id)."""
    sub = side.subquery(f"{name}_side")
    rank = sa.func.row_number().over(order_by=(sub.c.score.desc(), sub.c.id))
    return sa.select(sub.c.id, sub.c.score, rank.label("rank")).subquery(f"{name}_ranked")


def _fused(
    lex: Any,
    den: Any,
    *,
    k: int,
    fusion: str,
    rrf_k: int,
    bm25_weight: float,
    dense_weight: float,
    alpha: float,
) -> Any:
    """``SELECT id, score`` of the two ranked sides fused as ``pgembed.fuse`` fuses them."""
    f8 = sa.Float
    one = sa.literal(1.0, f8)

    def p(name: str, value: Any, type_: Any = f8) -> Any:
        return sa.bindparam(name, value, type_=type_, unique=True)

    if fusion == "rrf":
        kk = sa.cast(p("rrf_k", rrf_k, sa.Integer), f8)
        parts = [
            sa.select(side.c.id, (p(name, w) / (kk + sa.cast(side.c.rank, f8))).label("s"))
            for side, name, w in ((lex, "bm25_weight", bm25_weight),
                                  (den, "dense_weight", dense_weight))
        ]  # fmt: skip
    else:
        a = p("alpha", alpha)
        parts = []
        for side, weight in ((lex, one - a), (den, a)):
            lo = sa.func.min(side.c.score).over()
            hi = sa.func.max(side.c.score).over()
            normed = sa.case((hi > lo, (side.c.score - lo) / (hi - lo)), else_=one)
            parts.append(sa.select(side.c.id, (weight * normed).label("s")))
    both = sa.union_all(*parts).subquery("sides")
    score = sa.func.sum(both.c.s).label("score")
    return (
        sa.select(both.c.id, score)
        .group_by(both.c.id)
        .order_by(score.desc(), both.c.id)
        .limit(k)
        .subquery("fused")
    )


def hybrid(
    entity: Any,
    text: str,
    q: Any,
    *,
    k: int = 10,
    dense: str = "knn",
    fusion: str = "rrf",
    where: Sequence[Any] = (),
    depth: int | None = None,
    rrf_k: int = 60,
    bm25_weight: float = 1.0,
    dense_weight: float = 1.0,
    alpha: float = 0.5,
    k1: float = 1.2,
    b: float = 0.75,
    prefix: int | None = None,
    q_fde: Any = None,
    candidates: int | None = None,
    config: str | None = None,
) -> sa.Select[Any]:
    """BM25 of ``text`` fused with the dense strategy ``dense`` of ``q``, under ``where``.

    Both sides run on the filtered rows, ``depth`` deep each (default ``max(k, 100)``):
    BM25 over the rows that match a query lexeme and satisfy ``where`` (IDF and average
    length from the collection's statistics of every row), and the dense search with the
    filter in its candidate stage (knn: plain HNSW; ``funnel`` needs ``prefix``;
    ``binary``: Hamming candidates, exact rerank; ``multivector``: ``q`` is the query's
    token vectors and ``q_fde`` its FDE). ``fusion`` is ``rrf`` (sum of weight / (rrf_k +
    rank)) or ``convex`` (alpha * dense + (1 - alpha) * BM25 over min-max normalised
    scores), fused in SQL as ``pgembed.fuse`` does, so every result satisfies ``where``.
    Unfiltered, knn, it returns what ``pgembed.search_hybrid`` returns, given the same
    ``hnsw.ef_search`` (the SQL function raises it to ``depth``; set it too, and
    ``hnsw.iterative_scan`` with selective filters). Returns ``SELECT <entity>, score``
    best first.
    """
    opts = strategies.check_options(
        "hybrid",
        {"dense": dense, "fusion": fusion, "rrf_k": rrf_k, "bm25_weight": bm25_weight,
         "dense_weight": dense_weight, "alpha": alpha, "depth": depth, "k1": k1, "b": b},
        k=k,
    )  # fmt: skip
    text = strategies.query_text(text)
    ent, table, pk = _entity(entity)
    n = opts.get("depth", max(k, 100))
    lex = _ranked(_bm25_side(table, pk, text, limit=n, k1=k1, b=b, where=where,
                             config=config), "bm25")  # fmt: skip
    den = _ranked(_dense_side(table, dense, q, depth=n, where=where, prefix=prefix,
                              q_fde=q_fde, candidates=candidates), "dense")  # fmt: skip
    fused = _fused(lex, den, k=k, fusion=fusion, rrf_k=rrf_k, bm25_weight=bm25_weight,
                   dense_weight=dense_weight, alpha=alpha)  # fmt: skip
    stmt = sa.select(ent, fused.c.score).join(fused, pk == fused.c.id)
    # the dense side's index stage: knn n rows; funnel 8n, binary 10n (search_hybrid's
    # depths); multivector oversample 10 over its candidates
    rows = {"knn": n, "funnel": 8 * n, "binary": 10 * n}.get(dense, 10 * max(candidates or 100, n))
    return scan.tag(stmt.order_by(fused.c.score.desc(), pk), rows, filtered=bool(where))
