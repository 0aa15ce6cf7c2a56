"""Security: hostile names stay names, a read-only role only reads, planted functions are
never called, SECURITY INVOKER with a pinned search_path, a socket-only server, and fuzzed
vector codecs.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sqlalchemy.engine import Engine

from pgembed import Collection, FDEConfig, migrate, query
from pgembed.errors import PermissionDeniedError, UnknownCollectionError
from pgembed.storage import catalog

VICTIM = "security_victim"
HOSTILE = [
    f"docs; DROP TABLE {VICTIM}",
    'a"b',
    f"x'); DROP TABLE {VICTIM}; --",
    f'q"; DROP TABLE {VICTIM}; --',
    "$1 $$ \\ ünï",
]
PERCENT = "%I %s 100%"
HOSTILE_ALL = [*HOSTILE, PERCENT]
FDE = FDEConfig(dimension=32, num_repetitions=4, num_simhash_projections=2,
                projection_dimension=8)  # fmt: skip
ALL_KINDS = ("single", "matryoshka", "binary", "fde")
TEXTS = ["rain falls on the plain", "the sun shines over the hills", "snow covers the town"]


def _vec(x: Any) -> str:
    return "[" + ",".join(repr(float(v)) for v in np.ravel(x)) + "]"


@pytest.fixture
def victim(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {VICTIM} (id int)"))
        conn.execute(sa.text(f"INSERT INTO {VICTIM} VALUES (1)"))
    yield
    assert _victim_ok(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {VICTIM}"))


def _victim_ok(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(f"SELECT count(*) FROM {VICTIM}")).scalar_one() >= 1)


# --- hostile identifiers ------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_ALL)
def test_hostile_names_in_the_python_api(
    engine: Engine, tiny_encoder: Any, victim: None, name: str
) -> None:
    """Collection name, table, schema and text column all hostile: they stay names."""
    schema, table, column = name[:60], f"{name} t"[:63], f"{name} c"[:63]
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    try:
        c = Collection(engine, name, tiny_encoder, kinds=ALL_KINDS, fde=FDE, table=table,
                       schema=schema, text_column=column, matryoshka_dims=(8,),
                       binary_bits=2).create()  # fmt: skip
        assert c.add(TEXTS, ids=[1, 2, 3]) == 3
        assert _victim_ok(engine)
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = :s"),
                {"s": schema},
            ).all()  # fmt: skip
            cols = conn.execute(
                sa.text("SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = :s AND table_name = :t"),
                {"s": schema, "t": table},
            ).scalars().all()  # fmt: skip
        assert found == [(schema, table)]
        assert column in cols
        opened = Collection.open(engine, name, tiny_encoder)
        assert opened.count() == 3
        for strategy, opts in (("knn", {}), ("funnel", {"prefix": 8}), ("binary", {}),
                               ("multivector", {})):  # fmt: skip
            hits = opened.search("rain on the plain", k=2, strategy=strategy, **opts)
            assert len(hits) == 2 and {i for i, _ in hits} <= {1, 2, 3}
        # sync: change a text behind pgembed's back, re-embed it
        t = c.table()
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == 1).values({column: "hail on the plain"}))
        assert opened.sync(progress=False) == 1
        with pytest.raises(UnknownCollectionError):
            Collection.open(engine, name + "x", tiny_encoder)
        c.drop(force=True)
        with engine.connect() as conn:
            reg = sa.text("SELECT to_regclass(format('%I.%I', CAST(:s AS text), CAST(:t AS text)))")
            assert conn.execute(reg, {"s": schema, "t": table}).scalar() is None
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
            conn.execute(catalog.collections.delete().where(catalog.collections.c.name == name))
    assert _victim_ok(engine)


@pytest.mark.parametrize("name", [*HOSTILE, PERCENT])
def test_hostile_names_in_the_sql_functions(engine: Engine, victim: None, name: str) -> None:
    q = _vec(np.ones(32) / np.sqrt(32))
    calls = [
        "SELECT * FROM pgembed.search_knn(:n, CAST(:q AS vector))",
        "SELECT * FROM pgembed.search_funnel(:n, CAST(:q AS vector), 5, 8)",
        "SELECT * FROM pgembed.search_binary(:n, CAST(:q AS vector))",
        "SELECT * FROM pgembed.search_multivector(:n, ARRAY[CAST(:q AS vector)])",
        "SELECT pgembed.fde_query(:n, ARRAY[CAST(:q AS vector)])",
        "SELECT * FROM pgembed.collection_info(:n, NULL)",
    ]
    for sql in calls:
        with (
            pytest.raises(sa.exc.DBAPIError, match="pgembed: no collection named") as err,
            engine.connect() as conn,
        ):
            conn.execute(sa.text(sql), {"n": name, "q": q}).all()
        # quoted as a literal in the message, never interpreted
        assert re.search(r"no collection named E?'", str(err.value))
        assert _victim_ok(engine)
    # the same names inlined as SQL literals (quote_literal-escaped) stay names too
    with pytest.raises(sa.exc.DBAPIError, match="no collection named"), engine.connect() as conn:
        lit = conn.execute(sa.text("SELECT quote_literal(:n)"), {"n": name}).scalar_one()
        conn.execute(sa.text(f"SELECT * FROM pgembed.search_knn({lit}, '{q}')".replace(":", r"\:")))
    assert _victim_ok(engine)


def test_hostile_collection_name_in_the_cli(
    engine: Engine, tiny_model_dir: Path, victim: None
) -> None:
    name = HOSTILE[2]
    env = {**os.environ, "PGEMBED_MODEL_DIR": str(tiny_model_dir),
           "PGEMBED_DATABASE_URL": engine.url.render_as_string(hide_password=False)}  # fmt: skip

    def pgembed(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgembed.cli", *args], input=stdin,
                              env=env, capture_output=True, text=True, check=False)  # fmt: skip

    out = pgembed("ingest", name, "--model", "tiny-bert", "--no-progress", stdin="\n".join(TEXTS))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"3 rows written to {name}")
    try:
        assert name in pgembed("collections").stdout
        out = pgembed("search", name, "rain", "-k", "2", "--json")
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.splitlines()) == 2
        assert _victim_ok(engine)
        with engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar()
        assert n == 3
    finally:
        with engine.begin() as conn:
            from pgembed.storage.declare import undeclare

            undeclare(conn, name, force=True)


# --- a read-only role ---------------------------------------------------------------------


@pytest.fixture
def reader(make_database: Any, admin_url: str, tiny_encoder: Any) -> Iterator[dict[str, Any]]:
    """A database with a populated collection, and an engine that acts as a read-only role."""
    url = make_database()
    owner = sa.create_engine(url)
    migrate.upgrade(owner)
    c = Collection(owner, "ro docs", tiny_encoder, kinds=ALL_KINDS, fde=FDE,
                   matryoshka_dims=(8,), binary_bits=2).create()  # fmt: skip
    c.add(TEXTS, ids=[1, 2, 3])
    role = f"pgembed_reader_{uuid.uuid4().hex[:8]}"
    with owner.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} NOLOGIN"))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA pgembed, public TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA pgembed, public TO {role}"))
    # the session runs as the role from its first statement (works on any server)
    ro = sa.create_engine(url, connect_args={"options": f"-c role={role}"})
    with ro.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar_one() == role
    yield {"owner": owner, "ro": ro, "coll": c, "role": role}
    ro.dispose()
    with owner.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
    owner.dispose()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {sa.make_url(url).database} WITH (FORCE)"))
        conn.execute(sa.text(f"DROP ROLE {role}"))
    admin.dispose()


def _snapshot(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(
            tuple(conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1")).all())
            for t in ('"ro docs"', "pgembed.collections", "pgembed.encoders",
                      "pgembed.fde_configs")
        )  # fmt: skip


def test_read_only_role_searches(reader: dict[str, Any], tiny_encoder: Any) -> None:
    ro: Engine = reader["ro"]
    c = Collection.open(ro, "ro docs", tiny_encoder)
    q = tiny_encoder.encode(["rain on the plain"], "query")[0]
    # the SQLAlchemy query builders, on the table
    t = c.table()
    with ro.connect() as conn:
        rows = conn.execute(query.knn(t.c.embedding, q, k=2)).all()
        assert rows[0].id == 1 and len(rows) == 2
        rows = conn.execute(query.funnel(t.c.embedding, q, k=2, prefix=8)).all()
        assert len(rows) == 2
    for strategy, opts in (("knn", {}), ("funnel", {"prefix": 8}), ("binary", {}),
                           ("multivector", {})):  # fmt: skip
        hits = c.search("rain on the plain", k=2, strategy=strategy, **opts)
        assert len(hits) == 2, strategy
    with ro.connect() as conn:
        fde = conn.execute(
            sa.text("SELECT vector_dims(pgembed.fde_query('ro docs', ARRAY[CAST(:q AS vector)]))"),
            {"q": _vec(q)},
        ).scalar_one()  # fmt: skip
    assert fde == c.fde.config.output_dim


@pytest.mark.parametrize(
    "sql",
    [
        """INSERT INTO "ro docs" (id, content) VALUES (99, 'x')""",
        """UPDATE "ro docs" SET content = 'x'""",
        """DELETE FROM "ro docs\"""",
        "DELETE FROM pgembed.collections",
        "UPDATE pgembed.encoders SET fingerprint = 'forged'",
        "INSERT INTO pgembed.fde_configs (dimension) VALUES (1)",
        "ALTER TABLE pgembed.collections ADD COLUMN evil int",
        "DROP TABLE pgembed.encoders CASCADE",
        "CREATE TABLE pgembed.evil (id int)",
        """TRUNCATE "ro docs\"""",
    ],
)
def test_read_only_role_cannot_write_sql(reader: dict[str, Any], sql: str) -> None:
    before = _snapshot(reader["owner"])
    with (
        pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"),
        reader["ro"].begin() as conn,
    ):
        conn.execute(sa.text(sql))
    assert _snapshot(reader["owner"]) == before


