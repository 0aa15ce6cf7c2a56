"""No planted operator or function runs inside pgembed's SQL functions (DESIGN.md, "SQL security").

Catalog-driven, not a hand list:
1. In a database owned by a non-superuser role (the vector extension in public, created by
   the superuser; migrations run by the superuser), every pgembed search, MaxSim, FDE and
   helper runs once on collections of every kind, with auto_explain logging every nested
   statement. The names to plant are every function and operator named in each pgembed
   function's definition (pg_get_functiondef, from pg_proc) or in the statements they
   really ran (auto_explain's query texts and plans), kept when pg_proc / pg_operator
   knows them.
2. The owner plants exact-match overloads of each name in public (here also vector's
   schema): every signature of 0 to 2 arguments over the types pgembed uses (integers,
   floats, numeric, text, bool, jsonb, vector, halfvec, bit, sparsevec, and their arrays);
   for 3 or more arguments, every signature that differs from one of pg_proc's for that
   name in one position (any of those types) or two positions (any scalar). Signatures
   that exist in the schema are skipped. Each planted body raises a WARNING naming itself
   (WARNINGs reach the client even from rolled-back statements), then an error.
3. The superuser runs everything again, with `public` first on its own search_path: no
   planted object fires, and every result and error equals the one before planting.
Positive controls show the planting can capture: a mixed-type call with public on the path
fires, and so does 0.3.0's search_knn.

The owner plants through SET ROLE on a superuser connection: the objects are created with
exactly the owner's privileges, whatever authentication the server uses for other roles.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from pgembed import Collection, FDEConfig, migrate
from pgembed.corpus import lee_background
from pgembed.storage.schema import IndexParams

SCALARS = ("int2", "int4", "int8", "float4", "float8", "numeric", "text", "bool", "jsonb",
           "vector", "halfvec", "bit", "sparsevec")  # fmt: skip
VECTOR_TYPES = {"vector", "halfvec", "sparsevec"}
FDE_HALF = FDEConfig(dimension=32, num_repetitions=2, num_simhash_projections=2,
                     projection_dimension=8, seed=3)  # fmt: skip
FDE_BIT = FDEConfig(dimension=32, num_repetitions=2, num_simhash_projections=2,
                    projection_dimension=8, final_projection_dimension=4096, seed=4)  # fmt: skip


# --- databases owned by a non-superuser ----------------------------------------------------


@dataclass
class Site:
    engine: Engine  # superuser, in the owned database
    owner: str
    vector_schema: str


@contextlib.contextmanager
def owned_database(admin_url: str) -> Iterator[Site]:
    """A fresh database OWNED by a fresh non-superuser LOGIN role, migrated to head."""
    tag = uuid.uuid4().hex[:10]
    owner, db = f"pgembed_cap_owner_{tag}", f"pgembed_cap_{tag}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{owner}" LOGIN NOSUPERUSER NOCREATEROLE'))
        conn.execute(sa.text(f'CREATE DATABASE "{db}" OWNER "{owner}"'))
    url = make_url(admin_url).set(database=db).render_as_string(hide_password=False)
    eng = sa.create_engine(url, poolclass=NullPool)  # fresh backends: no cached plans
    try:
        migrate.upgrade(eng)
        with eng.connect() as conn:
            schema = conn.execute(
                sa.text(
                    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                    "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
                )
            ).scalar_one()
        yield Site(eng, owner, schema)
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{owner}"'))
        admin.dispose()


@contextlib.contextmanager
def as_owner(site: Site) -> Iterator[sa.Connection]:
    with site.engine.begin() as conn:
        conn.execute(sa.text(f'SET LOCAL ROLE "{site.owner}"'))
        assert (
            conn.execute(
                sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar_one()
            is False
        )
        yield conn


# --- running SQL and watching what it does -------------------------------------------------


@dataclass
class Watch:
    """Notices of one connection: planted WARNINGs and auto_explain's NOTICEs."""

    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)  # "label: warning", by run_workload

    def __call__(self, diag: Any) -> None:
        severity = diag.severity_nonlocalized or diag.severity or ""
        text = diag.message_primary or ""
        (self.warnings if severity == "WARNING" else self.notices).append(text)


