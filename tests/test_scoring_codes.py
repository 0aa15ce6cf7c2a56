"""The scoring extension's residual-code and query-FDE functions (pgembed_scoring 0.2.0):
parity of C, SQL and numpy on random and edge inputs, malformed input never crashing the
backend, and the wiring of pgembed.residual_levels / residual_similarity / fde_query.

The `both` database has pgembed's SQL functions with the extension created beside them, so
pgembed.<f> is the SQL version and pgembed_scoring.<f> the C one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _scoring import outcome, scoring_mode, server_identity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from pgembed import migrate, scoring
from pgembed.storage import catalog
from pgembed.storage.columns import VectorArray
from pgembed.vectors import binary
from pgembed.vectors.fde import FDEConfig, FDEEncoder

MakeDatabase = Callable[[], str]

# --- residual codes ------------------------------------------------------------------------


def _vec(x: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in x) + "]"


def _levels(
    conn: sa.Connection, fn: str, x: np.ndarray, bits: int
) -> tuple[list[str], list[float]]:
    row = conn.execute(
        sa.text(f"SELECT codes::text[], scales FROM {fn}(CAST(:q AS vector), :b)"),
        {"q": _vec(x), "b": bits},
    ).one()
    return list(row[0]), list(row[1])


def _edge_vector(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(d, dtype=np.float32)
    if kind == "huge":
        return rng.uniform(-3e38, 3e38, size=d).astype(np.float32)
    if kind == "tiny":
        return rng.uniform(-1e-30, 1e-30, size=d).astype(np.float32)
    if kind == "one-sided":
        return np.abs(rng.standard_normal(d)).astype(np.float32)
    return rng.standard_normal(d).astype(np.float32)


@pytest.mark.parametrize("d", [1, 5, 30, 64, 384])
@pytest.mark.parametrize("bits", [1, 2, 3, 5])
@pytest.mark.parametrize("kind", ["random", "zeros", "huge", "tiny", "one-sided"])
def test_residual_levels_c_sql_numpy_agree(both: Engine, d: int, bits: int, kind: str) -> None:
    x = _edge_vector(kind, d, np.random.default_rng(d * 100 + bits))
    with both.connect() as conn:
        c = _levels(conn, "pgembed_scoring.residual_levels", x, bits)
        s = _levels(conn, "pgembed.residual_levels", x, bits)
    assert c == s  # the same float8 arithmetic in the same order: equal to the bit
    code = binary.residual_encode(x, bits)
    want = [binary.bit_text(lv) for lv in binary.unpack_bits(code.levels[0], d)]
    assert c[0] == want
    assert "".join(c[0]) == binary.residual_texts(code)[0]
    np.testing.assert_allclose(c[1], code.scales[0], rtol=1e-6)


def _similarity(
    conn: sa.Connection, fn: str, codes: list[str], scales: list[float], doc: str
) -> Any:
    return conn.execute(
        sa.text(
            f"SELECT {fn}(CAST(:c AS bit varying[]), CAST(:s AS float8[]), CAST(:d AS bit varying))"
        ),
        {"c": codes, "s": scales, "d": doc},
    ).scalar_one()


@pytest.mark.parametrize(
    ("d", "q_bits", "doc_bits"), [(384, 2, 2), (30, 3, 3), (5, 1, 2), (77, 4, 4), (64, 2, 3)]
)
def test_residual_similarity_c_sql_numpy_agree(
    both: Engine, d: int, q_bits: int, doc_bits: int
) -> None:
    rng = np.random.default_rng(d + q_bits)
    q = rng.standard_normal(d).astype(np.float32)
    docs = rng.standard_normal((12, d)).astype(np.float32)
    qcode = binary.residual_encode(q, q_bits)
    codes = [binary.bit_text(lv) for lv in binary.unpack_bits(qcode.levels[0], d)]
    scales = [float(s) for s in qcode.scales[0]]
    stored = binary.residual_texts(binary.residual_encode(docs, doc_bits))
    # numpy: the inner product of the reconstructions, the query's scales standing in for the
    # document's, over the query's levels of each document code
    first = binary.residual_from_packed(
        binary.pack_bits(np.array([[ch == "1" for ch in t[: q_bits * d]] for t in stored])),
        np.repeat(qcode.scales, len(docs), axis=0),
        d,
    )
    want = binary.residual_inner_product(qcode, first)[0]
    with both.connect() as conn:
        for doc, w in zip(stored, want, strict=True):
            c = _similarity(conn, "pgembed_scoring.residual_similarity", codes, scales, doc)
            s = _similarity(conn, "pgembed.residual_similarity", codes, scales, doc)
            assert c == pytest.approx(s, rel=1e-12, abs=1e-9)
            assert c == pytest.approx(float(w), rel=1e-5, abs=1e-5 * sum(scales) ** 2 * d)


_bits = st.text(alphabet="01", min_size=0, max_size=20)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    codes=st.lists(st.one_of(st.none(), _bits), max_size=4),
    scales=st.lists(st.one_of(st.none(), st.floats(-4, 4)), max_size=5),
    doc=_bits,
    two_d=st.booleans(),
)
def test_malformed_residual_similarity_errors_cleanly(
    both: Engine, codes: list[str | None], scales: list[float | None], doc: str, two_d: bool
) -> None:
    items = ["NULL" if c is None else f'"{c}"' for c in codes]
    lit = "{" + ",".join(items) + "}"
    if two_d and items:
        lit = "{" + lit + "}"
    args = {
        "c": lit,
        "s": "{" + ",".join("NULL" if s is None else repr(s) for s in scales) + "}",
        "d": doc,
    }
    call = "(CAST(:c AS bit varying[]), CAST(:s AS float8[]), CAST(:d AS bit varying))"
    with both.connect() as conn:
        before = server_identity(conn)
        c = outcome(conn, f"SELECT pgembed_scoring.residual_similarity{call}", args)
        s = outcome(conn, f"SELECT pgembed.residual_similarity{call}", args)
        assert server_identity(conn) == before  # same backend, no postmaster restart
    assert c[0] in {"ok", "22023", "22004", "22000", "2202E", "22003"}, c
    if c[0] == "22003":  # float8 overflow or underflow: PostgreSQL's own error, as in SQL
        assert s == c
        return
    if c[0] != "ok":
        assert "pgembed_scoring.residual_similarity: " in c[1]
        return
    # accepted: well-formed levels, so the SQL version computes the same number
    assert s[0] == "ok", (c, s)
    assert c[1] == pytest.approx(s[1], rel=1e-12, abs=1e-9)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=12),
    bits=st.integers(-2, 18),
)
def test_residual_levels_any_vector_and_bits(both: Engine, values: list[float], bits: int) -> None:
    x = np.array(values, dtype=np.float32)
    with both.connect() as conn:
        before = server_identity(conn)
        sql = "SELECT codes::text[], scales FROM {}(CAST(:q AS vector), :b)"
        args = {"q": _vec(x), "b": bits}
        c = _outcome_row(conn, sql.format("pgembed_scoring.residual_levels"), args)
        s = _outcome_row(conn, sql.format("pgembed.residual_levels"), args)
        assert server_identity(conn) == before
    assert c == s  # the same levels, or the same error (bits out of 1..16, float4 underflow)


def _outcome_row(conn: sa.Connection, sql: str, args: dict[str, Any]) -> tuple[str, Any]:
    try:
        with conn.begin_nested():
            row = conn.execute(sa.text(sql), args).one()
            return "ok", (list(row[0]), list(row[1]))
    except sa.exc.DBAPIError as exc:
        orig: Any = exc.orig
        return str(orig.sqlstate), str(orig).splitlines()[0]


# --- the query FDE ---------------------------------------------------------------------------

FDE_CONFIGS = [
    FDEConfig(48, 5, 3, "ams_sketch", 6, seed=31),
    FDEConfig(48, 3, 2, "identity", seed=32),
    FDEConfig(48, 4, 0, "ams_sketch", 8, seed=33),
    FDEConfig(48, 4, 3, "ams_sketch", 8, final_projection_dimension=50, seed=34),
    FDEConfig(48, 2, 4, "identity", final_projection_dimension=300, seed=35),
    FDEConfig(48, 1, 1, "identity", seed=36),
]

C_FDE = (
    "SELECT pgembed_scoring.fde_query(CAST(:q AS vector[]), f.num_repetitions, "
    "f.num_simhash_projections, f.projection_dimension, f.output_dimension, f.simhash, "
    "f.ams_index, f.ams_sign, f.final_index, f.final_sign)::real[] "
    "FROM pgembed.fde_configs AS f WHERE f.id = :id"
)
SQL_FDE = "SELECT pgembed.fde_query(CAST(:id AS integer), CAST(:q AS vector[]))::real[]"


@pytest.fixture(scope="module")
def fde_ids(both: Engine) -> dict[int, int]:
    with both.begin() as conn:
        return {cfg.seed: catalog.save_fde_config(conn, FDEEncoder(cfg)) for cfg in FDE_CONFIGS}


def _tokens(q: np.ndarray) -> str:
    return str(VectorArray().bind_processor(None)(q))


@pytest.mark.parametrize(
    "cfg",
    FDE_CONFIGS,
    ids=lambda c: f"R{c.num_repetitions}k{c.num_simhash_projections}{c.projection[:3]}",
)
@pytest.mark.parametrize("n", [1, 7, 32])
def test_fde_query_c_sql_numpy_agree(
    both: Engine, fde_ids: dict[int, int], cfg: FDEConfig, n: int
) -> None:
    rng = np.random.default_rng(cfg.seed * 10 + n)
    q = rng.standard_normal((n, cfg.dimension)).astype(np.float32)
    args = {"q": _tokens(q), "id": fde_ids[cfg.seed]}
    with both.connect() as conn:
        c = np.array(conn.execute(sa.text(C_FDE), args).scalar_one(), dtype=np.float64)
        s = np.array(conn.execute(sa.text(SQL_FDE), args).scalar_one(), dtype=np.float64)
    want = FDEEncoder(cfg).encode_query([q])[0].astype(np.float64)
    scale = float(np.abs(q).sum(axis=0).max())  # the largest block sum could reach this
    np.testing.assert_allclose(c, s, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5 * scale)
    assert np.count_nonzero(c) > 0


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tokens=st.lists(
        st.one_of(st.none(), st.integers(1, 4).map(lambda n: [0.5 - i for i in range(n)])),
        max_size=4,
    ),
    r=st.one_of(st.none(), st.integers(-1, 3)),
    k=st.integers(-1, 3),
    dp=st.integers(0, 4),
    dout=st.integers(-1, 40),
    simhash=st.one_of(
        st.none(), st.lists(st.one_of(st.none(), st.floats(-1, 1, width=32)), max_size=30)
    ),
    ams=st.one_of(st.none(), st.lists(st.integers(-1, 4), max_size=8)),
    final=st.one_of(st.none(), st.lists(st.integers(-1, 40), max_size=40)),
)
def test_malformed_fde_inputs_error_cleanly(
    both: Engine,
    tokens: list[list[float] | None],
    r: int | None,
    k: int,
    dp: int,
    dout: int,
    simhash: list[float | None] | None,
    ams: list[int] | None,
    final: list[int] | None,
) -> None:
    def arr(xs: list[Any] | None) -> str | None:
        return (
            None
            if xs is None
            else "{" + ",".join("NULL" if x is None else str(x) for x in xs) + "}"
        )

    items = ["NULL" if t is None else '"[' + ",".join(map(str, t)) + ']"' for t in tokens]
    args = {
        "q": "{" + ",".join(items) + "}", "r": r, "k": k, "dp": dp, "dout": dout,
        "sh": arr(simhash), "ai": arr(ams), "as": arr(None if ams is None else [1.0] * len(ams)),
        "fi": arr(final), "fs": arr(None if final is None else [-1.0] * len(final)),
    }  # fmt: skip
    sql = (
        "SELECT pgembed_scoring.fde_query(CAST(:q AS vector[]), CAST(:r AS int), :k, :dp, :dout, "
        "CAST(:sh AS real[]), CAST(:ai AS int[]), CAST(:as AS real[]), CAST(:fi AS int[]), "
        "CAST(:fs AS real[]))::real[]"
    )
    with both.connect() as conn:
        before = server_identity(conn)
        got = outcome(conn, sql, args)
        assert server_identity(conn) == before
    assert got[0] in {"ok", "22023", "22004", "22000", "2202E", "54000"}, got
    if got[0] != "ok":
        assert got[1].startswith("pgembed_scoring.fde_query: "), got
    else:
        assert len(got[1]) == dout and all(np.isfinite(got[1]))


# --- wiring ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wired(built: Path, make_database: MakeDatabase) -> Iterator[Engine]:
    eng = sa.create_engine(make_database())
    with scoring_mode("auto"):
        migrate.upgrade(eng)
    yield eng
    eng.dispose()


def test_wired_functions_run_c_with_the_sql_markings(wired: Engine, both: Engine) -> None:
    query = (
        "SELECT p.oid::regprocedure::text, p.provolatile, p.proisstrict, p.proparallel, "
        "p.prosecdef, p.proconfig, pg_get_function_result(p.oid), l.lanname "
        "FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE p.pronamespace = 'pgembed'::regnamespace AND p.proname = ANY(:names) ORDER BY 1"
    )
    names = [w.name for w in scoring.WIRED]
    with wired.connect() as conn:
        c_rows = conn.execute(sa.text(query), {"names": names}).all()
        assert scoring.in_c(conn) == dict.fromkeys(names, True)
    with both.connect() as conn:
        sql_rows = conn.execute(sa.text(query), {"names": names}).all()
        assert scoring.in_c(conn) == dict.fromkeys(names, False)
    assert [r[:7] for r in c_rows] == [r[:7] for r in sql_rows]
    langs = {r[0].split("(")[0]: r[7] for r in c_rows}
    assert langs["pgembed.residual_similarity"] == langs["pgembed.residual_levels"] == "c"
    assert langs["pgembed.fde_query"] == "plpgsql"  # the config lookup stays in SQL


def test_wired_fde_query_equals_the_sql_one_and_fails_alike(wired: Engine, both: Engine) -> None:
    cfg = FDE_CONFIGS[3]
    q = np.random.default_rng(5).standard_normal((9, cfg.dimension)).astype(np.float32)
    got = {}
    for name, eng in (("c", wired), ("sql", both)):
        with eng.begin() as conn:
            cid = catalog.save_fde_config(conn, FDEEncoder(cfg))
        with eng.connect() as conn:
            got[name] = np.array(
                conn.execute(sa.text(SQL_FDE), {"id": cid, "q": _tokens(q)}).scalar_one()
            )
            errors = [
                outcome(conn, SQL_FDE, {"id": 987654, "q": _tokens(q)}),
                outcome(conn, SQL_FDE, {"id": cid, "q": "{}"}),
                outcome(conn, SQL_FDE, {"id": cid, "q": '{"[1,2]"}'}),
            ]
            got[name + " errors"] = errors
    np.testing.assert_allclose(got["c"], got["sql"], rtol=1e-5, atol=1e-5)
    assert got["c errors"] == got["sql errors"]
    assert [e[0] for e in got["c errors"]] == ["42704", "22023", "22000"]


def test_extension_0_1_0_is_updated_and_wired(built: Path, make_database: MakeDatabase) -> None:
    eng = sa.create_engine(make_database())
    try:
        with scoring_mode("sql"):
            migrate.upgrade(eng)
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION pgembed_scoring VERSION '0.1.0'"))
            old = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_proc "
                    "WHERE pronamespace = 'pgembed_scoring'::regnamespace"
                )
            ).scalar()
        with scoring_mode("auto"):
            migrate.upgrade(eng)
        with eng.connect() as conn:
            version = conn.execute(
                sa.text("SELECT extversion FROM pg_extension WHERE extname = 'pgembed_scoring'")
            ).scalar()
            procs = (
                conn.execute(
                    sa.text(
                        "SELECT p.proname::text FROM pg_proc p "
                        "WHERE p.pronamespace = 'pgembed_scoring'::regnamespace ORDER BY 1"
                    )
                )
                .scalars()
                .all()
            )
            assert all(scoring.in_c(conn).values())
        assert version == scoring.EXTENSION_VERSION == "0.2.0"
        assert old == 3
        assert procs == [
            "fde_query", "kernel", "maxsim", "maxsim", "residual_levels", "residual_similarity",
        ]  # fmt: skip
    finally:
        eng.dispose()


def test_wiring_file_and_sql_script_cover_exactly_the_wired_functions() -> None:
    """scoring_wiring.sql replaces each overload of WIRED, and the one schema script named by
    pgembed.scoring holds each one's SQL definition, which unwiring restores."""
    from importlib import resources

    wiring = resources.files("pgembed").joinpath("sql", "scoring_wiring.sql").read_text()
    for w in scoring.WIRED:
        assert len(w.pattern().findall(wiring)) == w.overloads, w
        alone = scoring.sql_script([w.name])
        assert len(w.pattern().findall(alone)) == w.overloads, w
        assert "pgembed_scoring" not in alone  # the SQL versions, not the C ones
    everything = scoring.sql_script()
    assert everything.count("CREATE OR REPLACE FUNCTION") == sum(w.overloads for w in scoring.WIRED)