def test_read_only_role_cannot_write_through_pgembed(
    reader: dict[str, Any], tiny_encoder: Any
) -> None:
    before = _snapshot(reader["owner"])
    c = Collection.open(reader["ro"], "ro docs", tiny_encoder)
    with pytest.raises(PermissionDeniedError, match=r'permission denied for table "?ro docs'):
        c.add(["an intruder's text"], ids=[7])
    with pytest.raises(PermissionDeniedError, match=r"permission denied.*pgembed grant"):
        Collection(reader["ro"], "ro other", tiny_encoder).create()
    with pytest.raises(PermissionDeniedError, match=r"(permission denied|must be owner).*grant"):
        c.drop(force=True)
    assert _snapshot(reader["owner"]) == before


# --- functions planted in public ----------------------------------------------------------

# Each raises when called. pgvector lives in `public` here, so `public` is on pgembed's
# pinned search_path: objects there must still never capture pgembed's calls.
PLANTS = {
    "md5": "public.md5(text) RETURNS text",
    "set_config": "public.set_config(text, text, boolean) RETURNS text",
    "quote_literal": "public.quote_literal(text) RETURNS text",
    "current_setting": "public.current_setting(text, boolean) RETURNS text",
    "unnest": "public.unnest(vector[]) RETURNS SETOF vector",
    "format 5": "public.format(text, text, text, text, text) RETURNS text",
    "format 6": "public.format(text, text, text, text, text, integer) RETURNS text",
    "format 7": "public.format(text, text, text, text, text, text, integer) RETURNS text",
    "cardinality": "public.cardinality(vector[]) RETURNS integer",
}


