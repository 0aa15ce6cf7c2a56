"""Calibration: measured recall and time of each search setting of a collection.

``Collection.calibrate`` (``pgembed calibrate COLLECTION``) takes queries (a seeded sample
of the stored rows, or texts the caller passes), computes their exact top-k in SQL (brute
force over the stored vectors with index scans off; exact MaxSim over every row for
multivector), and runs each strategy the collection stores over a grid of settings
(:func:`grid`), recording recall@k against the exact top-k and the time per query in
``pgembed.calibrations``. Searches given ``target_recall`` then run the cheapest recorded
setting that meets it (``pgembed.calibrated_setting``, in SQL).

For the Matryoshka kind it also records, per prefix, the recall@k of exact search on the
prefix alone against the full vector and the effective rank (RankMe) of the prefix, in
``pgembed.prefix_quality``. A prefix whose recall is below :data:`WEAK_RECALL` is weak:
``pgembed stats`` says so, and ``target_recall`` picks it only when no other setting meets
the target, with a warning.

A calibration is stale when the collection's row count has moved by more than
:data:`STALE_SHARE` since: ``pgembed stats`` and searches with ``target_recall`` warn.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pgembed import strategies
from pgembed.errors import CollectionError, PgembedWarning
from pgembed.storage import SCHEMA

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.pipeline import Collection
    from pgembed.storage.schema import CollectionSpec

STALE_SHARE = 0.2
"""A calibration is stale once the row count differs from the calibrated one by more than
this share of it."""
WEAK_RECALL = 0.5
"""A Matryoshka prefix is weak when exact search on it alone keeps less than this share of
the full vector's exact top-k."""
STRATEGIES = ("knn", "funnel", "binary", "multivector")
"""The strategies calibrated: the dense ones (bm25 is exact; hybrid fuses a dense one)."""

_meta = sa.MetaData(schema=SCHEMA)
calibrations = sa.Table(
    "calibrations",
    _meta,
    sa.Column("collection", sa.Text, primary_key=True),
    sa.Column("strategy", sa.Text, primary_key=True),
    sa.Column("setting", pg.JSONB, primary_key=True),
    sa.Column("k", sa.Integer),
    sa.Column("recall", sa.Float),
    sa.Column("recall_low", sa.Float),
    sa.Column("ms", sa.Float),
    sa.Column("queries", sa.Integer),
    sa.Column("rows", sa.BigInteger),
    sa.Column("seed", sa.BigInteger),
    sa.Column("calibrated_at", sa.DateTime(timezone=True)),
)
prefix_quality = sa.Table(
    "prefix_quality",
    _meta,
    sa.Column("collection", sa.Text, primary_key=True),
    sa.Column("prefix", sa.Integer, primary_key=True),
    sa.Column("k", sa.Integer),
    sa.Column("recall", sa.Float),
    sa.Column("effective_rank", sa.Float),
    sa.Column("full_effective_rank", sa.Float),
    sa.Column("weak", sa.Boolean),
    sa.Column("calibrated_at", sa.DateTime(timezone=True)),
)


class CalibrationWarning(PgembedWarning):
    """A search with target_recall ran on defaults (no calibration) or on a stale one."""


@dataclass(frozen=True)
class Measured:
    """One calibrated setting: recall@k against exact search and milliseconds per query."""

    strategy: str
    setting: dict[str, int]
    recall: float
    ms: float
    recall_low: float
    """One-sided 95% lower confidence bound of the recall over the queries
    (:func:`lower_bound`): what target_recall is held against, so that queries the
    calibration never saw meet the target too."""


@dataclass(frozen=True)
class PrefixQuality:
    prefix: int
    recall: float
    effective_rank: float
    full_effective_rank: float
    weak: bool


