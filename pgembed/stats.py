"""`pgembed stats COLLECTION`: a health report of a collection.

- rows, and rows holding each kind; bytes per row of each kind (column + its indexes);
- effective rank of the stored embeddings (RankMe: exp of the entropy of the normalized
  singular values), a collapse detector: far below the dimension means wasted capacity;
- norm statistics (unit norms expected for cosine collections);
- bit balance of the 1-bit codes (a bit stuck at 0 or 1 carries no information);
- FDE fill rate: the fraction of (repetition, partition) blocks that hold at least one
  document token before filling (low means most blocks are copies of a nearest token);
- recall@10 of each search strategy against exact search, on a sample of stored rows used
  as queries (the vector strategies; bm25 and hybrid take text queries);
- for the lexical kind, what its statistics table holds: the number of documents N, their
  average length (the BM25 normalisation) and the number of distinct lexemes;
- the calibration (``pgembed calibrate``): per strategy the settings measured and the best
  recall, whether it is stale (the row count moved by more than
  ``calibration.STALE_SHARE``), and the Matryoshka prefixes found weak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from pgembed.db import translate_errors, translate_sql_errors
from pgembed.errors import CollectionError
from pgembed.storage import names, read, sizes

if TYPE_CHECKING:
    from pgembed.pipeline import Collection


@dataclass
class Stats:
    collection: str
    rows: int
    kind_rows: dict[str, int]
    bytes_per_row: dict[str, float]
    effective_rank: float | None = None
    dim: int = 0
    norm_mean: float | None = None
    norm_min: float | None = None
    norm_max: float | None = None
    bit_balance_worst: float | None = None
    """max over dimensions of |P(bit = 1) - 0.5|; 0 is perfectly balanced, 0.5 a bit that
    never changes."""
    bit_worst_dimension: int | None = None
    """The dimension (0-based) of :attr:`bit_balance_worst`."""
    bit_worst_ones: float | None = None
    """Its share of rows whose bit is 1."""
    bits_stuck: int | None = None
    """Dimensions whose bit is the same in every row: they carry no information."""
    fde_fill_rate: float | None = None
    recall10: dict[str, float] = field(default_factory=dict)
    lexical_documents: int | None = None
    """N of the lexical statistics: the rows BM25 counts."""
    lexical_lexemes: int | None = None
    """Distinct lexemes held by at least one row."""
    lexical_avg_length: float | None = None
    """Average document length in lexeme positions (BM25's avgdl)."""
    calibration: dict[str, Any] | None = None
    """:class:`pgembed.calibration.Status` as a dict; None when never calibrated."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def effective_rank(x: np.ndarray[Any, Any]) -> float:
    """RankMe (Garrido et al. 2023): exp(entropy of singular values / their sum)."""
    s = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
    p = s / max(s.sum(), 1e-12) + 1e-12
    return float(np.exp(-(p * np.log(p)).sum()))


def _check_table(conn: sa.Connection, coll: Collection) -> None:
    """Refuse a table whose columns no longer match the collection's catalog entry."""
    t = coll.table()
    rows = conn.execute(
        sa.text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"
        ),
        {"t": names.qualified(t.schema or "public", t.name)},
    ).all()
    found = {str(name): str(type_) for name, type_ in rows}
    for c in t.columns:
        want = str(c.type.compile(dialect=conn.dialect)).lower()
        if found.get(c.name) != want:
            raise CollectionError(
                f"the table of collection {coll.spec.name!r} no longer matches its catalog "
                f"entry: column {c.name!r} is {found.get(c.name) or 'missing'}, expected "
                f"{want}; restore it, or drop the collection and create it again"
            )


def collect(coll: Collection, *, sample: int = 200, seed: int = 0) -> Stats:
    """Gather the report; ``sample`` rows serve as queries and for the FDE fill rate."""
    from pgembed.strategies import check_int

    sample = check_int("sample", sample, 1, 10**6)
    with translate_sql_errors(coll.spec.name):
        return _collect(coll, sample, seed)