@pytest.fixture(scope="module")
def planted_db(make_database: Any, tiny_encoder: Any) -> Iterator[dict[str, Any]]:
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    c = Collection(eng, "planted docs", tiny_encoder, kinds=ALL_KINDS, fde=FDE,
                   matryoshka_dims=(8,), binary_bits=2).create()  # fmt: skip
    c.add(TEXTS, ids=[1, 2, 3])
    q = tiny_encoder.encode(["rain on the plain"], "query")[0]
    yield {"engine": eng, "coll": c, "q": q}
    eng.dispose()


def _every_pgembed_call(eng: Engine, q: np.ndarray) -> None:
    qs = _vec(q)
    name = "planted docs"
    calls = [
        f"SELECT * FROM pgembed.search_knn('{name}', '{qs}', 2)",
        f"SELECT * FROM pgembed.search_knn('{name}', '{qs}', 2, 10, 'relaxed_order')",
        f"SELECT * FROM pgembed.search_funnel('{name}', '{qs}', 2, 8)",
        f"SELECT * FROM pgembed.search_binary('{name}', '{qs}', 2)",
        f"SELECT * FROM pgembed.search_multivector('{name}', ARRAY['{qs}']::vector[], 2)",
        f"SELECT pgembed.fde_query('{name}', ARRAY['{qs}']::vector[])",
        f"SELECT pgembed.maxsim(ARRAY['{qs}']::vector[], ARRAY['{qs}']::vector[])",
        f"SELECT pgembed.maxsim(ARRAY['{qs}']::halfvec[], ARRAY['{qs}']::halfvec[])",
        f"SELECT * FROM pgembed.residual_levels('{qs}', 2)",
        "SELECT pgembed.version()",
    ]
    with eng.begin() as conn:
        # a caller whose own search_path puts public first changes nothing either
        conn.execute(sa.text("SET LOCAL search_path = public, pg_catalog"))
        for sql in calls:
            conn.execute(sa.text(sql)).all()