@dataclass
class Calibration:
    collection: str
    k: int
    queries: int
    rows: int
    seed: int | None
    measured: list[Measured]
    prefixes: list[PrefixQuality]
    depths: list[Any] = field(default_factory=list)
    """query_depth.DepthMeasured per (strategy, setting, query encoder depth), where the
    encoder has shallower exported depths and the queries have texts."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid(spec: CollectionSpec, strategy: str, k: int) -> list[dict[str, int]]:
    """The settings calibrated for ``strategy`` on ``spec`` at ``k``, cheapest first."""
    if strategy == "knn":
        return [{"ef_search": ef} for ef in (10, 20, 40, 64, 100, 200, 400) if ef >= k]
    if strategy == "funnel":
        return [
            {"prefix": m, "oversample": o}
            for m in spec.matryoshka_dims
            for o in (1, 2, 4, 8, 16, 32)
        ]
    if strategy == "binary":
        over = (1, 2, 4, 10, 20, 40)
        if spec.index.binary != "ivfflat":
            return [{"oversample": o} for o in over]
        lists = spec.index.lists
        root = math.ceil(math.sqrt(lists))
        probes = sorted({p for p in (1, root, 2 * root, 4 * root, lists) if 1 <= p <= lists})
        return [{"oversample": o, "probes": p} for o in over for p in probes]
    if strategy == "multivector":
        return [{"candidates": c} for c in sorted({k, 2 * k, 50, 100, 200, 400}) if c >= k]
    raise CollectionError(f"strategy {strategy!r} is not calibrated; choose from {STRATEGIES}")


def _bar(total: int, desc: str, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="search", disable=progress is False)


def calibrate(
    coll: Collection,
    *,
    sample: int = 100,
    queries: Sequence[str] | np.ndarray[Any, Any] | None = None,
    k: int = 10,
    seed: int = 0,
    progress: bool | None = None,
    strategies_: Sequence[str] | None = None,
) -> Calibration:
    """Measure every calibrated strategy ``coll`` stores and record it (see the module).

    ``queries``: texts (encoded as queries), or an (n, dim) array of query vectors (the
    dense strategies only), or None for ``sample`` stored rows drawn with ``seed``. Stored
    rows make optimistic queries for HNSW even with their own row left out: the search
    starts from a graph that holds them and their links. Real queries give the recall
    real queries get (benchmarks/RESULTS.md, "Recall targets").

    Where the encoder has shallower exported depths and the queries have texts (passed, or
    the sampled rows' stored texts), it also measures each query encoder depth
    (:mod:`pgembed.query_depth`)."""
    from pgembed import query_depth
    from pgembed.db import translate_sql_errors

    k = strategies.check_k(k)
    sample = strategies.check_int("sample", sample, 1, 100_000)
    seed = strategies.check_int("seed", seed, 0, 2**63 - 1)
    spec = coll.spec
    chosen = [s for s in STRATEGIES if spec.has(strategies.KIND[s])]
    if strategies_ is not None:
        unknown = [s for s in strategies_ if s not in chosen]
        if unknown:
            raise CollectionError(
                f"cannot calibrate {unknown} on collection {spec.name!r}; it stores the "
                f"calibrated strategies {chosen}"
            )
        chosen = list(strategies_)
    if not chosen:
        raise CollectionError(
            f"collection {spec.name!r} stores none of the kinds a calibrated strategy needs "
            f"({', '.join(STRATEGIES)}); it has {list(spec.all_kinds)}"
        )
    with translate_sql_errors(spec.name), _connect(coll) as conn:
        t = coll.table()
        rows = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
        key = t.c.embedding if spec.has("single") else t.c.tokens
        n_emb = int(conn.execute(sa.select(sa.func.count(key)).select_from(t)).scalar_one())
        if n_emb < k:
            raise CollectionError(
                f"collection {spec.name!r} holds {n_emb} embedded rows, fewer than k={k}; "
                "add rows or calibrate with a smaller k"
            )
        if queries is None:
            dense, tokens, dense_ids, token_ids = _sample_rows(coll, conn, sample, seed)
            used_seed: int | None = seed
            texts = query_depth.texts_of(coll, conn, dense_ids) if dense_ids else []
        elif isinstance(queries, np.ndarray):
            if "multivector" in chosen:
                raise CollectionError(
                    "multivector is calibrated with texts or stored rows, not query vectors; "
                    "pass strategies without multivector, or texts"
                )
            if queries.ndim != 2 or not len(queries):
                raise CollectionError(
                    f"query vectors must be an (n, {spec.dim}) array, got shape {queries.shape}"
                )
            dense = [
                strategies.query_vector(q, spec.dim, precision=spec.precision) for q in queries
            ]
            tokens, dense_ids, token_ids = [], [None] * len(dense), []
            used_seed = None
            texts = []
        else:
            dense, tokens = _encode(coll, queries, spec.has("single"), "multivector" in chosen)
            dense_ids, token_ids = [None] * len(dense), [None] * len(tokens)
            used_seed = None
            texts = list(queries) if spec.has("single") else []
        n_queries = max(len(dense), len(tokens))
        dense_used = any(s != "multivector" for s in chosen)
        total = (len(dense) if dense_used else 0) + sum(
            (len(tokens) if s == "multivector" else len(dense))
            * (len(grid(spec, s, k)) + (s == "multivector"))
            for s in chosen
        )
        measured: list[Measured] = []
        with _bar(total, f"calibrate {spec.name}", progress) as bar:
            exact: list[list[int]] = []
            if dense_used:
                exact = [
                    _without(_exact(coll, conn, q, k + 1), own, k)
                    for q, own in _ticking(list(zip(dense, dense_ids, strict=True)), bar)
                ]
            for s in chosen:
                qs = list(zip(dense, dense_ids, strict=True))
                want = exact
                if s == "multivector":
                    qs = list(zip(tokens, token_ids, strict=True))
                    want = [
                        _without(_exact_maxsim(coll, conn, q, k + 1), own, k)
                        for q, own in _ticking(qs, bar)
                    ]
                chain = [_measure(coll, conn, s, st, qs, want, k, bar) for st in grid(spec, s, k)]
                measured += _monotone_time(chain)
        prefixes = (
            _prefix_quality(coll, conn, list(zip(dense, dense_ids, strict=True)), exact, k, seed)
            if "funnel" in chosen
            else []
        )
        depths = query_depth.measure(coll, conn, texts, dense_ids, chosen, k, progress)
    cal = Calibration(spec.name, k, n_queries, rows, used_seed, measured, prefixes, depths)
    _save(coll, cal, chosen)
    return cal


def _without(ids: Sequence[int], own: int | None, k: int) -> list[int]:
    """The first k ids other than the query's own row (a stored row used as a query)."""
    return [i for i in ids if i != own][:k]


def _ticking(items: Sequence[Any], bar: Any) -> Iterator[Any]:
    for item in items:
        yield item
        bar.update(1)


@contextlib.contextmanager
def _connect(coll: Collection) -> Iterator[Connection]:
    from pgembed.db import naming_role, translate_errors

    with translate_errors(str(coll.engine.url)):
        conn = coll.engine.connect()
    with conn, naming_role(conn):
        yield conn


@contextlib.contextmanager
def _tx(conn: Connection) -> Iterator[None]:
    """A transaction of its own (settings set in it end with it)."""
    if conn.in_transaction():
        conn.rollback()
    with conn.begin():
        yield


# --- queries ---------------------------------------------------------------------------


def _sample_rows(
    coll: Collection, conn: Connection, sample: int, seed: int
) -> tuple[list[Any], list[Any], list[int | None], list[int | None]]:
    """A seeded sample of the stored rows as queries: their embeddings, their token
    vectors when the collection stores them, and the ids of both.

    Each query leaves its own row out (leave-one-out): the exact top-k and every search's
    results are taken among the other rows (the search asks for k + 1 and drops the
    query's row). A stored row is found by its own vector too easily, which would make
    recall look higher than fresh queries get."""
    from pgembed.storage import read

    spec = coll.spec
    t = coll.table()
    idc = t.c[spec.id_column]
    key = t.c.embedding if spec.has("single") else t.c.tokens
    ids = conn.execute(sa.select(idc).where(key.is_not(None)).order_by(idc)).scalars()
    all_ids = np.fromiter(ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(all_ids, size=min(sample, all_ids.size), replace=False))
    cols = [idc] + ([t.c.embedding] if spec.has("single") else [])
    cols += [t.c.tokens] if spec.has("fde") else []
    stmt = sa.select(*cols).where(idc.in_(pick.tolist())).order_by(idc)
    got = list(read.rows(conn, stmt))
    dense = [np.asarray(r[1], dtype=np.float32) for r in got] if spec.has("single") else []
    dense_ids: list[int | None] = [int(r[0]) for r in got] if spec.has("single") else []
    with_tokens = [r for r in got if r[-1] is not None and len(r[-1])] if spec.has("fde") else []
    tokens = [np.asarray(r[-1], dtype=np.float32) for r in with_tokens]
    token_ids: list[int | None] = [int(r[0]) for r in with_tokens]
    return dense, tokens, dense_ids, token_ids


def _encode(
    coll: Collection, texts: Sequence[str], with_dense: bool, with_tokens: bool
) -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]]:
    if isinstance(texts, str) or not texts:
        raise CollectionError(
            "queries must be a non-empty list of texts (or leave it out to sample stored rows)"
        )
    texts = [strategies.query_text(q) for q in texts]
    dense = list(coll.encoder.encode(texts, "query", progress=False)) if with_dense else []
    tokens = list(coll.encoder.encode_tokens(texts, "query", progress=False)) if with_tokens else []
    return dense, tokens


