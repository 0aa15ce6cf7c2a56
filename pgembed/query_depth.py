"""Elastic depth on the query side (2DMSE): encode a text query with fewer layers when that
still meets the recall target.

An encoder exported with ``pgembed export --layers 2,4`` carries shallower graphs
(``Encoder.load(..., layers=N)``). Where the collection's encoder has them and calibration
has query texts (the ones passed, or the stored texts of the sampled rows),
:func:`measure` encodes the texts at every depth and runs each setting of the calibration
grid of knn, funnel and binary on them, recording in ``pgembed.query_depths`` the recall@k
against exact search with the full-depth query and the encode and database time per query.
``Collection.search(text, target_recall=...)`` then encodes at the depth of the cheapest
(layers, setting) whose lower bound meets the target (:func:`pick`); at full depth it
leaves the choice to ``pgembed.calibrated_setting`` as before.

A model not trained for early exits (2DMSE, Starbucks) may keep little recall at shallow
depths: then the full depth is picked, which is the measured answer.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pgembed.calibration import _meta, grid, prefix_quality

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.encoders import Encoder
    from pgembed.pipeline import Collection

STRATEGIES = ("knn", "funnel", "binary")
"""The strategies whose query is one vector of the encoder (multivector's token vectors
are left at full depth)."""

query_depths = sa.Table(
    "query_depths",
    _meta,
    sa.Column("collection", sa.Text, primary_key=True),
    sa.Column("strategy", sa.Text, primary_key=True),
    sa.Column("setting", pg.JSONB, primary_key=True),
    sa.Column("layers", sa.Integer, primary_key=True),
    sa.Column("k", sa.Integer),
    sa.Column("recall", sa.Float),
    sa.Column("recall_low", sa.Float),
    sa.Column("encode_ms", sa.Float),
    sa.Column("ms", sa.Float),
    sa.Column("queries", sa.Integer),
    sa.Column("rows", sa.BigInteger),
    sa.Column("calibrated_at", sa.DateTime(timezone=True)),
)


@dataclass(frozen=True)
class DepthMeasured:
    strategy: str
    setting: dict[str, int]
    layers: int
    recall: float
    recall_low: float
    encode_ms: float
    ms: float


def shallow_depths(enc: Encoder) -> list[int]:
    """The encoder's exported depths below its full one."""
    return sorted(d for d in enc.manifest.depths if d < enc.manifest.num_layers)


@functools.lru_cache(maxsize=8)
def _load(path: str, name: str, layers: int, device: str, precision: str) -> Encoder:
    from pgembed.encoders import Encoder

    model_dir = Path(path).parent
    return Encoder.load(
        name, device=device, precision=precision, layers=layers, model_dir=model_dir
    )


def encoder_at(enc: Encoder, layers: int) -> Encoder:
    """The same model and precision as ``enc``, ``layers`` deep (cached)."""
    if layers == enc.layers:
        return enc
    return _load(str(enc.path), enc.name, layers, enc.device, enc.precision)


def _encode_timed(enc: Encoder, texts: Sequence[str]) -> tuple[np.ndarray[Any, Any], float]:
    """Query vectors of ``texts`` one at a time (as searches encode them) and the median
    ms per query."""
    out, times = [], []
    enc.encode([texts[0]], "query", progress=False)  # warm the session
    for t in texts:
        t0 = time.perf_counter()
        out.append(enc.encode([t], "query", progress=False)[0])
        times.append(time.perf_counter() - t0)
    return np.stack(out), 1000.0 * float(np.median(times))