def _collect(coll: Collection, sample: int, seed: int) -> Stats:
    spec = coll.spec
    t = coll.table()
    with translate_errors(str(coll.engine.url)):
        conn_cm = coll.engine.connect()
    with conn_cm as conn:
        _check_table(conn, coll)
        n = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
        per_row = sizes.bytes_per_row(conn, spec)
        # Rows holding each kind: non-NULL in its column; a kind without a column of its own
        # (matryoshka, 1-bit binary) lives on the embedding.
        kind_rows: dict[str, int] = {}
        for kind in spec.all_kinds:
            cols = [c for c in t.columns if c.info.get("kind") == kind] or [
                c for c in t.columns if c.info.get("kind") == "single"
            ]
            count = sa.select(sa.func.count(cols[0])) if cols else sa.select(sa.func.count())
            kind_rows[kind] = int(conn.execute(count.select_from(t)).scalar_one())
        stats = Stats(spec.name, n, kind_rows, per_row, dim=spec.dim)
        from pgembed import calibration

        status = calibration.status(conn, spec, n)
        stats.calibration = status.as_dict() if status is not None else None
        if spec.has("lexical"):
            _lexical(conn, coll, stats)
        if n == 0 or not spec.has("single"):
            return stats
        n_emb = kind_rows["single"]  # rows that hold an embedding
        if n_emb == 0:
            return stats
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(n_emb, size=min(sample, n_emb), replace=False))
        ranked = np.sort(rng.choice(n_emb, size=min(n_emb, 4096), replace=False))
        emb = t.c.embedding
        stmt = sa.select(t.c[spec.id_column], emb).where(emb.is_not(None))
        stmt = stmt.order_by(t.c[spec.id_column])  # positions and ties: in id order
        seen = _read_embeddings(conn, stmt, pick, ranked)
        k = min(10, n_emb)
        exact = _exact_neighbours(conn, stmt, seen.queries, k)  # knn at least: single is here
        tokens = None
        if spec.has("fde"):
            tok = sa.select(t.c.tokens).where(t.c[spec.id_column].in_(seen.query_ids))
            tokens = [r[0] for r in read.rows(conn, tok) if r[0] is not None]
    stats.effective_rank = effective_rank(seen.ranked)
    stats.norm_mean, stats.norm_min, stats.norm_max = seen.norms
    ones = seen.positive / n_emb
    worst = int(np.argmax(np.abs(ones - 0.5)))
    stats.bit_balance_worst = float(abs(ones[worst] - 0.5))
    stats.bit_worst_dimension, stats.bit_worst_ones = worst, float(ones[worst])
    stats.bits_stuck = int(((seen.positive == 0) | (seen.positive == n_emb)).sum())
    if tokens:
        stats.fde_fill_rate = fde_fill_rate(coll, tokens)
    stats.recall10 = _recalls(coll, seen.queries, exact, k)
    return stats


def _lexical(conn: sa.Connection, coll: Collection, stats: Stats) -> None:
    """N, average length and distinct lexemes from the lexical statistics table."""
    st = sa.table(coll.spec.lexical_stats_table, sa.column("lexeme", sa.Text),
                  sa.column("docs", sa.BigInteger), sa.column("tokens", sa.BigInteger),
                  schema=coll.spec.schema)  # fmt: skip
    row = conn.execute(sa.select(st.c.docs, st.c.tokens).where(st.c.lexeme == "")).first()
    docs, tokens = (int(row[0]), int(row[1])) if row is not None else (0, 0)
    lexemes = conn.execute(
        sa.select(sa.func.count()).select_from(st).where(st.c.lexeme != "", st.c.docs > 0)
    ).scalar_one()
    stats.lexical_documents = docs
    stats.lexical_lexemes = int(lexemes)
    stats.lexical_avg_length = tokens / docs if docs else 0.0


@dataclass
class _Seen:
    """What one pass over the stored embeddings keeps: sums and samples, not the rows."""

    query_ids: list[int]
    queries: np.ndarray[Any, Any]
    ranked: np.ndarray[Any, Any]
    norms: tuple[float, float, float]
    positive: np.ndarray[Any, Any]


def _read_embeddings(
    conn: sa.Connection, stmt: sa.Select[Any], pick: np.ndarray[Any, Any],
    ranked: np.ndarray[Any, Any],
) -> _Seen:  # fmt: skip
    """Stream the embeddings once: norms, signs, and the rows at positions pick and ranked."""
    query_ids: list[int] = []
    queries, ranked_rows = [], []
    total, low, high, positive, at = 0.0, np.inf, -np.inf, 0, 0
    for batch in read.batches(conn, stmt):
        x = np.stack([r[1] for r in batch])
        pos = np.arange(at, at + len(batch))
        at += len(batch)
        norms = np.linalg.norm(x, axis=1)
        total, low, high = total + float(norms.sum()), min(low, norms.min()), max(high, norms.max())
        positive = positive + (x > 0).sum(axis=0)
        chosen = np.isin(pos, pick)
        query_ids += [int(batch[i][0]) for i in np.flatnonzero(chosen)]
        queries.append(x[chosen])
        ranked_rows.append(x[np.isin(pos, ranked)])
    return _Seen(
        query_ids, np.concatenate(queries), np.concatenate(ranked_rows),
        (total / at, float(low), float(high)), np.asarray(positive),
    )  # fmt: skip