# --- exact search in SQL -----------------------------------------------------------------


def _no_index_scans(conn: Connection) -> None:
    """Exact search: the planner may not answer ORDER BY distance with an ANN index."""
    for name in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
        conn.execute(sa.select(sa.func.set_config(name, "off", True)))


def _exact(coll: Collection, conn: Connection, q: np.ndarray[Any, Any], k: int) -> list[int]:
    """Ids of the exact top-k by the collection's distance, brute force in SQL."""
    t = coll.table()
    col, idc = t.c.embedding, t.c[coll.spec.id_column]
    qp = sa.bindparam("q", q, type_=col.type, unique=True)
    dist = col.cosine_distance(qp) if coll.spec.distance == "cosine" else col.max_inner_product(qp)
    stmt = sa.select(idc).where(col.is_not(None)).order_by(dist, idc).limit(k)
    with _tx(conn):
        _no_index_scans(conn)
        return [int(i) for i in conn.execute(stmt).scalars()]


def _exact_maxsim(coll: Collection, conn: Connection, q: np.ndarray[Any, Any], k: int) -> list[int]:
    """Ids of the exact MaxSim top-k over every row's token vectors."""
    from pgembed import sqlfuncs

    t = coll.table()
    idc = t.c[coll.spec.id_column]
    score = sqlfuncs.maxsim(q, t.c.tokens)
    stmt = sa.select(idc).where(t.c.tokens.is_not(None))
    stmt = stmt.order_by(score.desc().nulls_last(), idc).limit(k)
    with _tx(conn):
        return [int(i) for i in conn.execute(stmt).scalars()]


