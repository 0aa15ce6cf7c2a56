"""The scoring extension (pgembed_scoring, C): parity with the SQL MaxSim and numpy, malformed
input never crashing the backend, its pg_regress pair, the build on first use, and the
wiring of pgembed.maxsim by `pgembed db upgrade` with the extension present and absent.

Runs on the real server whatever PGEMBED_SCORING says: the tests that need the extension
build it into the test server's home (skipped where no C compiler or no embedded server),
and set PGEMBED_SCORING themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from _scoring import outcome, scoring_mode, server_identity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine, make_url

from pgembed import migrate, scoring
from pgembed.server import EmbeddedServer

MakeDatabase = Callable[[], str]
EXT = Path(__file__).resolve().parent.parent / "ext"

needs_build = pytest.mark.skipif(
    bool(os.environ.get("PGEMBED_DATABASE_URL")) or scoring.compiler() is None,
    reason="builds the extension for the embedded server: needs it and a C compiler",
)


# --- parity --------------------------------------------------------------------------------


def _literal(tokens: np.ndarray, half: bool) -> str:
    fmt = (lambda x: repr(float(np.float16(x)))) if half else (lambda x: repr(float(x)))
    rows = ['"[' + ",".join(fmt(x) for x in t) + ']"' for t in tokens]
    return "{" + ",".join(rows) + "}"


def _scores(eng: Engine, q: np.ndarray, d: np.ndarray, half: bool) -> dict[str, float]:
    t = "halfvec" if half else "vector"
    args = {"q": _literal(q, half), "d": _literal(d, half)}
    out: dict[str, float] = {}
    with eng.connect() as conn:
        for name, fn in (("sql", "pgembed.maxsim"), ("c", "pgembed_scoring.maxsim")):
            sql = f"SELECT {fn}(CAST(:q AS {t}[]), CAST(:d AS {t}[]))"
            out[name] = conn.execute(sa.text(sql), args).scalar_one()
        conn.execute(sa.text("SET pgembed_scoring.kernel = portable"))
        sql = f"SELECT pgembed_scoring.maxsim(CAST(:q AS {t}[]), CAST(:d AS {t}[]))"
        out["c portable"] = conn.execute(sa.text(sql), args).scalar_one()
    return out


def _reference(q: np.ndarray, d: np.ndarray, half: bool) -> tuple[float, float, float]:
    """numpy float32 MaxSim (as the server computes each dot), float64, and a tolerance."""
    dtype = np.float16 if half else np.float32
    q32 = q.astype(dtype).astype(np.float32)
    d32 = d.astype(dtype).astype(np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        f32 = float((q32 @ d32.T).max(axis=1).astype(np.float64).sum())
    q64, d64 = q32.astype(np.float64), d32.astype(np.float64)
    f64 = float((q64 @ d64.T).max(axis=1).sum())
    scale = float((np.abs(q64) @ np.abs(d64).T).max(axis=1).sum())
    # float32 dots in any order: a few ulps of the magnitudes summed, plus denormal loss.
    return f32, f64, 4e-6 * scale * np.sqrt(q.shape[1]) + 1e-37


SHAPES = [(1, 1, 1), (1, 16, 8), (3, 15, 7), (4, 17, 128), (5, 64, 9), (32, 200, 128), (7, 65, 3)]


@pytest.mark.parametrize("half", [True, False], ids=["halfvec", "vector"])
@pytest.mark.parametrize(("nq", "nd", "dim"), SHAPES)
def test_c_sql_numpy_agree_on_random_tokens(
    both: Engine, half: bool, nq: int, nd: int, dim: int
) -> None:
    rng = np.random.default_rng(nq * 1000 + nd * 10 + dim)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    d = rng.standard_normal((nd, dim)).astype(np.float32)
    got = _scores(both, q, d, half)
    f32, f64, tol = _reference(q, d, half)
    for name, value in got.items():
        assert value == pytest.approx(f64, abs=tol), name
        assert value == pytest.approx(f32, abs=tol), name


def _adversarial(kind: str, half: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    dim = 24
    if kind == "huge":
        top = 60000.0 if half else 1e17  # dots stay finite in float32 (24 * 1e34)
        q = rng.choice([-top, top], size=(5, dim))
        d = rng.uniform(-top, top, size=(19, dim))
    elif kind == "tiny":
        low = 1e-4 if half else 1e-19  # products are float32 denormals
        q = rng.uniform(-low, low, size=(5, dim))
        d = rng.uniform(-low, low, size=(19, dim))
    elif kind == "denormal":
        # fp16 subnormals (2^-24 .. 2^-14) against ordinary values; float32 subnormals
        sub = 2.0**-20 if half else 1e-39
        q = rng.uniform(-sub, sub, size=(5, dim))
        d = rng.uniform(-2, 2, size=(19, dim))
    elif kind == "fp16-edges":
        edges = np.array([65504, -65504, 2**-24, -(2**-24), 2**-14, 0.0, -0.0, 1.0, 0.5, 2**-10])
        q = rng.choice(edges, size=(4, 6)) / (65504 if not half else 1)
        d = rng.choice(edges[2:], size=(33, 6))
    else:  # negative: every score below zero, so the zero padding must not win
        q = np.abs(rng.standard_normal((6, dim)))
        d = -np.abs(rng.standard_normal((17, dim)))
    return q.astype(np.float32), d.astype(np.float32)


@pytest.mark.parametrize("half", [True, False], ids=["halfvec", "vector"])
@pytest.mark.parametrize("kind", ["huge", "tiny", "denormal", "fp16-edges", "negative"])
def test_c_sql_numpy_agree_on_adversarial_tokens(both: Engine, kind: str, half: bool) -> None:
    q, d = _adversarial(kind, half, np.random.default_rng(len(kind)))
    got = _scores(both, q, d, half)
    f32, f64, tol = _reference(q, d, half)
    assert np.isfinite(f64)
    for name, value in got.items():
        assert value == pytest.approx(f64, rel=1e-5, abs=tol), (name, got)
        assert value == pytest.approx(f32, rel=1e-5, abs=tol), (name, got)
    # the kernels differ only in the order of additions
    assert got["c"] == pytest.approx(got["c portable"], rel=1e-5, abs=tol)


def test_parallel_workers_load_the_library(both: Engine) -> None:
    rng = np.random.default_rng(7)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    docs = [rng.standard_normal((n, 16)).astype(np.float32) for n in (1, 5, 40, 70)]
    with both.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS toks (id int, t halfvec[])"))
        for i, d in enumerate(docs):
            conn.execute(
                sa.text("INSERT INTO toks VALUES (:i, CAST(:t AS halfvec[]))"),
                {"i": i, "t": _literal(d, True)},
            )
        conn.execute(sa.text("SET LOCAL debug_parallel_query = on"))
        rows = conn.execute(
            sa.text(
                "SELECT id, pgembed_scoring.maxsim(CAST(:q AS halfvec[]), t) FROM toks ORDER BY id"
            ),
            {"q": _literal(q, True)},
        ).all()
    for (_, got), d in zip(rows, docs, strict=True):
        _, f64, tol = _reference(q, d, True)
        assert got == pytest.approx(f64, abs=tol)


# --- malformed input -----------------------------------------------------------------------

_token = st.one_of(
    st.none(),
    st.integers(1, 4).map(lambda n: [1.0 + i for i in range(n)]),
    st.just(None),
)


def _array_literal(tokens: list[list[float] | None], two_d: bool) -> str:
    items = ["NULL" if t is None else '"[' + ",".join(map(str, t)) + ']"' for t in tokens]
    if two_d and len(items) % 2 == 0 and items:
        half = len(items) // 2
        return "{{" + ",".join(items[:half]) + "},{" + ",".join(items[half:]) + "}}"
    return "{" + ",".join(items) + "}"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    q=st.lists(_token, max_size=5),
    d=st.lists(_token, max_size=6),
    half=st.booleans(),
    two_d=st.booleans(),
    huge=st.booleans(),
)
def test_malformed_arrays_give_clean_errors_and_never_crash(
    both: Engine,
    q: list[list[float] | None],
    d: list[list[float] | None],
    half: bool,
    two_d: bool,
    huge: bool,
) -> None:
    if huge and q and q[0] is not None:
        q[0] = [0.001] * 16000  # the largest dimension pgvector allows
    t = "halfvec" if half else "vector"
    args = {"q": _array_literal(q, two_d), "d": _array_literal(d, False)}
    with both.connect() as conn:
        before = server_identity(conn)
        c = outcome(
            conn, f"SELECT pgembed_scoring.maxsim(CAST(:q AS {t}[]), CAST(:d AS {t}[]))", args
        )
        s = outcome(conn, f"SELECT pgembed.maxsim(CAST(:q AS {t}[]), CAST(:d AS {t}[]))", args)
        assert server_identity(conn) == before  # same backend, no postmaster restart
    assert c[0] in {"ok", "22023", "22004", "22000"}, c
    # Both read a 2-D array as its elements in order (SQL through unnest, not q[1]).
    assert c[0] == s[0], (c, s)
    if c[0] == "ok":
        assert (c[1] is None) == (s[1] is None)
        if c[1] is not None:
            assert c[1] == pytest.approx(s[1], rel=1e-5, abs=1e-6)
    else:
        assert c[1] == s[1]  # the same message as the SQL version


# --- the regression pair -------------------------------------------------------------------


def _pg_regress() -> Path:
    return scoring.wheel_pg_config().parent.parent / "lib/pgxs/src/test/regress/pg_regress"


def test_regression_pair(built: Path, pg_home: Path, tmp_path: Path) -> None:
    server = EmbeddedServer(pg_home)
    out = tmp_path / "out"
    name = f"pgembed_scoring_regress_{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [
            str(_pg_regress()), f"--inputdir={EXT / 'test'}", f"--outputdir={out}",
            f"--bindir={server.bin}", f"--host={server.run_dir}", "--port=5432",
            "--user=postgres", f"--dbname={name}",
            "--load-extension=vector", "--load-extension=pgembed_scoring",
            *sorted(p.stem for p in (EXT / "test" / "sql").glob("*.sql")),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    diffs = out / "regression.diffs"
    assert run.returncode == 0, (run.stdout, diffs.read_text() if diffs.exists() else "")
    assert sorted(p.stem for p in (EXT / "test" / "expected").glob("*.out")) == sorted(
        p.stem for p in (EXT / "test" / "sql").glob("*.sql")
    )


# --- wiring --------------------------------------------------------------------------------


def _maxsim_defs(eng: Engine, names: tuple[str, ...] = ("maxsim",)) -> list[str]:
    with eng.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT pg_get_functiondef(oid) FROM pg_proc "
                    "WHERE pronamespace = 'pgembed'::regnamespace AND proname = ANY(:names) "
                    "ORDER BY oid::regprocedure::text"
                ),
                {"names": list(names)},
            ).scalars()
        )


WIRED_NAMES = tuple(w.name for w in scoring.WIRED)


def _call(eng: Engine) -> float:
    with eng.connect() as conn:
        return float(
            conn.execute(
                sa.text(
                    """SELECT pgembed.maxsim('{"[1,2]","[3,-4]"}'::halfvec[], """
                    """'{"[1,0]","[0,1]","[0.5,0.5]"}'::halfvec[])"""
                )
            ).scalar_one()
        )


def _wired(eng: Engine) -> bool:
    with eng.connect() as conn:
        return scoring.is_wired(conn)


@pytest.fixture
def fresh_db(make_database: MakeDatabase) -> Iterator[Engine]:
    eng = sa.create_engine(make_database())
    yield eng
    eng.dispose()


@needs_build
def test_upgrade_wires_c_and_sql_mode_restores_the_sql_definitions(
    built: Path, fresh_db: Engine, make_database: MakeDatabase
) -> None:
    reference = sa.create_engine(make_database())
    with scoring_mode("sql"):
        migrate.upgrade(reference)
    sql_defs = _maxsim_defs(reference)
    sql_all = _maxsim_defs(reference, WIRED_NAMES)
    reference.dispose()
    assert all("LANGUAGE sql" in d for d in sql_defs)
    assert len(sql_all) == 6  # maxsim x2, residual_levels, residual_similarity, fde_query x2

    with scoring_mode("auto"):
        migrate.upgrade(fresh_db)
        assert _wired(fresh_db) and _call(fresh_db) == 5.0
        c_defs = _maxsim_defs(fresh_db)
        migrate.upgrade(fresh_db)  # idempotent
        assert _maxsim_defs(fresh_db) == c_defs
    for d in c_defs:
        assert "LANGUAGE c" in d and "SET search_path TO 'pg_catalog', 'pg_temp'" in d
        assert "IMMUTABLE PARALLEL SAFE STRICT COST 1000" in d
    with fresh_db.connect() as conn:
        comments = conn.execute(
            sa.text(
                "SELECT p.proname::text, obj_description(p.oid, 'pg_proc') FROM pg_proc p "
                "WHERE pronamespace = 'pgembed'::regnamespace AND proname = ANY(:names) "
                "AND p.proargnames[1] <> 'collection'"
            ),
            {"names": list(WIRED_NAMES)},
        ).all()
        assert len(comments) == 5 and all("in C" in c for _, c in comments), comments
    assert _maxsim_defs(fresh_db, WIRED_NAMES) != sql_all
    with scoring_mode("sql"):
        migrate.upgrade(fresh_db)
    assert not _wired(fresh_db) and _call(fresh_db) == 5.0
    assert _maxsim_defs(fresh_db) == sql_defs  # exactly the migration's definitions
    assert _maxsim_defs(fresh_db, WIRED_NAMES) == sql_all  # the other wired functions too


@needs_build
def test_extension_missing_from_the_server_switches_back_to_sql(
    built: Path, fresh_db: Engine
) -> None:
    with scoring_mode("auto"):
        migrate.upgrade(fresh_db)
        assert _wired(fresh_db)
        name = fresh_db.url.database
        with fresh_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # This database no longer sees pgembed's build directory.
            conn.execute(
                sa.text(f"ALTER DATABASE \"{name}\" SET extension_control_path = '$system'")
            )
            conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET dynamic_library_path = '$libdir'"))
        fresh_db.dispose()
        with fresh_db.connect() as conn:
            assert not scoring.available(conn)
        migrate.upgrade(fresh_db)
        assert not _wired(fresh_db) and _call(fresh_db) == 5.0
        with fresh_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" RESET ALL'))
        fresh_db.dispose()
        migrate.upgrade(fresh_db)  # installed again: the same command switches back
        assert _wired(fresh_db) and _call(fresh_db) == 5.0


@needs_build
def test_downgrades_work_with_c_wired(built: Path, fresh_db: Engine) -> None:
    with scoring_mode("auto"):
        migrate.upgrade(fresh_db)
        assert _wired(fresh_db)
        migrate.downgrade(fresh_db, "0004")
        assert _wired(fresh_db)  # 0.4.0's maxsim: still wired
        migrate.downgrade(fresh_db, "0003")
        assert not _wired(fresh_db) and _call(fresh_db) == 5.0
        with fresh_db.connect() as conn:
            assert "bad.side" not in " ".join(_maxsim_defs(fresh_db))  # 0.3.0's own body
            assert conn.execute(sa.text("SELECT pgembed.version()")).scalar() == "0.3.0"
        migrate.upgrade(fresh_db)
        assert _wired(fresh_db)
        migrate.downgrade(fresh_db, "base")
        with fresh_db.connect() as conn:
            gone = conn.execute(
                sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'pgembed_scoring'")
            ).scalar()
            assert gone == 0
        assert migrate.current(fresh_db) is None


def test_sql_mode_never_wires_and_bad_mode_is_refused(
    fresh_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(scoring.MODE_ENV, "sql")
    migrate.upgrade(fresh_db)
    assert not _wired(fresh_db) and _call(fresh_db) == 5.0
    monkeypatch.setenv(scoring.MODE_ENV, "fast")
    with pytest.raises(scoring.ConfigError, match=r"PGEMBED_SCORING='fast'.*'auto'.*'sql'"):
        migrate.upgrade(fresh_db)


@needs_build
def test_db_status_says_which_functions_run_c(built: Path, fresh_db: Engine) -> None:
    url = fresh_db.url.render_as_string(hide_password=False)

    def status() -> str:
        env = {**os.environ, "PGEMBED_DATABASE_URL": url}
        out = subprocess.run(
            [sys.executable, "-m", "pgembed.cli", "db", "status"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = out.stdout.splitlines()
        first = next(i for i, ln in enumerate(lines) if ln.startswith("maxsim:"))
        return "\n".join(lines[first : first + 4])

    assert status().startswith("maxsim: none")
    with scoring_mode("auto"):
        migrate.upgrade(fresh_db)
    first, *rest = status().splitlines()
    assert first.startswith(f"maxsim: C (pgembed_scoring {scoring.EXTENSION_VERSION}, ")
    assert rest == ["residual_similarity: C", "residual_levels: C", "fde_query: C"]
    with scoring_mode("sql"):
        migrate.upgrade(fresh_db)
    assert status().splitlines() == [
        "maxsim: SQL", "residual_similarity: SQL", "residual_levels: SQL", "fde_query: SQL",
    ]  # fmt: skip


# --- the build -----------------------------------------------------------------------------


@pytest.fixture
def fresh_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="pgembed-scoring-", dir="/tmp"))
    yield home
    if (home / "data" / "PG_VERSION").exists():
        EmbeddedServer(home).stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(bool(os.environ.get("PGEMBED_DATABASE_URL")), reason="embedded server only")
def test_no_compiler_falls_back_with_one_line_notice_then_builds(fresh_home: Path) -> None:
    no_tools = fresh_home / "empty-bin"
    no_tools.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in {"PGEMBED_DATABASE_URL", scoring.MODE_ENV}
    }
    env["PGEMBED_HOME"] = str(fresh_home)

    def pgembed(*args: str, path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgembed.cli", *args],
            env={**env, "PATH": path}, capture_output=True, text=True, check=False,
        )  # fmt: skip

    out = pgembed("db", "upgrade", path=str(no_tools))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"pgembed schema at {migrate.head()}"
    assert out.stderr.splitlines() == [
        "pgembed: warning: the scoring extension could not be built (no C compiler (cc or gcc) "
        "on PATH); scoring (MaxSim, residual codes, query FDE) runs in SQL, which is slower"
    ]
    assert not scoring.is_built(fresh_home)
    status = pgembed("db", "status", path=str(no_tools)).stdout
    assert "maxsim: SQL" in status.splitlines()
    if scoring.compiler() is None:
        return
    out = pgembed("db", "upgrade", path=os.environ["PATH"])  # a compiler now: built, wired
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert scoring.is_built(fresh_home)
    status = pgembed("db", "status", path=os.environ["PATH"]).stdout
    assert any(ln.startswith("maxsim: C (pgembed_scoring") for ln in status.splitlines())


@needs_build
def test_failed_build_is_one_line_and_keeps_the_previous_build(
    built: Path, pg_home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(EXT, src, ignore=shutil.ignore_patterns("*.o", "*.so", "results"))
    (src / "src" / "maxsim.c").write_text("this is not C\n")
    before = (built / "BUILD").read_text()
    with pytest.raises(scoring.ScoringBuildError, match=r"^the build failed \(exit \d+\): ") as err:
        scoring.build(pg_home, src=src)
    assert "\n" not in str(err.value)
    assert (built / "BUILD").read_text() == before and scoring.is_built(pg_home)


def test_embedded_home_recognizes_only_pgembed_servers(
    admin_url: str, pg_home: Path | None, tmp_path: Path
) -> None:
    eng = sa.create_engine(admin_url)
    assert scoring.embedded_home(eng) == pg_home
    other = make_url(admin_url).update_query_dict({"host": str(tmp_path / "run")})
    assert scoring.embedded_home(sa.create_engine(other)) is None
    tcp = sa.create_engine("postgresql+psycopg://u@localhost:5432/x")
    assert scoring.embedded_home(tcp) is None