@pytest.mark.parametrize(
    "plant",
    list(PLANTS),
)
def test_planted_function_is_never_called(planted_db: dict[str, Any], plant: str) -> None:
    eng: Engine = planted_db["engine"]
    signature = PLANTS[plant]
    create = (
        f"CREATE FUNCTION {signature} LANGUAGE plpgsql AS "
        f"$$BEGIN RAISE EXCEPTION 'planted {plant} was called'; END$$"
    )
    with eng.begin() as conn:
        conn.execute(sa.text(create))
    eng.dispose()  # fresh backends: no PL/pgSQL plan cached from before the plant
    try:
        _every_pgembed_call(eng, planted_db["q"])
        for strategy, opts in (("knn", {}), ("funnel", {"prefix": 8}), ("binary", {}),
                               ("multivector", {})):  # fmt: skip
            assert len(planted_db["coll"].search("rain", k=2, strategy=strategy, **opts)) == 2
        assert (
            planted_db["coll"].add(["a new text about hail"], ids=[10 + list(PLANTS).index(plant)])
            == 1
        )
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text(f"DROP FUNCTION {signature.split(' RETURNS')[0]}"))


def test_planted_operator_is_never_called(planted_db: dict[str, Any]) -> None:
    """An operator over (halfvec, vector) planted in public does not capture <=>/<#>."""
    eng: Engine = planted_db["engine"]
    with eng.begin() as conn:
        conn.execute(sa.text(
            "CREATE FUNCTION public.evil_distance(halfvec, vector) RETURNS float8 "
            "LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'planted operator was called'; END$$"
        ))  # fmt: skip
        for op in ("<=>", "<#>"):
            conn.execute(sa.text(
                f"CREATE OPERATOR public.{op} (LEFTARG = halfvec, RIGHTARG = vector, "
                "FUNCTION = public.evil_distance)"
            ))  # fmt: skip
    eng.dispose()
    try:
        _every_pgembed_call(eng, planted_db["q"])
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text("DROP FUNCTION public.evil_distance(halfvec, vector) CASCADE"))