def _prefix_exact(
    coll: Collection, conn: Connection, q: np.ndarray[Any, Any], m: int, k: int
) -> list[int]:
    """Ids of the exact top-k by cosine on the first m dimensions alone."""
    from pgvector.sqlalchemy import HALFVEC, VECTOR

    t = coll.table()
    col, idc = t.c.embedding, t.c[coll.spec.id_column]
    ptype = HALFVEC(m) if coll.spec.precision == "halfvec" else VECTOR(m)
    head = sa.cast(sa.func.subvector(col, 1, m), ptype)
    qp = sa.bindparam("qm", q[:m], type_=ptype, unique=True)
    stmt = sa.select(idc).where(col.is_not(None))
    stmt = stmt.order_by(head.op("<=>", return_type=sa.Float)(qp), idc).limit(k)
    with _tx(conn):
        _no_index_scans(conn)
        return [int(i) for i in conn.execute(stmt).scalars()]


# --- measuring ---------------------------------------------------------------------------


def _recall(want: Sequence[int], got: Sequence[int]) -> float:
    return len(set(want) & set(got)) / len(want) if want else 1.0


def _measure(
    coll: Collection,
    conn: Connection,
    strategy: str,
    setting: dict[str, int],
    queries: Sequence[tuple[Any, int | None]],
    exact: Sequence[Sequence[int]],
    k: int,
    bar: Any,
) -> Measured:
    """Recall and database time of one setting. The time is taken in the database
    (clock_timestamp around the search, in one statement), so the client's round trip,
    the same for every setting, does not blur the differences."""
    from pgembed import sqlfuncs

    fn: Callable[..., Any] = getattr(sqlfuncs, strategies.STRATEGIES[strategy].function)
    stmts = []
    for q, own in queries:
        kk = k if own is None else k + 1  # room for the query's own row
        opts = dict(setting)
        if "candidates" in opts:
            opts["candidates"] = max(opts["candidates"], kk)
        hits = fn(coll.spec.name, q, k=kk, **opts)
        ids = sa.select(sa.func.array_agg(hits.c.id)).scalar_subquery()
        stmts.append(sa.select(sa.func.clock_timestamp(), ids, sa.func.clock_timestamp()))
    with _tx(conn):
        conn.execute(stmts[0]).all()  # warm the plan cache and the index pages
    per_query: list[float] = []
    times: list[float] = []
    for stmt, want, (_, own) in zip(stmts, exact, queries, strict=True):
        with _tx(conn):
            start, got, end = conn.execute(stmt).one()
        times.append((end - start).total_seconds())
        per_query.append(_recall(want, _without([int(i) for i in got or []], own, k)))
        bar.update(1)
    r = np.asarray(per_query)
    # the median: one query stalled by another process does not make a setting look slow
    ms = 1000.0 * float(np.median(times))
    return Measured(strategy, dict(setting), float(r.mean()), ms, lower_bound(r))


