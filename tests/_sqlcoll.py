"""Seeded collections for the SQL-function tests (tests/sql/, tests/migrations/).

Small enough for brute force: with ef_search and candidate counts covering every row, each
search must return exactly what numpy returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed.storage import catalog, ingest
from pgembed.storage.schema import CollectionSpec, table
from pgembed.vectors import binary
from pgembed.vectors.fde import FDEConfig, FDEEncoder

D = 32
N = 240
K = 10
ENC = catalog.EncoderRecord(name="sqlfuncs-enc", fingerprint="f" * 64, dim=D, max_length=64)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _half(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.asarray(x, dtype=np.float16), dtype=np.float32)


def _topk(scores: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    order = np.lexsort((ids, -scores))  # score desc, then id, like the SQL functions
    return [int(i) for i in ids[order[:k]]]


class Coll:
    def __init__(
        self, spec: CollectionSpec, fde: FDEEncoder, fde_id: int, data: dict[str, Any]
    ) -> None:
        self.spec, self.fde, self.fde_id = spec, fde, fde_id
        self.ids: np.ndarray = data["ids"]
        self.emb: np.ndarray = data["emb"]
        self.tokens: list[np.ndarray] = data["tokens"]
        self.bits: np.ndarray | None = data["bits"]

    def cos(self, q: np.ndarray) -> np.ndarray:
        e = _half(self.emb)
        qh = _half(q)
        return np.asarray((e @ qh) / (np.linalg.norm(e, axis=1) * np.linalg.norm(qh)))


def _make(
    engine: Engine, name: str, cfg: FDEConfig, seed: int, bits: int = 2, **spec_kw: Any
) -> Coll:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, D))
    emb = _unit(centers[rng.integers(0, 12, N)] + 0.6 * rng.normal(size=(N, D)))
    tokens = [
        _unit(centers[rng.integers(0, 12)] + rng.normal(size=(int(rng.integers(2, 9)), D)))
        for _ in range(N)
    ]
    fde = FDEEncoder(cfg)
    spec = CollectionSpec(
        name,
        D,
        ENC.name,
        kinds=("single", "matryoshka", "binary", "fde"),
        matryoshka_dims=(8, 16),
        binary_bits=bits,
        fde_dim=cfg.output_dim,
        text_column=None,
        **spec_kw,
    )
    ids = np.arange(N, dtype=np.int64) * 7 + 3
    codes = binary.pack_residual(emb, bits) if bits > 1 else None
    with engine.begin() as conn:
        catalog.register_encoder(conn, ENC)
        fde_id = catalog.save_fde_config(conn, fde)
        catalog.register_collection(conn, spec, fde_id)
        table(spec, sa.MetaData()).create(conn)
        rows = ingest.Rows(
            ids=ids, embedding=emb, embedding_bits=codes, fde=fde.encode_document(tokens),
            tokens=tokens,
        )  # fmt: skip
        ingest.write(conn, spec, rows)
        conn.execute(sa.text("ANALYZE " + _qualified(conn, spec)))
    return Coll(spec, fde, fde_id, {"ids": ids, "emb": emb, "tokens": tokens, "bits": codes})


def _qualified(conn: sa.Connection, spec: CollectionSpec) -> str:
    prep = sa.sql.compiler.IdentifierPreparer(conn.dialect)
    return f"{prep.quote(spec.schema)}.{prep.quote(spec.table_name)}"


def _drop(engine: Engine, coll: Coll) -> None:
    with engine.begin() as conn:
        table(coll.spec, sa.MetaData()).drop(conn)
        catalog.unregister_collection(conn, coll.spec.name)


def _rows(engine: Engine, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(stmt, params or {}).all())


def _search(engine: Engine, hits: Any) -> tuple[list[int], np.ndarray]:
    with engine.connect() as conn:
        return _search_on(conn, hits)


def _search_on(conn: sa.Connection, hits: Any) -> tuple[list[int], np.ndarray]:
    rows = conn.execute(sa.select(hits)).all()
    return [int(r[0]) for r in rows], np.array([r[1] for r in rows])


def _queries(seed: int, n: int = 4) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, D)))


def _plans(engine: Engine, hits: Any) -> str:
    """The plans of the statements a search runs (auto_explain, nested, as NOTICEs)."""
    notices: list[str] = []
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.add_notice_handler(lambda d: notices.append(d.message_primary or ""))  # type: ignore[union-attr]
        conn.execute(sa.text("LOAD 'auto_explain'"))
        # 240 rows are cheaper to sort than to search: forbid seq scans, so a plan without
        # the index would mean the search's expression does not match the index's.
        settings = ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice")
        conn.execute(sa.text("SET enable_seqscan = off"))
        for s in settings:
            conn.execute(sa.text(f"SET auto_explain.{s}"))
        conn.execute(sa.select(hits)).all()
        conn.rollback()
    return "\n".join(notices)