def test_functions_are_security_invoker_with_pinned_search_path(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig, "
                    "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
                    "WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 1")
        ).all()  # fmt: skip
    assert rows, "pgembed installs functions"
    names = {r[0].split("(")[0] for r in rows}
    assert {"pgembed.search_knn", "pgembed.maxsim", "pgembed.fde_query"} <= names
    for fn, secdef, config, comment in rows:
        assert secdef is False, f"{fn} is SECURITY DEFINER"
        # 0.4.0: vector's objects are qualified, so its schema is not on the path
        assert config == ["search_path=pg_catalog, pg_temp"], f"{fn}: {config}"
        assert comment, f"{fn} has no COMMENT"


# --- the embedded server ------------------------------------------------------------------


@pytest.mark.skipif(bool(os.environ.get("PGEMBED_DATABASE_URL")), reason="embedded only")
def test_embedded_server_has_no_tcp_socket(admin_url: str, pg_home: Path) -> None:
    from pgembed.server import EmbeddedServer

    eng = sa.create_engine(admin_url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == ""
        assert conn.execute(sa.text("SHOW port")).scalar_one() == "5432"
        assert conn.execute(sa.text("SELECT inet_server_addr()")).scalar() is None  # a socket
    eng.dispose()
    for d in ("data", "run"):
        assert stat.S_IMODE((pg_home / d).stat().st_mode) == 0o700, d
    pid = EmbeddedServer(pg_home)._pid()
    assert pid is not None
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except PermissionError:
        pytest.skip("cannot read the postmaster's descriptors")
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    assert inodes, "the postmaster holds its unix socket"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        tcp = {line.split()[9] for line in lines}
        assert not (inodes & tcp), f"the postmaster holds a TCP socket ({table})"
    unix = {line.split()[6] for line in Path("/proc/net/unix").read_text().splitlines()[1:]}
    assert inodes & unix


# --- fuzzing the codecs -------------------------------------------------------------------

# filter_too_much: hypothesis' own width-16 float strategy filters, now and then a lot.
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])  # fmt: skip
_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
_f16 = st.floats(width=16, allow_nan=False, allow_infinity=False)


@FUZZ
@given(bits=hnp.arrays(np.bool_, st.tuples(st.integers(1, 5), st.integers(1, 70))))
def test_fuzz_bit_text_and_packing_round_trip(bits: np.ndarray) -> None:
    from pgembed.vectors import binary

    texts = binary.bit_texts(bits)
    assert all(len(t) == bits.shape[1] and set(t) <= {"0", "1"} for t in texts)
    back = np.array([binary.parse_bit_text(t) for t in texts])
    np.testing.assert_array_equal(back, bits)
    packed = binary.pack_bits(bits)
    assert packed.shape == (bits.shape[0], (bits.shape[1] + 7) // 8)
    np.testing.assert_array_equal(binary.unpack_bits(packed, bits.shape[1]), bits)


@FUZZ
@given(text=st.text(max_size=40))
def test_fuzz_parse_bit_text_never_crashes(text: str) -> None:
    from pgembed.errors import InputError
    from pgembed.vectors import binary

    try:
        out = binary.parse_bit_text(text)
    except InputError:
        assert set(text) - {"0", "1"}
    else:
        assert binary.bit_text(out) == text


@FUZZ
@given(
    d=st.integers(1, 12), r=st.integers(1, 4), k=st.integers(0, 3), dp=st.integers(1, 6),
    identity=st.booleans(), final=st.one_of(st.none(), st.integers(1, 64)),
    seed=st.integers(0, 2**63 - 1), fill=st.booleans(),
)  # fmt: skip
def test_fuzz_fde_bytes_round_trip(
    d: int, r: int, k: int, dp: int, identity: bool, final: int | None, seed: int, fill: bool
) -> None:
    from pgembed.vectors.fde import FDEEncoder

    cfg = FDEConfig(dimension=d, num_repetitions=r, num_simhash_projections=k,
                    projection="identity" if identity else "ams_sketch",
                    projection_dimension=d if identity else dp, fill_empty_partitions=fill,
                    final_projection_dimension=final, seed=seed)  # fmt: skip
    enc = FDEEncoder(cfg)
    blob = enc.to_bytes()
    back = FDEEncoder.from_bytes(blob)
    assert back.config == enc.config
    assert back.to_bytes() == blob
    tokens = [np.random.default_rng(seed % 1000).normal(size=(3, d)).astype(np.float32)]
    np.testing.assert_array_equal(back.encode_document(tokens), enc.encode_document(tokens))
    np.testing.assert_array_equal(back.encode_query(tokens), enc.encode_query(tokens))


@FUZZ
@given(blob=st.binary(max_size=200), cut=st.integers(0, 400))
def test_fuzz_fde_from_bytes_rejects_garbage(blob: bytes, cut: int) -> None:
    from pgembed.errors import InputError
    from pgembed.vectors.fde import FDEEncoder

    good = FDEEncoder(FDEConfig(dimension=4, num_repetitions=2, num_simhash_projections=1,
                                projection_dimension=2)).to_bytes()  # fmt: skip
    cases = [blob, good[:cut] if cut < len(good) else good[: len(good) // 2]]
    if blob:
        cases.append(blob + good)
    for data in cases:
        with pytest.raises(InputError):
            FDEEncoder.from_bytes(data)


@FUZZ
@given(tokens=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 9)),
                         elements=_f16))  # fmt: skip