def lower_bound(per_query: np.ndarray[Any, Any]) -> float:
    """One-sided 95% lower bound of the mean recall: mean - 1.645 standard errors, over the
    queries plus one pseudo-query of recall 0.5 (the Jeffreys prior's half a hit and half a
    miss). Per-query recall is skewed: most queries find their whole top-k and a few (an
    HNSW search stuck in another cluster) almost none, so a small sample that happens to
    miss those few would over-claim under the plain normal bound; the pseudo-query holds it
    back and fades as the sample grows (``benchmarks/calibration_bound.py``)."""
    seen = np.asarray(per_query, dtype=np.float64)
    r = np.append(seen, 0.5)
    se = float(r.std(ddof=1)) / math.sqrt(r.size)
    return min(float(seen.mean()), max(0.0, float(r.mean()) - 1.645 * se))


def _monotone_time(chain: list[Measured]) -> list[Measured]:
    """Times made non-decreasing along a grid's chain of growing settings (ef_search,
    oversample, candidates; per prefix or probes): more work never costs less, so noise
    cannot make a larger setting look cheaper than a smaller one."""
    out: list[Measured] = []
    slowest: dict[tuple[Any, ...], float] = {}
    for m in chain:  # grid() lists each chain's settings in growing order
        group = tuple((o, v) for o, v in sorted(m.setting.items()) if o in ("prefix", "probes"))
        ms = max(m.ms, slowest.get(group, 0.0))
        slowest[group] = ms
        out.append(Measured(m.strategy, m.setting, m.recall, ms, m.recall_low))
    return out


def _prefix_quality(
    coll: Collection,
    conn: Connection,
    queries: Sequence[tuple[Any, int | None]],
    exact: Sequence[Sequence[int]],
    k: int,
    seed: int,
) -> list[PrefixQuality]:
    from pgembed.stats import effective_rank

    t = coll.table()
    idc = t.c[coll.spec.id_column]
    ids = np.fromiter(
        conn.execute(sa.select(idc).where(t.c.embedding.is_not(None)).order_by(idc)).scalars(),
        dtype=np.int64,
    )
    rng = np.random.default_rng(seed + 1)
    some = np.sort(rng.choice(ids, size=min(ids.size, 2048), replace=False)).tolist()
    from pgembed.storage import read

    x = np.stack(
        [r[0] for r in read.rows(conn, sa.select(t.c.embedding).where(idc.in_(some)).order_by(idc))]
    )
    full_rank = effective_rank(x)
    out = []
    for m in coll.spec.matryoshka_dims:
        recall = float(
            np.mean(
                [
                    _recall(w, _without(_prefix_exact(coll, conn, q, m, k + 1), own, k))
                    for (q, own), w in zip(queries, exact, strict=True)
                ]
            )
        )
        out.append(
            PrefixQuality(m, recall, effective_rank(x[:, :m]), full_rank, recall < WEAK_RECALL)
        )
    return out


