"""`pgembed quickstart`: every part on a real corpus, measured.

Starts (or reuses) the database, exports the default model if needed, builds a collection
with every kind (each vector kind and the lexical one) from the Wikipedia sample that ships
in gensim, then runs each article's held-out lead sentence as a known-item query with every
strategy: the vector ones, ``bm25`` on the text, and ``hybrid`` (BM25 fused with knn by
rrf, the defaults). For each it reports known-item recall@1/10 and MRR, recall@10 against
exact search, latency and bytes per row, and writes a PNG of quality against latency and
storage.

Exact search is exact cosine for the single-vector strategies and exact MaxSim for
multivector. bm25 is exact already (every matching row is scored), and hybrid answers a
different question than either exact ranking, so their exact-recall column is left empty
(``None``, shown as ``-``). Their latency counts the search only, as for the others (the
query is encoded beforehand); bm25's bytes per row are the lexical kind's (the tsvector
column and its GIN index), hybrid's add knn's.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from pgembed import strategies
from pgembed.storage import sizes
from pgembed.storage.schema import with_implied
from pgembed.strategies import DENSE

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pgembed.encoders import Encoder
    from pgembed.storage.schema import CollectionSpec

COLLECTION = "quickstart_wikipedia"
# pgembed.strategies owns the names: every vector strategy, then the lexical ones.
STRATEGIES = (*DENSE, "bm25", "hybrid")
HYBRID_DENSE = "knn"


@dataclass
class StrategyResult:
    strategy: str
    known_recall1: float
    known_recall10: float
    mrr: float
    exact_recall10: float | None
    """None for bm25 and hybrid: no exact ranking to compare with (see the module)."""
    p50_ms: float
    p95_ms: float
    bytes_per_row: float


def _exact_top10(
    engine: Engine,
    t: sa.Table,
    qvecs: np.ndarray[Any, Any],
    qtoks: list[np.ndarray[Any, Any]],
    *,
    batch: int = 256,
) -> tuple[list[list[int]], list[list[int]]]:
    """Ids of each query's 10 nearest rows by exact cosine and by exact MaxSim.

    The ground truth comes from the stored (halfvec) vectors, exactly what the searches
    see, read back in batches: memory follows the batch, not the corpus.
    """
    from pgembed.storage import read
    from pgembed.vectors.maxsim import maxsim_matrix_packed, pack_token_sets

    q_flat, q_offsets = pack_token_sets(qtoks, name="query")
    dense, multi = read.TopK(len(qvecs), 10), read.TopK(len(qtoks), 10)
    stmt = sa.select(t.c.id, t.c.embedding, t.c.tokens).order_by(t.c.id)
    with engine.connect() as conn:
        for rows in read.batches(conn, stmt, size=batch):
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            dense.push(ids, qvecs @ np.stack([r[1] for r in rows]).T)
            flat, offsets = pack_token_sets([r[2] for r in rows], name="document")
            multi.push(ids, maxsim_matrix_packed(q_flat, q_offsets, flat, offsets))
    return dense.keys.tolist(), multi.keys.tolist()


def _bytes_per_row(engine: Engine, spec: CollectionSpec) -> dict[str, float]:
    """Bytes per row of what each strategy reads: its kind's columns and indexes, and the
    columns of the kind it reranks on (not that kind's indexes)."""
    with engine.connect() as conn:
        parts = sizes.breakdown(conn, spec)
    out = {}
    for s in (*DENSE, "bm25"):
        kind, *rerank = with_implied(strategies.KIND[s])
        out[s] = sum(parts[kind]) + sum(parts[k][0] for k in rerank)
    out["hybrid"] = out["bm25"] + out[HYBRID_DENSE]
    return out


def run(
    engine: Engine | None = None,
    *,
    encoder: Encoder | None = None,
    max_articles: int | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
) -> list[StrategyResult]:
    """Build the quickstart collection and measure every strategy; returns the table rows."""
    from tqdm.auto import tqdm

    from pgembed import Collection, Encoder, corpus, db, migrate
    from pgembed.errors import UnknownCollectionError

    engine = engine or db.create_engine()
    migrate.upgrade(engine)
    enc = encoder or Encoder.load("all-minilm-l6-v2")
    data = corpus.wikipedia(max_articles=max_articles)
    texts = [p.text for p in data.passages]
    articles = np.array([p.article for p in data.passages])

    coll = Collection(
        engine, COLLECTION, enc,
        kinds=("single", "matryoshka", "binary", "fde", "multivector", "lexical"), binary_bits=2,
    )  # fmt: skip
    with contextlib.suppress(UnknownCollectionError):  # start afresh each run
        Collection.open(engine, COLLECTION, enc).drop(force=True)
    coll.create()
    coll.add(texts, range(len(texts)), progress=progress)

    qtexts = [q.text for q in data.queries]
    qvecs, qtoks = enc.encode_both(qtexts, "query", progress=False)
    exact_dense, exact_ms = _exact_top10(engine, coll.table(), qvecs, qtoks)

    results = []
    bar = tqdm(total=len(STRATEGIES) * len(qtexts), desc="search", disable=not progress)
    sizes = _bytes_per_row(engine, coll.spec)
    with bar:
        for strategy in STRATEGIES:
            lat, hits1, hits10, rr, rec = [], 0, 0, 0.0, 0.0
            for qi in range(len(qtexts)):
                t0 = time.perf_counter()
                found = _search(coll, strategy, qtexts[qi], qvecs[qi], qtoks[qi])
                lat.append((time.perf_counter() - t0) * 1000)
                arts = [articles[i] for i in found]
                target = data.queries[qi].article
                if arts and arts[0] == target:
                    hits1 += 1
                if target in arts:
                    hits10 += 1
                    rr += 1.0 / (arts.index(target) + 1)
                exact = exact_ms[qi] if strategy == "multivector" else exact_dense[qi]
                rec += len(set(found) & set(exact)) / 10
                bar.update()
            n = len(qtexts)
            results.append(StrategyResult(
                strategy, hits1 / n, hits10 / n, rr / n, rec / n if strategy in DENSE else None,
                float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), sizes[strategy],
            ))  # fmt: skip
    if out_dir is not None:
        plot(results, Path(out_dir) / "quickstart.png")
    return results