def test_fuzz_halfvec_array_literal_round_trip(tokens: np.ndarray) -> None:
    from pgembed.storage.columns import halfvec_array_literal, parse_halfvec_array

    lit = halfvec_array_literal(tokens, tokens.shape[1])
    np.testing.assert_array_equal(parse_halfvec_array(lit), tokens)


@FUZZ
@given(
    v=hnp.arrays(np.float32, st.integers(1, 40), elements=_f32),
    h=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 8)), elements=_f16),
)
def test_fuzz_pgvector_literals_through_the_database(
    engine: Engine, v: np.ndarray, h: np.ndarray
) -> None:
    """Our literals parse in PostgreSQL, and its text output parses back to the same numbers."""
    from pgembed.storage.columns import halfvec_array_literal, parse_halfvec_array

    with engine.connect() as conn:
        out = conn.execute(sa.text("SELECT CAST(:v AS vector)::text"), {"v": _vec(v)}).scalar_one()
        back = np.array([float(x) for x in out.strip("[]").split(",")], dtype=np.float32)
        np.testing.assert_array_equal(back, v)
        lit = halfvec_array_literal(h, h.shape[1])
        out = conn.execute(sa.text("SELECT CAST(:h AS halfvec[])::text"), {"h": lit}).scalar_one()
        np.testing.assert_array_equal(parse_halfvec_array(out), h)
        ms = conn.execute(
            sa.text("SELECT pgembed.maxsim(CAST(:a AS halfvec[]), CAST(:a AS halfvec[]))"),
            {"a": lit},
        ).scalar_one()  # fmt: skip
    h64 = h.astype(np.float64)
    want = float((h64 @ h64.T).max(axis=1).sum())
    scale = float((np.abs(h64) @ np.abs(h64).T).max(axis=1).sum())  # float32 sums: relative
    assert abs(ms - want) <= 1e-5 * scale + 1e-6, (ms, want)


def test_halfvec_array_of_one_dim_vectors_parses(engine: Engine) -> None:
    from pgembed.storage.columns import parse_halfvec_array

    with engine.connect() as conn:
        out = conn.execute(sa.text("""SELECT '{"[1]","[2]"}'::halfvec[]::text""")).scalar_one()
    np.testing.assert_array_equal(parse_halfvec_array(out), [[1.0], [2.0]])