def _save(coll: Collection, cal: Calibration, chosen: Sequence[str]) -> None:
    """Replace the collection's calibration of the strategies measured, in one transaction."""
    from pgembed import query_depth
    from pgembed.db import translate_sql_errors

    name = cal.collection
    with translate_sql_errors(name), _connect(coll) as conn, conn.begin():
        conn.execute(
            calibrations.delete().where(
                calibrations.c.collection == name, calibrations.c.strategy.in_(list(chosen))
            )
        )
        if cal.measured:
            conn.execute(
                calibrations.insert(),
                [
                    {"collection": name, "strategy": m.strategy, "setting": m.setting,
                     "k": cal.k, "recall": m.recall, "recall_low": m.recall_low, "ms": m.ms,
                     "queries": cal.queries, "rows": cal.rows, "seed": cal.seed}
                    for m in cal.measured
                ],
            )  # fmt: skip
        query_depth.save(conn, name, chosen, cal.rows, cal.k, cal.queries, cal.depths)
        if "funnel" in chosen:
            conn.execute(prefix_quality.delete().where(prefix_quality.c.collection == name))
            if cal.prefixes:
                conn.execute(
                    prefix_quality.insert(),
                    [{"collection": name, "k": cal.k, **asdict(p)} for p in cal.prefixes],
                )


# --- reading it back ---------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """What ``pgembed stats`` says about a collection's calibration."""

    strategies: dict[str, dict[str, Any]]
    """Per strategy: k, settings measured, best recall, calibrated row count and time."""
    prefixes: list[dict[str, Any]]
    rows_now: int
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(conn: Connection, spec: CollectionSpec, rows_now: int) -> Status | None:
    """The collection's calibration, or None when it has none."""
    c = calibrations.c
    got = conn.execute(
        sa.select(
            c.strategy, sa.func.count(), sa.func.max(c.recall), sa.func.min(c.rows),
            sa.func.max(c.k), sa.func.max(c.calibrated_at),
        ).where(c.collection == spec.name).group_by(c.strategy).order_by(c.strategy)
    ).all()  # fmt: skip
    if not got:
        return None
    per = {
        str(s): {"k": int(k), "settings": int(n), "best_recall": float(best), "rows": int(rows),
                 "calibrated_at": str(at)}
        for s, n, best, rows, k, at in got
    }  # fmt: skip
    p = prefix_quality.c
    prefixes = [
        {"prefix": int(m), "recall": float(r), "effective_rank": float(er), "weak": bool(w)}
        for m, r, er, w in conn.execute(
            sa.select(p.prefix, p.recall, p.effective_rank, p.weak)
            .where(p.collection == spec.name)
            .order_by(p.prefix)
        ).all()
    ]
    stale = any(is_stale(int(str(v["rows"])), rows_now) for v in per.values())
    return Status(per, prefixes, rows_now, stale)


def is_stale(calibrated_rows: int, rows_now: int) -> bool:
    """Whether the row count moved by more than STALE_SHARE of the calibrated one."""
    return abs(rows_now - calibrated_rows) > STALE_SHARE * max(calibrated_rows, 1)


GRID_OPTIONS = {
    "knn": ("ef_search",),
    "funnel": ("prefix", "oversample"),
    "binary": ("oversample", "probes"),
    "multivector": ("candidates", "oversample"),
}
"""The options each strategy's calibration varies (pgembed.calibrated_setting's `fixed`)."""