def _search(
    coll: Any, strategy: str, text: str, qvec: np.ndarray[Any, Any], qtok: np.ndarray[Any, Any]
) -> list[int]:
    """Ids of the top 10 of one strategy; the query is encoded already (text for bm25)."""
    from pgembed import sqlfuncs

    if strategy == "bm25":
        return [i for i, _ in coll.search(text, k=10, strategy="bm25")]
    if strategy == "hybrid":
        hits = sqlfuncs.search_hybrid(coll.spec.name, text, qvec, 10, dense=HYBRID_DENSE)
        with coll.engine.connect() as conn:
            return [int(i) for i, _ in conn.execute(sa.select(hits))]
    q = qtok if strategy == "multivector" else qvec
    return [i for i, _ in coll.search(q, k=10, strategy=strategy)]


def format_table(results: list[StrategyResult]) -> str:
    head = (f"{'strategy':<12} {'R@1':>6} {'R@10':>6} {'MRR':>6} {'exact R@10':>10} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'bytes/row':>10}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        exact = "-" if r.exact_recall10 is None else f"{r.exact_recall10:.3f}"
        lines.append(
            f"{r.strategy:<12} {r.known_recall1:>6.3f} {r.known_recall10:>6.3f} {r.mrr:>6.3f} "
            f"{exact:>10} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.bytes_per_row:>10.0f}"
        )
    return "\n".join(lines)


def plot(results: list[StrategyResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "osD^vPX"
    for i, r in enumerate(results):
        style = {"s": 70, "marker": markers[i % len(markers)], "label": r.strategy}
        axes[0].scatter(r.p50_ms, r.known_recall10, **style)
        axes[1].scatter(r.bytes_per_row, r.known_recall10, **style)
    axes[0].set_xlabel("median latency (ms)")
    axes[0].set_xscale("log")
    axes[1].set_xlabel("bytes per row (columns + indexes)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("known-item recall@10")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        lo = min(r.known_recall10 for r in results)
        ax.set_ylim(max(0.0, lo - 0.05), 1.01)
    fig.suptitle("pgembed quickstart: Wikipedia sample, lead sentence → its article")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def as_dicts(results: list[StrategyResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