def measure(
    coll: Collection,
    conn: Connection,
    texts: Sequence[str],
    own: Sequence[int | None],
    chosen: Sequence[str],
    k: int,
    progress: bool | None,
) -> list[DepthMeasured]:
    """Every (depth, setting) of the ``chosen`` strategies on the query ``texts`` (``own``:
    the stored row each text came from, left out of every result), against exact search
    with the full-depth query. Empty when the encoder has no shallower depth."""
    from pgembed import calibration as cal

    enc = coll.encoder
    depths = shallow_depths(enc)
    strategies = [s for s in chosen if s in STRATEGIES]
    if not depths or not strategies or not texts:
        return []
    full, full_ms = _encode_timed(enc, texts)
    pairs = zip(full, own, strict=True)
    exact = [cal._without(cal._exact(coll, conn, q, k + 1), o, k) for q, o in pairs]
    encoded = {enc.layers: (full, full_ms)}
    for d in depths:
        encoded[d] = _encode_timed(encoder_at(enc, d), texts)
    settings = [(s, st) for s in strategies for st in grid(coll.spec, s, k)]
    out: list[DepthMeasured] = []
    with cal._bar(len(encoded) * len(settings) * len(texts), "calibrate query depths",
                  progress) as bar:  # fmt: skip
        for layers, (qs, enc_ms) in sorted(encoded.items()):
            queries = list(zip(list(qs), own, strict=True))
            for s, st in settings:
                m = cal._measure(coll, conn, s, st, queries, exact, k, bar)
                out.append(DepthMeasured(s, st, layers, m.recall, m.recall_low, enc_ms, m.ms))
    return out


def texts_of(coll: Collection, conn: Connection, ids: Sequence[int | None]) -> list[str]:
    """The stored texts of the rows ``ids`` (empty when the collection stores no text)."""
    spec = coll.spec
    if spec.text_column is None or not ids or any(i is None for i in ids):
        return []
    t = coll.table()
    idc = t.c[spec.id_column]
    got = dict(conn.execute(sa.select(idc, t.c[spec.text_column]).where(idc.in_(list(ids)))).all())
    texts = [got.get(i) for i in ids]
    if any(not isinstance(x, str) or not x.strip() for x in texts):
        return []
    return [str(x) for x in texts]


def save(
    conn: Connection, name: str, chosen: Sequence[str], rows: int, k: int, queries: int,
    measured: Sequence[DepthMeasured],
) -> None:  # fmt: skip
    """Replace the depth rows of the strategies calibrated (in the caller's transaction)."""
    conn.execute(
        query_depths.delete().where(
            query_depths.c.collection == name, query_depths.c.strategy.in_(list(chosen))
        )
    )
    if measured:
        conn.execute(
            query_depths.insert(),
            [{"collection": name, "strategy": m.strategy, "setting": m.setting,
              "layers": m.layers, "k": k, "recall": m.recall, "recall_low": m.recall_low,
              "encode_ms": m.encode_ms, "ms": m.ms, "queries": queries, "rows": rows}
             for m in measured],
        )  # fmt: skip


@dataclass(frozen=True)
class Pick:
    layers: int
    setting: dict[str, int]
    recall_low: float
    encode_ms: float
    ms: float


def pick(
    conn: Connection, name: str, strategy: str, target: float, fixed: dict[str, Any]
) -> Pick | None:
    """The cheapest (layers, setting) by encode plus database ms whose recall_low meets
    ``target`` and agrees with the options given (``fixed``); settings on a weak prefix
    only when nothing else meets it. None when the collection has no depth calibration of
    ``strategy`` or nothing meets the target."""
    d = query_depths.c
    rows = conn.execute(
        sa.select(d.layers, d.setting, d.recall_low, d.encode_ms, d.ms).where(
            d.collection == name, d.strategy == strategy, d.recall_low >= target
        )
    ).all()
    p = prefix_quality.c
    weak = set(conn.execute(sa.select(p.prefix).where(p.collection == name, p.weak)).scalars())
    best: tuple[Any, ...] | None = None
    for layers, setting, low, enc_ms, ms in rows:
        if any(setting.get(o) != v for o, v in fixed.items() if o in setting):
            continue
        on_weak = "prefix" not in fixed and setting.get("prefix") in weak
        key = (on_weak, enc_ms + ms, -low, -layers)
        if best is None or key < best[0]:
            best = (key, Pick(int(layers), dict(setting), float(low), float(enc_ms), float(ms)))
    return None if best is None else best[1]