def check_target(
    conn: Connection, spec: CollectionSpec, strategy: str, options: dict[str, Any]
) -> None:
    """Before a search with target_recall, the pick the SQL function will make: its errors
    now, and as :class:`CalibrationWarning` what it only says in a server WARNING: no
    calibration (the search runs on its defaults), a weak prefix, a stale calibration."""
    fixed = {o: options[o] for o in GRID_OPTIONS[strategy] if options.get(o) is not None}
    c = calibrations.c
    calibrated = conn.execute(
        sa.select(sa.func.min(c.rows)).where(c.collection == spec.name, c.strategy == strategy)
    ).scalar()
    if calibrated is None:
        warnings.warn(
            f"collection {spec.name!r} has no calibration of {strategy}, so target_recall "
            f"cannot be checked and the search runs on its defaults; run `pgembed calibrate "
            f"{spec.name}` (Collection.calibrate())",
            CalibrationWarning,
            stacklevel=3,
        )
        return
    chosen = conn.execute(
        sa.select(
            sa.func.pgembed.calibrated_setting(
                spec.name, strategy, sa.cast(options["target_recall"], sa.Float),
                sa.cast(sa.bindparam(None, fixed, type_=pg.JSONB), pg.JSONB),
                type_=pg.JSONB,
            )
        )
    ).scalar()  # fmt: skip
    if isinstance(chosen, dict) and "prefix" in chosen and "prefix" not in fixed:
        p = prefix_quality.c
        weak = conn.execute(
            sa.select(p.recall).where(
                p.collection == spec.name, p.prefix == int(chosen["prefix"]), p.weak
            )
        ).scalar()
        if weak is not None:
            warnings.warn(
                f"target_recall on collection {spec.name!r} runs the funnel on prefix "
                f"{chosen['prefix']}, which calibration found weak (alone it keeps "
                f"{weak:.2f} of the full top-k), because no stronger prefix meets the target; "
                "add larger Matryoshka prefixes, or search with knn",
                CalibrationWarning,
                stacklevel=3,
            )
    now = conn.execute(
        sa.text("SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = to_regclass(:t)"),
        {"t": _qualified(conn, spec)},
    ).scalar()
    if now is not None and int(now) >= 0 and is_stale(int(calibrated), int(now)):
        warnings.warn(
            f"the calibration of collection {spec.name!r} is stale: it was measured on "
            f"{int(calibrated)} rows, the table now holds about {int(now)}; run `pgembed "
            f"calibrate {spec.name}` again",
            CalibrationWarning,
            stacklevel=3,
        )


def _qualified(conn: Connection, spec: CollectionSpec) -> str:
    from pgembed.storage import names

    return names.qualified(spec.schema or "public", spec.table_name)


def load(conn: Connection, name: str) -> list[Measured]:
    """Every calibrated setting of collection ``name``, by strategy then time."""
    c = calibrations.c
    return [
        Measured(str(s), dict(setting), float(r), float(ms), float(lo))
        for s, setting, r, ms, lo in conn.execute(
            sa.select(c.strategy, c.setting, c.recall, c.ms, c.recall_low)
            .where(c.collection == name)
            .order_by(c.strategy, c.ms)
        ).all()
    ]


# --- the picture -------------------------------------------------------------------------


def plot(cal: Calibration, path: Path) -> Path:
    """Recall against ms per query, one line per strategy (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in STRATEGIES:
        pts = sorted((m.ms, m.recall) for m in cal.measured if m.strategy == s)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=s, ms=4)
    ax.set_xscale("log")
    ax.set_xlabel("ms per query (log)")
    ax.set_ylabel(f"recall@{cal.k} against exact search")
    ax.set_title(f"calibration of {cal.collection}: {cal.queries} queries, {cal.rows} rows")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_calibration(cal: Calibration) -> str:
    lines = [f"calibrated {cal.collection}: {cal.queries} queries, k={cal.k}, {cal.rows} rows"]
    for s in STRATEGIES:
        ms = [m for m in cal.measured if m.strategy == s]
        for m in ms:
            lines.append(
                f"  {s:<11} {json.dumps(m.setting):<34} recall {m.recall:.3f}  {m.ms:8.2f} ms"
            )
    for p in cal.prefixes:
        weak = "  WEAK" if p.weak else ""
        lines.append(
            f"  prefix {p.prefix:<5} alone keeps {p.recall:.3f} of the full top-{cal.k}; "
            f"RankMe {p.effective_rank:.1f} (full {p.full_effective_rank:.1f}){weak}"
        )
    for layers in sorted({d.layers for d in cal.depths}):
        at = [d for d in cal.depths if d.layers == layers]
        lines.append(
            f"  query depth {layers} layers: encode {at[0].encode_ms:.2f} ms/query, best recall "
            f"{max(d.recall for d in at):.3f} against full-depth queries"
        )
    return "\n".join(lines)