@contextlib.contextmanager
def watched(engine: Engine, explain: bool = False) -> Iterator[tuple[sa.Connection, Watch]]:
    watch = Watch()
    with engine.connect() as conn:
        conn.connection.driver_connection.add_notice_handler(watch)  # type: ignore[union-attr]
        if explain:
            conn.execute(sa.text("LOAD 'auto_explain'"))
            for s in ("log_min_duration = 0", "log_nested_statements = on",
                      "log_level = notice", "log_verbose = on"):  # fmt: skip
                conn.execute(sa.text(f"SET auto_explain.{s}"))
        # an ordinary session: public on the path (pg_catalog implicitly first)
        conn.execute(sa.text('SET search_path = "$user", public'))
        conn.execute(sa.text("SET track_functions = 'all'"))
        conn.commit()
        yield conn, watch


def run_one(conn: sa.Connection, sql: str, params: dict[str, Any]) -> Any:
    """Rows of one statement, or ('error', SQLSTATE, message); inside a savepoint."""
    sp = conn.begin_nested()
    try:
        rows = [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
    except sa.exc.DBAPIError as e:
        sp.rollback()
        return ("error", getattr(e.orig, "sqlstate", None), str(e.orig).split("\n")[0])
    sp.commit()
    return rows


# --- the workload: every pgembed function on collections of every kind ---------------------


def _texts() -> list[str]:
    sents = [s for doc in lee_background()[:12] for s in doc.split(". ") if len(s.split()) > 4]
    return sents[:36]


def make_collections(engine: Engine, enc: Any) -> None:
    texts = _texts()
    ids = range(len(texts))
    a = Collection(engine, "cap a", enc, kinds=("single", "matryoshka", "binary", "fde", "lexical"),
                   fde=FDE_HALF, matryoshka_dims=(8, 16), binary_bits=2,
                   index=IndexParams(fde="halfvec")).create()  # fmt: skip
    b = Collection(engine, "cap b", enc, kinds=("single", "matryoshka", "binary", "fde", "lexical"),
                   fde=FDE_BIT, matryoshka_dims=(8,), precision="vector", distance="ip",
                   lexical_config="simple",
                   text_column="content").create()  # fmt: skip
    c = Collection(engine, "cap c", enc, kinds=("single", "binary"),
                   index=IndexParams(binary="ivfflat", lists=4)).create()  # fmt: skip
    for coll in (a, b, c):
        assert coll.add(texts, ids=ids) == len(texts)
    c.reindex()
    with engine.begin() as conn:
        conn.execute(sa.text('ANALYZE "cap a"; ANALYZE "cap b"; ANALYZE "cap c"'))
    # calibrations for target_recall (read by pgembed.calibrated_setting); "cap b" has none
    a.calibrate(sample=6, k=5, progress=False)
    c.calibrate(sample=6, k=5, progress=False)


def _vec(x: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in x) + "]"


def _toks(x: np.ndarray) -> str:
    return "{" + ",".join(f'"{_vec(t)}"' for t in x) + "}"


V = "CAST(:q AS public.vector)"
T = "CAST(:t AS public.vector[])"
TH = "CAST(:t AS public.halfvec[])"
I = "CAST(:{} AS integer)"  # noqa: E741


def workload(enc: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, SQL, params): every search on every kind, MaxSim, FDE, every helper, and the
    error paths of 0.4.0's input checks. Every argument is cast to its exact type."""
    q = enc.encode(["rain over the coast"], "query")[0]
    t = enc.encode_tokens(["storm damage in the city"], "query", progress=False)[0]
    qd = {"q": _vec(q)}
    both = {"q": _vec(q), "t": _toks(t)}
    k = {"k": 5}
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for name in ("cap a", "cap b"):
        p = {**qd, **k, "c": name}
        calls += [
            (f"knn {name}", f"SELECT * FROM pgembed.search_knn(CAST(:c AS text), {V}, "
             f"{I.format('k')})", p),
            (f"knn ef {name}", f"SELECT * FROM pgembed.search_knn(CAST(:c AS text), {V}, "
             f"{I.format('k')}, 40, CAST('relaxed_order' AS text))", p),
            (f"funnel {name}", f"SELECT * FROM pgembed.search_funnel(CAST(:c AS text), {V}, "
             f"{I.format('k')}, 8)", p),
            (f"binary {name}", f"SELECT * FROM pgembed.search_binary(CAST(:c AS text), {V}, "
             f"{I.format('k')})", p),
            (f"multivector {name}", f"SELECT * FROM pgembed.search_multivector("
             f"CAST(:c AS text), {T}, {I.format('k')})", {**p, "t": _toks(t)}),
            (f"fde_query name {name}", f"SELECT pgembed.fde_query(CAST(:c AS text), {T})::text",
             {"c": name, "t": _toks(t)}),
        ]  # fmt: skip
    calls += [
        ("funnel a 16", f"SELECT * FROM pgembed.search_funnel(CAST('cap a' AS text), {V}, "
         "5, 16, 4)", qd),
        ("binary a rescore", f"SELECT * FROM pgembed.search_binary(CAST('cap a' AS text), {V}, "
         "5, 4, 10)", qd),
        ("binary ivfflat", f"SELECT * FROM pgembed.search_binary(CAST('cap c' AS text), {V}, "
         "5, 4, NULL, NULL, NULL, 2)", qd),
        ("binary ivfflat default", f"SELECT * FROM pgembed.search_binary(CAST('cap c' AS text), "
         f"{V}, 5)", qd),
        ("maxsim halfvec", f"SELECT pgembed.maxsim({TH}, tokens) FROM \"cap a\" ORDER BY id", both),
        ("maxsim vector", f"SELECT pgembed.maxsim({T}, {T})", both),
        ("fde_query id", f"SELECT pgembed.fde_query(fde_config, {T})::text "
         "FROM pgembed.collections ORDER BY name", both),
        ("residual_levels", f"SELECT codes::text, scales FROM pgembed.residual_levels({V}, 3)", qd),
        ("residual_similarity", "SELECT pgembed.residual_similarity(l.codes, l.scales, "
         "d.embedding_bits::bit varying) FROM pgembed.residual_levels((SELECT embedding::text "
         "FROM \"cap a\" WHERE id = 1::bigint)::public.vector, 2) AS l, \"cap a\" AS d "
         "ORDER BY d.id",
         {}),
        ("ams_vectors", "SELECT pgembed.ams_vectors(ams_index, ams_sign, num_repetitions, "
         "projection_dimension)::text FROM pgembed.fde_configs ORDER BY id", {}),
        ("collection_info", "SELECT * FROM pgembed.collection_info(CAST('cap a' AS text), "
         "CAST(NULL AS text))", {}),
        ("check_range", "SELECT pgembed.check_range(CAST('x' AS text), 3, 1, 5)", {}),
        ("check_vector", f"SELECT pgembed.check_vector({V}, 32, CAST('q' AS text))::text", qd),
        ("check_tokens", f"SELECT pgembed.check_tokens({T}, 32, CAST('q' AS text))::text", both),
        ("to_halfvec", f"SELECT pgembed.to_halfvec({V}, CAST('q' AS text))::text", qd),
        ("check_cosine_query", f"SELECT pgembed.check_cosine_query({V}, "
         f"CAST({V} AS public.halfvec))", qd),
        ("hnsw", "SELECT pgembed.hnsw_end(pgembed.hnsw_begin(50, CAST('off' AS text), 10))", {}),
        ("ivfflat", "SELECT pgembed.ivfflat_end(pgembed.ivfflat_begin(NULL, "
         "CAST(NULL AS text), 9))", {}),
        # target_recall: the calibrated pick (cap a: HNSW, cap c: IVFFlat); the funnel's
        # prefix given, so that a weak one raises no WARNING
        *[(f"{fn} target", f"SELECT * FROM pgembed.search_{fn}(CAST('cap a' AS text), {V}, 5, "
           f"target_recall => CAST(0.5 AS float8))", qd) for fn in ("knn", "binary")],
        ("funnel target", f"SELECT * FROM pgembed.search_funnel(CAST('cap a' AS text), {V}, 5, "
         "16, target_recall => CAST(0.5 AS float8))", qd),
        ("binary ivfflat target", f"SELECT * FROM pgembed.search_binary(CAST('cap c' AS text), "
         f"{V}, 5, target_recall => CAST(0.5 AS float8))", qd),
        ("multivector target", "SELECT * FROM pgembed.search_multivector(CAST('cap a' AS text), "
         f"{T}, 5, target_recall => CAST(0.5 AS float8))", {"t": _toks(t)}),
        *[(f"hybrid {d} target", "SELECT * FROM pgembed.search_hybrid(CAST('cap a' AS text), "
           f"CAST('storm damage' AS text), {V}, 5, CAST(:d AS text), "
           "target_recall => CAST(0.5 AS float8))", {**qd, "d": d}) for d in ("knn", "binary")],
        ("target unmet", "SELECT pgembed.calibrated_setting(CAST('cap a' AS text), "
         "CAST('knn' AS text), CAST(1 AS float8), CAST('{\"ef_search\": 7}' AS jsonb))", {}),
        ("target out of range", f"SELECT * FROM pgembed.search_knn(CAST('cap a' AS text), {V}, "
         "5, target_recall => CAST(0 AS float8))", qd),
        ("version", "SELECT pgembed.version()", {}),
        ("vector_schema", "SELECT pgembed.vector_schema()::text", {}),
        ("fail", "SELECT pgembed.fail(CAST('22023' AS text), CAST('m' AS text), "
         "CAST('h' AS text))", {}),
        # the error paths of the input checks
        ("halfvec overflow", f"SELECT * FROM pgembed.search_knn(CAST('cap a' AS text), {V})",
         {"q": _vec(np.full(32, 1e5))}),
        ("halfvec underflow", f"SELECT * FROM pgembed.search_binary(CAST('cap a' AS text), {V})",
         {"q": _vec(np.full(32, 1e-9))}),
        ("zero", f"SELECT * FROM pgembed.search_funnel(CAST('cap a' AS text), {V})",
         {"q": _vec(np.zeros(32))}),
        ("maxsim null", "SELECT pgembed.maxsim(CAST('{\"[1,2]\",NULL}' AS public.vector[]), "
         "CAST('{\"[1,2]\"}' AS public.vector[]))", {}),
        ("maxsim dims", "SELECT pgembed.maxsim(CAST('{\"[1,2]\"}' AS public.halfvec[]), "
         "CAST('{\"[1,2,3]\"}' AS public.halfvec[]))", {}),
        ("multivector zero", f"SELECT * FROM pgembed.search_multivector(CAST('cap a' AS text), "
         f"{T})", {"t": _toks(np.zeros((2, 32)))}),
        # the lexical kind: BM25, fusion, hybrid with every dense side, the statistics
        ("bm25 a", "SELECT * FROM pgembed.search_bm25(CAST('cap a' AS text), "
         "CAST('storm damage in the city' AS text), 5)", {}),
        ("bm25 b", "SELECT * FROM pgembed.search_bm25(CAST('cap b' AS text), "
         "CAST('the fire near Sydney' AS text), 5, CAST(0.9 AS float8), CAST(0.4 AS float8))", {}),
        ("bm25 stop words", "SELECT * FROM pgembed.search_bm25(CAST('cap a' AS text), "
         "CAST('the of and' AS text))", {}),
        *[(f"hybrid {d} {f}", "SELECT * FROM pgembed.search_hybrid(CAST('cap a' AS text), "
           f"CAST('storm damage' AS text), {V}, 5, CAST(:d AS text), CAST(:f AS text))",
           {**qd, "d": d, "f": f})
          for d in ("knn", "funnel", "binary") for f in ("rrf", "convex")],
        ("hybrid multivector", "SELECT * FROM pgembed.search_hybrid(CAST('cap b' AS text), "
         f"CAST('storm damage' AS text), {T}, 5)", both),
        ("hybrid bad weight", "SELECT * FROM pgembed.search_hybrid(CAST('cap a' AS text), "
         f"CAST('storm' AS text), {V}, 5, CAST('knn' AS text), CAST('rrf' AS text), 60, "
         "CAST(-1 AS float8))", qd),
        ("fuse", "SELECT * FROM pgembed.fuse(CAST('{1,2}' AS bigint[]), "
         "CAST('{2.0,1.0}' AS float8[]), CAST('{2,3}' AS bigint[]), CAST('{0.5,0.1}' AS float8[]))",
         {}),
        ("check_real", "SELECT pgembed.check_real(CAST('x' AS text), CAST(0.5 AS float8), "
         "CAST(0 AS float8), CAST(1 AS float8))", {}),
        ("bm25_tf_table", "SELECT pgembed.bm25_tf_table()", {}),
        ("lexical writes", "WITH i AS (INSERT INTO \"cap a\" (id, content) VALUES "
         "(1000, CAST('a storm again' AS text)) RETURNING id) SELECT count(*) FROM i", {}),
        ("lexical update", "WITH u AS (UPDATE \"cap a\" SET content = CAST('rain' AS text) "
         "WHERE id = 1000 RETURNING id) SELECT count(*) FROM u", {}),
        ("lexical delete", "WITH d AS (DELETE FROM \"cap a\" WHERE id = 1000 RETURNING id) "
         "SELECT count(*) FROM d", {}),
        ("lexical stats", "SELECT * FROM pgembed.lexical_stats_recompute(CAST('cap b' AS text)) "
         "ORDER BY lexeme", {}),
        # BM25 of sharded collections: a shard's statistics, scoring with given (summed) ones
        ("bm25 statistics", "SELECT * FROM pgembed.bm25_statistics(CAST('cap a' AS text), "
         "CAST('storm damage in the city' AS text))", {}),
        ("bm25 global", "SELECT * FROM pgembed.search_bm25_global(CAST('cap a' AS text), "
         "CAST('storm damage' AS text), CAST(100 AS bigint), CAST(1000 AS bigint), "
         "CAST('{damag,storm}' AS text[]), CAST('{3,4}' AS bigint[]), 5, CAST(0.9 AS float8), "
         "CAST(0.4 AS float8))", {}),
        ("bm25 global mismatch", "SELECT * FROM pgembed.search_bm25_global(CAST('cap a' AS text), "
         "CAST('storm' AS text), CAST(100 AS bigint), CAST(1000 AS bigint), "
         "CAST('{storm}' AS text[]), CAST('{3,4}' AS bigint[]))", {}),
        # placement of sharded collections: the shard an id hashes to
        ("shard_of", "SELECT pgembed.shard_of(CAST(42 AS bigint), 3)", {}),
    ]  # fmt: skip
    return calls


def run_workload(
    engine: Engine, calls: list[tuple[str, str, dict[str, Any]]], explain: bool = False
) -> tuple[dict[str, Any], Watch, set[str]]:
    """Results by label, the notices, and the pgembed functions that ran (track_functions)."""
    with watched(engine, explain) as (conn, watch):
        results = {}
        for label, sql, params in calls:
            seen = len(watch.warnings)
            results[label] = run_one(conn, sql, params)
            watch.fired += [f"{label}: {w}" for w in watch.warnings[seen:]]
        ran = set(
            conn.execute(
                sa.text(
                    "SELECT s.funcid::regprocedure::text FROM pg_stat_xact_user_functions s "
                    "WHERE s.schemaname = 'pgembed'"
                )
            ).scalars()
        )
        conn.rollback()
    return results, watch, ran


# --- extraction ----------------------------------------------------------------------------

_IDENT_CALL = re.compile(r'(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*\(')
_OPERATOR = re.compile(r"[+\-*/<>=~!@#%^&|`?]+")
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def names_in(text: str) -> tuple[set[str], set[str]]:
    """Candidate function names (words before '(') and operator names in SQL text."""
    text = _COMMENT.sub(" ", text)
    funcs = {(m.group(1) or m.group(2)).lower() for m in _IDENT_CALL.finditer(text)}
    ops = set(_OPERATOR.findall(text))
    return funcs, ops


def function_sources(conn: sa.Connection) -> dict[str, str]:
    rows = conn.execute(
        sa.text(
            "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p "
            "WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 1"
        )
    ).all()
    return {str(sig): str(src) for sig, src in rows}


def known(conn: sa.Connection, funcs: set[str], ops: set[str]) -> tuple[set[str], set[str]]:
    """Only the names that pg_proc / pg_operator hold (in any schema)."""
    f = set(
        conn.execute(
            sa.text("SELECT DISTINCT proname::text FROM pg_proc WHERE proname = ANY(:n)"),
            {"n": sorted(funcs)},
        ).scalars()
    )
    o = set(
        conn.execute(
            sa.text("SELECT DISTINCT oprname::text FROM pg_operator WHERE oprname = ANY(:n)"),
            {"n": sorted(ops)},
        ).scalars()
    )
    return f, o


# --- planting ------------------------------------------------------------------------------


@dataclass
class Planter:
    schema: str
    vector_schema: str
    types: dict[str, int]  # universe spelling -> type oid
    existing_funcs: set[tuple[str, tuple[int, ...]]]
    existing_ops: set[tuple[str, int, int]]
    statements: list[str] = field(default_factory=list)
    count: int = 0

    def spell(self, t: str) -> str:
        base = t.removesuffix("[]")
        q = f'"{self.vector_schema}".{base}' if base in VECTOR_TYPES else base
        return q + ("[]" if t.endswith("[]") else "")

    def body(self, what: str) -> str:
        what = what.replace("%", "%%")  # RAISE's placeholder
        return (
            f"LANGUAGE plpgsql AS $p$BEGIN RAISE WARNING 'planted {what} fired'; "
            f"RAISE EXCEPTION 'planted {what} raised'; END$p$"
        )

    def function(self, name: str, args: tuple[str, ...], returns: str) -> None:
        key = (name, tuple(self.types[a] for a in args))
        if key in self.existing_funcs:
            return
        self.existing_funcs.add(key)
        sig = f'"{self.schema}"."{name}"(' + ", ".join(self.spell(a) for a in args) + ")"
        what = f"function {self.schema}.{name}({','.join(args)})".replace("'", "")
        self.statements.append(f"CREATE FUNCTION {sig} RETURNS {returns} {self.body(what)}")
        self.count += 1

    def operator(self, name: str, left: str | None, right: str, returns: str) -> None:
        key = (name, self.types[left] if left else 0, self.types[right])
        if key in self.existing_ops:
            return
        self.existing_ops.add(key)
        self.count += 1
        fn = f'"{self.schema}"."planted_op_{self.count}"'
        args = ", ".join(self.spell(a) for a in (left, right) if a)
        what = f"operator {self.schema}.{name}({left or 'NONE'},{right})"
        self.statements.append(f"CREATE FUNCTION {fn}({args}) RETURNS {returns} {self.body(what)}")
        lhs = f"LEFTARG = {self.spell(left)}, " if left else ""
        self.statements.append(
            f"CREATE OPERATOR {self.schema}.{name} ({lhs}RIGHTARG = {self.spell(right)}, "
            f"FUNCTION = {fn})"
        )


def universe() -> list[str]:
    return [*SCALARS, *(f"{t}[]" for t in SCALARS)]


def _type_oids(conn: sa.Connection, vector_schema: str) -> dict[str, int]:
    out = {}
    for t in universe():
        base = t.removesuffix("[]")
        spelled = f'"{vector_schema}".{base}' if base in VECTOR_TYPES else base
        spelled += "[]" if t.endswith("[]") else ""
        oid = conn.execute(sa.text("SELECT to_regtype(:t)::oid"), {"t": spelled}).scalar_one()
        out[t] = int(oid)
    return out


def _return_type(conn: sa.Connection, sql: str, name: str) -> str:
    """The one concrete return type the name has in the catalog, else text."""
    rows = conn.execute(sa.text(sql), {"n": name}).scalars().all()
    concrete = {r for r in rows if not r.startswith(("any", "record", "internal", "trigger"))}
    return concrete.pop() if len(concrete) == 1 and len(set(rows)) == 1 else "text"


def plant(conn: sa.Connection, schema: str, vector_schema: str, funcs: set[str],
          ops: set[str]) -> int:  # fmt: skip
    """Plant exact-match overloads of every name in ``schema``; return how many."""
    types = _type_oids(conn, vector_schema)
    by_oid = {v: k for k, v in types.items()}
    existing_funcs = {
        (str(n), tuple(int(x) for x in (a or [])))
        for n, a in conn.execute(
            sa.text("SELECT proname, proargtypes::oid[] FROM pg_proc WHERE pronamespace = "
                    "to_regnamespace(:s)"), {"s": schema}
        ).all()
    }  # fmt: skip
    existing_ops = {
        (str(n), int(left), int(right))
        for n, left, right in conn.execute(
            sa.text("SELECT oprname, oprleft::oid, oprright::oid FROM pg_operator "
                    "WHERE oprnamespace = to_regnamespace(:s)"), {"s": schema}
        ).all()
    }  # fmt: skip
    p = Planter(schema, vector_schema, types, existing_funcs, existing_ops)
    every = universe()
    for name in sorted(funcs):
        sigs = conn.execute(
            sa.text("SELECT proargtypes::oid[], proretset, provariadic <> 0 FROM pg_proc "
                    "WHERE proname = :n"), {"n": name}
        ).all()  # fmt: skip
        ret = _return_type(
            conn, "SELECT prorettype::regtype::text FROM pg_proc WHERE proname = :n", name
        )
        ret = ("SETOF " if any(s[1] for s in sigs) else "") + ret
        arities = {len(s[0] or []) for s in sigs}
        if any(s[2] for s in sigs):  # VARIADIC: calls pass more arguments
            arities |= set(range(min(arities), 8))
        for n in sorted(arities):
            if n <= 2:
                for args in itertools.product(every, repeat=n):
                    p.function(name, args, ret)
                continue
            bases = [[by_oid.get(int(o), "int4") for o in (s[0] or [])] for s in sigs
                     if len(s[0] or []) == n]  # fmt: skip
            bases = bases or [["text"] + ["int4"] * (n - 1)]
            for base in bases:
                for i in range(n):
                    for t in every:
                        p.function(name, (*base[:i], t, *base[i + 1 :]), ret)
                for i, j in itertools.combinations(range(n), 2):
                    for ti, tj in itertools.product(SCALARS, repeat=2):
                        pair = list(base)
                        pair[i], pair[j] = ti, tj
                        p.function(name, tuple(pair), ret)
    for name in sorted(ops):
        kinds = set(
            conn.execute(
                sa.text("SELECT DISTINCT oprkind::text FROM pg_operator WHERE oprname = :n"),
                {"n": name},
            ).scalars()
        )
        ret = _return_type(
            conn, "SELECT oprresult::regtype::text FROM pg_operator WHERE oprname = :n", name
        )
        if "b" in kinds:
            for left, right in itertools.product(every, repeat=2):
                p.operator(name, left, right, ret)
        if "l" in kinds:
            for right in every:
                p.operator(name, None, right, ret)
    conn.execute(sa.text("SET LOCAL check_function_bodies = off"))  # speed: no PL/pgSQL parse
    raw = conn.connection.driver_connection
    for i in range(0, len(p.statements), 2000):
        raw.execute(";\n".join(p.statements[i : i + 2000]))  # type: ignore[union-attr]
    return p.count


def extract(site: Site, explain_text: str) -> tuple[set[str], set[str], dict[str, str]]:
    with site.engine.connect() as conn:
        sources = function_sources(conn)
        funcs, ops = names_in("\n".join(sources.values()) + "\n" + explain_text)
        funcs, ops = known(conn, funcs, ops)
    return funcs, ops, sources


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(admin_url: str, tiny_encoder: Any) -> Iterator[dict[str, Any]]:
    with owned_database(admin_url) as site:
        make_collections(site.engine, tiny_encoder)
        calls = workload(tiny_encoder)
        before, watch, ran = run_workload(site.engine, calls, explain=True)
        assert not watch.warnings, watch.warnings
        explained = "\n".join(watch.notices)
        funcs, ops, sources = extract(site, explained)
        with as_owner(site) as conn:
            n = plant(conn, "public", site.vector_schema, funcs, ops)
        yield {"site": site, "calls": calls, "before": before, "ran": ran, "funcs": funcs,
               "ops": ops, "sources": sources, "explained": explained, "planted": n,
               "encoder": tiny_encoder}  # fmt: skip


def test_workload_runs_every_pgembed_function(planted: dict[str, Any]) -> None:
    """Catalog-driven coverage: each function in schema pgembed ran at least once."""
    assert planted["ran"] == set(planted["sources"]), set(planted["sources"]) - planted["ran"]


def test_extraction_sees_dynamic_sql_and_bodies(planted: dict[str, Any]) -> None:
    explained = planted["explained"]
    # the statements the searches built, as they ran: qualified pgvector operators
    assert re.search(r"OPERATOR\(public\.<=>\)", explained)
    assert re.search(r"OPERATOR\(public\.<~>\)", explained)
    assert "ORDER BY public.subvector(" in explained
    assert {"vector_norm", "binary_quantize", "subvector", "format", "sqrt"} <= planted["funcs"]
    assert {"=", "<=>", "<#>", "<~>", "%", "->>", "-"} <= planted["ops"]
    assert planted["planted"] > 10000


def test_superuser_runs_every_function_and_no_plant_fires(planted: dict[str, Any]) -> None:
    site: Site = planted["site"]
    after, watch, _ = run_workload(site.engine, planted["calls"])
    assert watch.fired == []
    assert after == planted["before"]
    # the error paths raised pgembed's own errors, before and after
    failing = {"halfvec overflow", "halfvec underflow", "zero", "maxsim null", "maxsim dims",
               "multivector zero", "fail", "bm25 stop words", "hybrid bad weight",
               "target unmet", "target out of range", "bm25 global mismatch"}  # fmt: skip
    for label in failing:
        result = after[label]
        assert result[0] == "error" and "planted" not in result[2], (label, result)
    assert all(not (isinstance(r, tuple) and r[0] == "error") for k, r in after.items()
               if k not in failing), after  # fmt: skip


def test_collection_search_through_python_is_not_captured(planted: dict[str, Any]) -> None:
    site: Site = planted["site"]
    warnings: list[str] = []

    @sa.event.listens_for(site.engine, "connect")
    def _watch(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.add_notice_handler(
            lambda d: warnings.append(d.message_primary or "") if d.severity == "WARNING" else None
        )

    try:
        for name in ("cap a", "cap b"):
            coll = Collection.open(site.engine, name, planted["encoder"])
            for strategy in ("knn", "funnel", "binary", "multivector"):
                assert len(coll.search("rain over the coast", k=3, strategy=strategy)) == 3
    finally:
        sa.event.remove(site.engine, "connect", _watch)
    assert warnings == []


def test_plans_still_use_the_ann_indexes(planted: dict[str, Any]) -> None:
    """OPERATOR(schema.op) and schema-qualified index expressions still match the indexes."""
    site: Site = planted["site"]
    searches = [c for c in planted["calls"] if c[1].startswith("SELECT * FROM pgembed.search_")]
    with watched(site.engine, explain=True) as (conn, watch):
        # 36 rows are cheaper to scan than to search: forbid seq scans, so a plan without
        # the index would mean the search's expression does not match the index's.
        conn.execute(sa.text("SET enable_seqscan = off"))
        for _label, sql, params in searches:
            run_one(conn, sql, params)
        conn.rollback()
    explained = "\n".join(watch.notices)
    for index in ("cap a_embedding_hnsw", "cap a_embedding_8_hnsw", "cap a_embedding_16_hnsw",
                  "cap a_embedding_bq_hnsw", "cap a_fde_hnsw", "cap b_fde_bq_hnsw",
                  "cap c_embedding_bq_ivfflat"):  # fmt: skip
        assert re.search(r'Index Scan using "?' + re.escape(index), explained), index


def test_positive_control_a_mixed_call_with_public_on_the_path_fires(
    planted: dict[str, Any],
) -> None:
    site: Site = planted["site"]
    with watched(site.engine) as (conn, watch):
        result = run_one(conn, "SELECT public.vector_norm('[1,2]'::public.vector) = 0", {})
    assert result[0] == "error" and "planted" in result[2]
    assert any("operator public.=(float8,int4) fired" in w for w in watch.warnings), watch.warnings


def test_positive_control_0_3_0_search_knn_is_captured(admin_url: str, tiny_encoder: Any) -> None:
    """The same machinery catches the original bug: 0.3.0's vector_norm(q) = 0."""
    with owned_database(admin_url) as site:
        texts = _texts()[:8]
        coll = Collection(site.engine, "cap old", tiny_encoder).create()
        coll.add(texts, ids=range(len(texts)))
        migrate.downgrade(site.engine, "0003")
        with site.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pgembed.version()")).scalar_one() == "0.3.0"
            src = conn.execute(
                sa.text("SELECT pg_get_functiondef('pgembed.search_knn'::regproc)")
            ).scalar_one()
            funcs, ops = known(conn, *names_in(src))
        with as_owner(site) as conn:
            plant(conn, "public", site.vector_schema, funcs, {"="} & ops)
        q = tiny_encoder.encode(["rain"], "query")[0]
        sql = f"SELECT * FROM pgembed.search_knn(CAST('cap old' AS text), {V}, 2)"
        with watched(site.engine) as (conn, watch):
            result = run_one(conn, sql, {"q": _vec(q)})
        assert result[0] == "error" and "planted" in result[2]
        assert any("operator public.=(float8,int4) fired" in w for w in watch.warnings)


def test_every_call_matches_exactly_even_with_public_on_the_functions_path(
    planted: dict[str, Any],
) -> None:
    """Stricter than the threat: with public searched right after pg_catalog, a call that
    pg_catalog matches only through an implicit cast would go to a planted exact match.
    None does: every operator and function call matches a signature exactly.
    (SQL-standard bodies were bound at creation, so this checks the PL/pgSQL ones.)"""
    site: Site = planted["site"]
    with watched(site.engine) as (conn, watch):
        path = "SET search_path = pg_catalog, public, pg_temp"
        for sig in planted["sources"]:
            conn.execute(sa.text(f"ALTER FUNCTION {sig} {path}"))
        # control: a float8 = integer comparison under that path is captured
        probe = f"LANGUAGE plpgsql {path} AS $$BEGIN RETURN x = 0; END$$"
        conn.execute(sa.text(f"CREATE FUNCTION pg_temp.probe(x float8) RETURNS bool {probe}"))
        assert run_one(conn, "SELECT pg_temp.probe(1.5::float8)", {})[0] == "error"
        assert watch.warnings == ["planted operator public.=(float8,int4) fired"]
        watch.warnings.clear()
        results = {}
        for label, sql, params in planted["calls"]:
            seen = len(watch.warnings)
            results[label] = run_one(conn, sql, params)
            watch.fired += [f"{label}: {w}" for w in watch.warnings[seen:]]
        conn.rollback()
    assert watch.fired == []
    assert results == planted["before"]
