"""Collection tables and binary COPY ingest on a real server: round trip, upsert, bad rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa
from _docs import D, N, _half, docs_table, make_data
from sqlalchemy.engine import Engine

from pgembed.errors import DimensionError, EmptyInputError, InputError, NonFiniteError
from pgembed.storage import ingest
from pgembed.storage.schema import CollectionSpec


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module")
def docs(engine: Engine, data: dict[str, np.ndarray]) -> Iterator[tuple[CollectionSpec, sa.Table]]:
    yield from docs_table(engine, data, "storage docs; DROP TABLE x")  # a hostile name stays a name


def test_copy_round_trip(engine: Engine, docs: tuple[CollectionSpec, sa.Table], data: dict) -> None:
    _spec, t = docs
    with engine.connect() as conn:
        got = conn.execute(sa.select(t).order_by(t.c.id)).mappings().all()
        md5 = conn.execute(sa.select(sa.func.md5(t.c.content)).order_by(t.c.id)).scalars().all()
    assert len(got) == N
    assert [r["id"] for r in got] == list(range(0, 3 * N, 3))
    assert got[5]["content"] == "text 5 — ünïcode"
    assert [r["embedded_hash"] for r in got] == md5
    emb = np.array([r["embedding"] for r in got], dtype=np.float32)
    np.testing.assert_array_equal(emb, _half(data["emb"]))
    assert got[0]["tokens"].shape[1] == D


def test_upsert_is_idempotent_and_updates(
    engine: Engine, docs: tuple[CollectionSpec, sa.Table], data: dict
) -> None:
    spec, t = docs
    rows = ingest.Rows(
        ids=np.array([0, 3]), texts=["new zero", "new three"],
        embedding=data["emb"][[1, 0]], tokens=[data["emb"][:2], data["emb"][:1]],
    )  # fmt: skip
    with engine.begin() as conn:
        ingest.write(conn, spec, rows)
        ingest.write(conn, spec, rows)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() == N
        assert conn.execute(sa.select(t.c.content).where(t.c.id == 3)).scalar_one() == "new three"
        texts = ["new zero", "changed", "text 2 — ünïcode", "x"]
        mask = ingest.already_embedded(conn, spec, np.array([0, 3, 6, 99999]), texts)
    assert mask.tolist() == [True, False, True, False]
    # restore
    with engine.begin() as conn:
        ingest.write(conn, spec, ingest.Rows(
            ids=np.array([0, 3]), texts=["text 0 — ünïcode", "text 1 — ünïcode"],
            embedding=data["emb"][:2], tokens=[data["emb"][:1], data["emb"][:1]],
        ))  # fmt: skip


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"embedding": np.zeros((1, D + 1), np.float32)}, DimensionError, "expects"),
        ({"embedding": np.full((1, D), np.nan, np.float32)}, NonFiniteError, "NaN"),
        ({"tokens": [np.zeros((0, D), np.float32)]}, EmptyInputError, "empty token set"),
        ({"tokens": None}, InputError, "lacks it"),
        ({"texts": ["a", "b"]}, InputError, "2 texts for 1 ids"),
    ],
)
def test_bad_rows_write_nothing(
    engine: Engine, docs: tuple[CollectionSpec, sa.Table], change: dict, error: type, message: str
) -> None:
    spec, t = docs
    base = {"ids": np.array([777777]), "texts": ["t"], "embedding": np.ones((1, D), np.float32),
            "tokens": [np.ones((2, D), np.float32)]}  # fmt: skip
    rows = ingest.Rows(**{**base, **change})
    with pytest.raises(error, match=message), engine.begin() as conn:
        ingest.write(conn, spec, rows)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id).where(t.c.id == 777777)).first() is None


def test_bad_ids() -> None:
    with pytest.raises(InputError, match="duplicate ids"):
        ingest.check_ids([1, 2, 1])
    with pytest.raises(InputError, match="integers"):
        ingest.check_ids(["a", "b"])