def _exact_neighbours(
    conn: sa.Connection, stmt: sa.Select[Any], queries: np.ndarray[Any, Any], k: int
) -> list[set[int]]:
    """Ids of each query's k nearest stored rows by exact inner product, streamed."""
    top = read.TopK(len(queries), k)
    for batch in read.batches(conn, stmt):
        ids = np.array([r[0] for r in batch], dtype=np.int64)
        top.push(ids, queries @ np.stack([r[1] for r in batch]).T)
    return [set(row) for row in top.keys.tolist()]


def fde_fill_rate(coll: Collection, tokens: list[np.ndarray[Any, Any]]) -> float:
    cfg = coll.fde.config
    blocks = cfg.num_repetitions * cfg.num_partitions
    filled = [len(np.unique(coll.fde.partitions(t))) / blocks for t in tokens if len(t)]
    return float(np.mean(filled)) if filled else 0.0


def _recalls(
    coll: Collection, queries: np.ndarray[Any, Any], exact: list[set[int]], k: int
) -> dict[str, float]:
    from pgembed.strategies import STRATEGIES

    out: dict[str, float] = {}
    for strategy, s in STRATEGIES.items():
        if s.tokens or s.text or not coll.spec.has(s.kind):
            continue  # multivector needs token queries, bm25 and hybrid text: see the quickstart
        hits = 0.0
        for q, want in zip(queries, exact, strict=True):
            got = {r for r, _ in coll.search(q, k=k, strategy=strategy)}
            hits += len(want & got) / k
        out[strategy] = hits / len(queries)
    return out


def format_stats(s: Stats) -> str:
    lines = [f"collection {s.collection}: {s.rows} rows, dim {s.dim}"]
    for kind, rows in s.kind_rows.items():
        lines.append(f"  {kind:<12} {rows:>8} rows  {s.bytes_per_row.get(kind, 0):>9.0f} B/row")
    if s.effective_rank is not None:
        lines.append(f"  effective rank (RankMe) {s.effective_rank:.1f} of {s.dim}")
        lines.append(f"  norms mean {s.norm_mean:.4f}  min {s.norm_min:.4f}  max {s.norm_max:.4f}")
        lines.append(_balance_line(s))
    if s.fde_fill_rate is not None:
        lines.append(f"  FDE blocks filled by tokens: {s.fde_fill_rate:.3f}")
    if s.lexical_documents is not None:
        lines.append(
            f"  lexical: N {s.lexical_documents}, {s.lexical_lexemes} distinct lexemes, "
            f"average length {s.lexical_avg_length:.1f}"
        )
    for strategy, r in s.recall10.items():
        lines.append(f"  recall@10 vs exact, {strategy:<8} {r:.3f}")
    lines += _calibration_lines(s)
    return "\n".join(lines)


def _balance_line(s: Stats) -> str:
    """The 1-bit codes' worst dimension as a share of ones, flagged when bits never change."""
    line = (
        f"  bit balance: dimension {s.bit_worst_dimension} is 1 in {s.bit_worst_ones:.1%} of "
        f"rows (balanced: 50%)"
    )
    if s.bits_stuck:
        line += (
            f"; {s.bits_stuck} of {s.dim} dimensions never change (STUCK: they carry no "
            "information for binary search)"
        )
    return line


def _calibration_lines(s: Stats) -> list[str]:
    from pgembed.calibration import STALE_SHARE

    cal = s.calibration
    if cal is None:
        return ["  calibration: none (run `pgembed calibrate` for target_recall)"]
    lines = []
    for strategy, c in cal["strategies"].items():
        stale = c["rows"] != s.rows
        lines.append(
            f"  calibration {strategy:<11} {c['settings']} settings, best recall@{c['k']} "
            f"{c['best_recall']:.3f}, on {c['rows']} rows ({c['calibrated_at'][:19]})"
            + (" STALE" if stale and cal["stale"] else "")
        )
    if cal["stale"]:
        lines.append(
            f"  calibration STALE: the row count moved by more than {STALE_SHARE:.0%} since; "
            f"run `pgembed calibrate {s.collection}` again"
        )
    for p in cal["prefixes"]:
        if p["weak"]:
            lines.append(
                f"  prefix {p['prefix']} is weak: alone it keeps {p['recall']:.2f} of the full "
                f"top-k (RankMe {p['effective_rank']:.1f}); target_recall picks it last"
            )
    return lines
