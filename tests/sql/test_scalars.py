"""pgembed's scalar SQL functions (maxsim, fde_query, residual_levels) against numpy, and
the 0.4.0 input checks: values that do not survive halfvec, MaxSim's NULLs and dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _sqlcoll import Coll, D, _half, _rows, _search, _unit
from sqlalchemy.engine import Engine

from pgembed import sqlfuncs
from pgembed.db import error_for
from pgembed.errors import EmptyInputError, InputError, PgembedError
from pgembed.storage import catalog
from pgembed.vectors import binary
from pgembed.vectors.fde import FDEConfig, FDEEncoder
from pgembed.vectors.maxsim import maxsim as np_maxsim

# --- scalar functions --------------------------------------------------------------------


def test_maxsim_equals_numpy_both_overloads(engine: Engine) -> None:
    rng = np.random.default_rng(14)
    q, d = rng.normal(size=(5, D)).astype(np.float32), rng.normal(size=(7, D)).astype(np.float32)
    want = float(np_maxsim(q, [d])[0])
    got = _rows(engine, sa.select(sqlfuncs.maxsim(q, d)))[0][0]
    assert got == pytest.approx(want, rel=1e-5)
    half = _rows(engine, sa.select(sqlfuncs.maxsim(q, d, half=True)))[0][0]
    assert half == pytest.approx(float(np_maxsim(_half(q), [_half(d)])[0]), rel=1e-4)


def test_maxsim_empty_and_null(engine: Engine) -> None:
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT pgembed.maxsim('{\"[1,2]\"}'::vector[], '{}')")).scalar()
            is None
        )
        assert (
            conn.execute(sa.text("SELECT pgembed.maxsim(NULL::vector[], '{\"[1,2]\"}')")).scalar()
            is None
        )
        with pytest.raises(
            sa.exc.DBAPIError, match=r"pgembed\.maxsim: the query has no token vectors"
        ):
            conn.execute(sa.text("SELECT pgembed.maxsim('{}'::halfvec[], '{\"[1,2]\"}')"))


@pytest.mark.parametrize(
    "cfg",
    [
        FDEConfig(D, 5, 3, "ams_sketch", 6, seed=21),
        FDEConfig(D, 3, 2, "identity", seed=22),
        FDEConfig(D, 4, 0, "ams_sketch", 8, seed=23),
        FDEConfig(D, 4, 3, "ams_sketch", 8, final_projection_dimension=50, seed=24),
        FDEConfig(D, 2, 4, "identity", final_projection_dimension=300, seed=25),
    ],
    ids=["ams", "identity", "k0", "ams-final", "identity-final"],
)
def test_fde_query_equals_python(engine: Engine, cfg: FDEConfig) -> None:
    enc = FDEEncoder(cfg)
    with engine.begin() as conn:
        cid = catalog.save_fde_config(conn, enc)
    rng = np.random.default_rng(cfg.seed)
    for n in (1, 3, 17):
        q = rng.normal(size=(n, D)).astype(np.float32)
        got = np.array(_rows(engine, sa.select(sqlfuncs.fde_query(cid, q)))[0][0])
        want = enc.encode_query([q])[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_fde_query_by_collection_name(engine: Engine, coll: Coll) -> None:
    q = _unit(np.random.default_rng(15).normal(size=(3, D)))
    got = _rows(engine, sa.select(sqlfuncs.fde_query(coll.spec.name, q)))[0][0]
    np.testing.assert_allclose(got, coll.fde.encode_query([q])[0], rtol=1e-3, atol=1e-4)


def test_residual_levels_match_python(engine: Engine) -> None:
    rng = np.random.default_rng(16)
    for bits in (1, 2, 3):
        x = rng.normal(size=D).astype(np.float32)
        row = _rows(
            engine,
            sa.text(
                "SELECT codes::text[], scales FROM pgembed.residual_levels(CAST(:q AS vector), :b)"
            ),
            {"q": str(x.tolist()), "b": bits},
        )[0]
        code = binary.residual_encode(x, bits)
        assert "".join(row[0]) == binary.residual_texts(code)[0]
        np.testing.assert_allclose(row[1], code.scales[0], rtol=1e-6)


# --- 0.4.0: inputs that do not survive halfvec, MaxSim's NULLs and dimensions --------------


def _db_error(engine: Engine, sql: str, params: dict[str, Any]) -> tuple[str, Any]:
    """(SQLSTATE, pgembed's translated error) of a failing call, checked to change nothing."""
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT current_setting('hnsw.ef_search', true)")).scalar()
        sp = conn.begin_nested()
        with pytest.raises(sa.exc.DBAPIError) as info:
            conn.execute(sa.text(sql), params).all()
        sp.rollback()
        after = conn.execute(sa.text("SELECT current_setting('hnsw.ef_search', true)")).scalar()
        assert after == before
    return str(getattr(info.value.orig, "sqlstate", "")), error_for(info.value)


@pytest.mark.parametrize("fn", ["search_knn", "search_funnel", "search_binary"])
def test_query_that_underflows_as_halfvec_is_refused(engine: Engine, coll: Coll, fn: str) -> None:
    sql = f"SELECT * FROM pgembed.{fn}(:c, CAST(:q AS vector))"
    state, err = _db_error(engine, sql, {"c": coll.spec.name, "q": str([1e-9] * D)})
    assert state == "22023" and isinstance(err, InputError)
    assert "all zeros as halfvec" in str(err) and "cosine similarity is undefined" in str(err)


@pytest.mark.parametrize("fn", ["search_knn", "search_funnel", "search_binary"])
def test_query_beyond_halfvec_range_names_the_range(engine: Engine, coll: Coll, fn: str) -> None:
    sql = f"SELECT * FROM pgembed.{fn}(:c, CAST(:q AS vector))"
    q = [1e5] + [0.5] * (D - 1)
    state, err = _db_error(engine, sql, {"c": coll.spec.name, "q": str(q)})
    assert state == "22003" and isinstance(err, InputError)
    assert str(err).startswith("pgembed: the query vector holds a value of magnitude 100000")
    assert "out of range for halfvec (|x| <= 65504)" in str(err)


def test_halfvec_edge_and_vector_precision_accept_large_values(
    engine: Engine, coll: Coll, bitcoll: Coll
) -> None:
    """65519 rounds to halfvec's largest (65504); a vector collection never goes to halfvec."""
    q = np.full(D, 65519.0, dtype=np.float32)
    assert len(_search(engine, sqlfuncs.search_knn(coll.spec.name, q, 3))[0]) == 3
    big = np.full(D, 1e5, dtype=np.float32)
    for hits in (sqlfuncs.search_knn(bitcoll.spec.name, big, 3),
                 sqlfuncs.search_binary(bitcoll.spec.name, big, 3)):  # fmt: skip
        assert len(_search(engine, hits)[0]) == 3


def test_funnel_refuses_a_zero_prefix(engine: Engine, coll: Coll) -> None:
    q = np.zeros(D, dtype=np.float32)
    q[10:] = 1.0  # the first 8 (and 16) dimensions are zero
    sql = "SELECT * FROM pgembed.search_funnel(:c, CAST(:q AS vector), 5, 8)"
    state, err = _db_error(engine, sql, {"c": coll.spec.name, "q": str(q.tolist())})
    assert state == "22023" and "first 8 dimensions of the query vector are all zeros" in str(err)


@pytest.mark.parametrize("t", ["vector", "halfvec"])
@pytest.mark.parametrize(
    ("q", "d", "state", "message"),
    [
        ('{"[1,2]",NULL}', '{"[1,2]"}', "22004", "query token vector 2 is NULL"),
        ('{"[1,2]"}', '{"[3,4]",NULL,"[5,6]"}', "22004", "document token vector 2 is NULL"),
        ('{NULL}', '{"[1,2]"}', "22004", "query token vector 1 is NULL"),
        ('{"[1,2]","[1,2,3]"}', '{"[1,2]"}', "22000",
         "query token vector 2 has 3 dimensions; query token vector 1 has 2"),
        ('{"[1,2]"}', '{"[1,2]","[1,2,3]"}', "22000",
         "document token vector 2 has 3 dimensions; query token vector 1 has 2"),
    ],
)  # fmt: skip
def test_maxsim_refuses_null_tokens_and_mixed_dimensions(
    engine: Engine, t: str, q: str, d: str, state: str, message: str
) -> None:
    sql = f"SELECT pgembed.maxsim(CAST(:q AS {t}[]), CAST(:d AS {t}[]))"
    got_state, err = _db_error(engine, sql, {"q": q, "d": d})
    assert got_state == state and isinstance(err, InputError)
    # the message, then the function's HINT, if it has one
    assert str(err) == f"pgembed.maxsim: {message}" or str(err).startswith(
        f"pgembed.maxsim: {message}; "
    ), str(err)


def test_multivector_query_of_zero_tokens_is_refused(engine: Engine, coll: Coll) -> None:
    for sql, params in (
        ("SELECT * FROM pgembed.search_multivector(:c, CAST(:t AS vector[]))", {"t": "{}"}),
        ("SELECT * FROM pgembed.search_multivector(:c, CAST(:t AS vector[]))",
         {"t": '{"' + str([0.0] * D) + '"}'}),
    ):  # fmt: skip
        state, err = _db_error(engine, sql, {"c": coll.spec.name, **params})
        assert state == "22023" and isinstance(err, InputError)
        assert "no token vectors" in str(err) or "every token vector of the query is zero" in str(
            err
        )
    # the Python wrapper: an empty (0, d) array never reaches the database
    with pytest.raises(PgembedError) as info, engine.connect() as conn:
        conn.execute(sa.select(sqlfuncs.search_multivector(coll.spec.name, np.zeros((0, D)))))
    assert isinstance(info.value, EmptyInputError) and "no token vectors" in str(info.value)
