"""pgembed.storage.read: binary batched reads give exactly what the text path gives."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR
from sqlalchemy.engine import Engine

from pgembed.storage import read
from pgembed.storage.columns import MultiVector, halfvec_array_literal

DIM = 5


@pytest.fixture
def table(engine: Engine) -> Iterator[sa.Table]:
    """A table of every vector type pgembed stores, with NULLs, random values, 23 rows."""
    rng = np.random.default_rng(7)
    t = sa.Table(
        f"read_{uuid.uuid4().hex[:8]}", sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("content", sa.Text),
        sa.Column("h", HALFVEC(DIM)), sa.Column("v", VECTOR(DIM)), sa.Column("b", BIT(11)),
        sa.Column("t", MultiVector(DIM)),
        sa.Column("tv", sa.types.ARRAY(VECTOR(DIM))),
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for i in range(23):
        null = i % 7 == 3
        scale = 10.0 ** rng.integers(-4, 4)  # subnormal to large halfvec values
        rows.append({
            "id": i,
            "content": None if null else f"text {i}",
            "h": None if null else (rng.standard_normal(DIM) * scale).tolist(),
            "v": None if null else rng.standard_normal(DIM).tolist(),
            "b": None if null else "".join(rng.choice(["0", "1"], 11)),
            "t": None if null else rng.standard_normal((int(rng.integers(1, 9)), DIM)),
        })  # fmt: skip
    with engine.begin() as conn:
        t.create(conn)
        conn.execute(t.insert(), rows)
        conn.execute(sa.update(t).values(tv=sa.cast(t.c.t, sa.types.ARRAY(VECTOR(DIM)))))
    yield t
    with engine.begin() as conn:
        t.drop(conn)


def _same(binary: Any, text: Any) -> None:
    if text is None:
        assert binary is None
    elif isinstance(binary, np.ndarray) and binary.dtype == bool:
        assert "".join("1" if b else "0" for b in binary) == str(text)
    elif isinstance(binary, np.ndarray):
        assert binary.dtype == np.float32
        want = np.asarray(text, dtype=np.float32)
        assert binary.shape == want.shape and np.array_equal(binary, want)
    else:
        assert binary == text


def test_every_type_equals_the_text_path(engine: Engine, table: sa.Table) -> None:
    # the text path of vector[]: parsed as MultiVector parses halfvec[] text
    tv = sa.type_coerce(table.c.tv, MultiVector(DIM)).label("tv")
    stmt = sa.select(*[c for c in table.c if c.name != "tv"], tv).order_by(table.c.id)
    with engine.connect() as conn:
        text_rows = conn.execute(stmt).all()
        binary_rows = list(read.rows(conn, stmt, size=4))
    assert len(binary_rows) == len(text_rows) == 23
    for b_row, t_row in zip(binary_rows, text_rows, strict=True):
        for b, t in zip(b_row, t_row, strict=True):
            _same(b, t)
    assert binary_rows[3][2] is None and binary_rows[3][5] is None  # NULL rows stay None
    assert binary_rows[0][5].ndim == 2 and binary_rows[0][5].shape[1] == DIM


def test_batches_bound_memory_and_keep_order(engine: Engine, table: sa.Table) -> None:
    stmt = sa.select(table.c.id, table.c.t).order_by(table.c.id.desc())
    with engine.connect() as conn:
        sizes = [len(b) for b in read.batches(conn, stmt, size=5)]
        ids = [r[0] for r in read.rows(conn, stmt, size=5)]
    assert sizes == [5, 5, 5, 5, 3]
    assert ids == list(range(22, -1, -1))


def test_bound_parameters_and_autocommit(engine: Engine, table: sa.Table) -> None:
    stmt = sa.select(table.c.id, table.c.h).where(table.c.id.in_([2, 5, 8])).order_by("id")
    with engine.connect() as conn:
        want = conn.execute(stmt).all()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        got = list(read.rows(conn, stmt))
    assert [r[0] for r in got] == [2, 5, 8]
    for (_, b), (_, t) in zip(got, want, strict=True):
        _same(b, t)


def test_vectors_of_differing_dimensions(engine: Engine) -> None:
    """Columns without a dimension may mix lengths; each row decodes on its own."""
    name = f"read_mixed_{uuid.uuid4().hex[:8]}"
    t = sa.Table(name, sa.MetaData(), sa.Column("id", sa.BigInteger),
                 sa.Column("h", HALFVEC()), sa.Column("t", MultiVector()))  # fmt: skip
    with engine.begin() as conn:
        t.create(conn)
        conn.execute(t.insert(), [
            {"id": 1, "h": [1.5, -2.0], "t": np.ones((2, 3))},
            {"id": 2, "h": [0.25, 3.0, 4.0], "t": np.ones((1, 2))},
            {"id": 3, "h": None, "t": None},
        ])  # fmt: skip
        # an array whose elements differ in length, as only an untyped column allows
        conn.execute(sa.text(f'UPDATE {name} SET t = \'{{"[1,2]","[3,4,5]"}}\' WHERE id = 3'))
    try:
        with engine.connect() as conn:
            got = list(read.rows(conn, sa.select(t.c.id, t.c.h).order_by(t.c.id)))
            assert np.array_equal(got[0][1], [1.5, -2.0])
            assert np.array_equal(got[1][1], [0.25, 3.0, 4.0])
            assert got[2][1] is None
            tokens = list(read.rows(conn, sa.select(t.c.t).where(t.c.id < 3).order_by(t.c.id)))
            assert [x[0].shape for x in tokens] == [(2, 3), (1, 2)]
            with pytest.raises(Exception, match="mixes dimensions"):
                list(read.rows(conn, sa.select(t.c.t).where(t.c.id == 3)))
    finally:
        with engine.begin() as conn:
            t.drop(conn)


def test_empty_array_and_literal_roundtrip(engine: Engine) -> None:
    tokens = np.array([[0.5, -1.0, 2.0], [65504.0, 6e-8, 0.0]], dtype=np.float32)
    with engine.connect() as conn:
        lit = halfvec_array_literal(tokens)
        stmt: Any = sa.select(
            sa.literal_column(f"'{lit}'::halfvec(3)[]").label("t"),
            sa.literal_column("'{}'::halfvec[]").label("e"),
        )
        ((t, e),) = read.rows(conn, stmt)
    assert np.array_equal(t, tokens.astype(np.float16).astype(np.float32))
    assert e.shape == (0, 0)


def test_topk_over_batches_equals_one_stable_sort() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(4, 101)).astype(np.float32)  # many ties
    keys = np.arange(1000, 1101)
    top = read.TopK(4, 10)
    for lo in range(0, 101, 17):
        top.push(keys[lo : lo + 17], scores[:, lo : lo + 17])
    want = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert np.array_equal(top.keys, keys[want])
    assert np.array_equal(top.scores, np.take_along_axis(scores, want, axis=1))


def test_database_errors_come_as_sqlalchemy_raises_them(engine: Engine, table: sa.Table) -> None:
    """So that db.translate_sql_errors turns them into pgembed's errors."""
    from pgembed.db import translate_sql_errors
    from pgembed.errors import CollectionError

    gone = sa.select(table.c.id, sa.literal_column("no_such_column"))
    with (
        pytest.raises(sa.exc.ProgrammingError, match="no_such_column"),
        engine.connect() as conn,
    ):
        list(read.rows(conn, gone))
    with (
        pytest.raises(CollectionError, match="no longer matches its catalog entry"),
        engine.connect() as conn,
        translate_sql_errors("docs"),
    ):
        list(read.rows(conn, gone))
