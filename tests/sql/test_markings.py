"""How pgembed's SQL functions are declared: SECURITY INVOKER, a pinned search_path and a
COMMENT on each, their volatility, and names and planted objects that cannot capture them.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from _sqlcoll import Coll, D, K, N, _make, _queries, _rows, _search, _topk
from sqlalchemy.engine import Engine

from pgembed import migrate, sqlfuncs
from pgembed.vectors.fde import FDEConfig

# --- security ----------------------------------------------------------------------------


def test_functions_are_security_invoker_pinned_and_commented(engine: Engine) -> None:
    rows = _rows(
        engine,
        sa.text(
            "SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig, "
            "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
            "WHERE p.pronamespace = 'pgembed'::regnamespace"
        ),
    )
    names = {r[0].split("(")[0] for r in rows}
    assert {"pgembed.maxsim", "pgembed.fde_query", "pgembed.search_knn", "pgembed.search_funnel",
            "pgembed.search_binary", "pgembed.search_multivector"} <= names  # fmt: skip
    for sig, secdef, config, comment in rows:
        assert secdef is False, sig
        assert comment, f"{sig} has no COMMENT"
        assert config == ["search_path=pg_catalog, pg_temp"], (sig, config)


def test_volatility_markings(engine: Engine) -> None:
    rows = dict(
        _rows(
            engine,
            sa.text(
                "SELECT p.oid::regprocedure::text, p.provolatile::text || p.proparallel::text || "
                "CASE WHEN p.proisstrict THEN 's' ELSE '-' END FROM pg_proc p "
                "WHERE p.pronamespace = 'pgembed'::regnamespace"
            ),
        )
    )
    assert rows["pgembed.maxsim(halfvec[],halfvec[])"] == "iss"
    assert rows["pgembed.fde_query(integer,vector[])"] == "sss"
    assert rows["pgembed.search_knn(text,vector,integer,integer,text,double precision)"] == "vu-"
    assert rows["pgembed.calibrated_setting(text,text,double precision,jsonb)"] == "ss-"


def test_table_with_hostile_name_is_a_name(engine: Engine, coll: Coll) -> None:
    """The fixture's table is literally named 'sqlf docs; DROP TABLE x' and searches work."""
    assert coll.spec.table_name == "sqlf docs; DROP TABLE x"
    ids, _ = _search(engine, sqlfuncs.search_knn(coll.spec.name, _queries(20, 1)[0], 3))
    assert len(ids) == 3


def test_search_path_is_pinned_against_planted_objects(make_database: Any) -> None:
    """pgvector in its own schema; look-alike functions and operators planted ahead of it."""
    url = make_database()
    opts = {"options": "-csearch_path=public,ext"}
    eng = sa.create_engine(url, connect_args=opts)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA ext"))
            conn.execute(sa.text("CREATE EXTENSION vector SCHEMA ext"))
        migrate.upgrade(eng)
        c = _make(eng, "planted", FDEConfig(D, 3, 2, "ams_sketch", 4, seed=31), seed=8)
        with eng.begin() as conn:
            for sql in (
                "CREATE FUNCTION public.subvector(ext.halfvec, int, int) RETURNS ext.halfvec "
                "LANGUAGE sql AS $$ SELECT (1/0)::text::ext.halfvec $$",
                "CREATE FUNCTION public.binary_quantize(ext.halfvec) RETURNS bit "
                "LANGUAGE sql AS $$ SELECT (1/0)::bit $$",
                "CREATE FUNCTION public.evil(ext.halfvec, ext.halfvec) RETURNS float8 "
                "LANGUAGE sql AS $$ SELECT 1/0 $$",
                "CREATE OPERATOR public.<=> (LEFTARG = ext.halfvec, RIGHTARG = ext.halfvec, "
                "FUNCTION = public.evil)",
                "CREATE OPERATOR public.<#> (LEFTARG = ext.halfvec, RIGHTARG = ext.halfvec, "
                "FUNCTION = public.evil)",
                "CREATE FUNCTION public.unnest(ext.halfvec[]) RETURNS SETOF ext.halfvec "
                "LANGUAGE sql AS $$ SELECT (1/0)::text::ext.halfvec $$",
            ):
                conn.execute(sa.text(sql))
            # the planted objects do capture unqualified calls from this session
            with pytest.raises(sa.exc.DBAPIError, match="division by zero"), conn.begin_nested():
                conn.execute(sa.text("SELECT '[1,2]'::halfvec <=> '[1,2]'::halfvec"))
        q = _queries(21, 1)[0]
        for hits, want in (
            (sqlfuncs.search_knn(c.spec.name, q, K, ef_search=N), _topk(c.cos(q), c.ids, K)),
            (sqlfuncs.search_funnel(c.spec.name, q, K, oversample=N // K, ef_search=N), None),
            (sqlfuncs.search_binary(c.spec.name, q, K, oversample=N // K, rescore=N), None),
            (sqlfuncs.search_multivector(c.spec.name, q[None, :], K, candidates=N), None),
        ):  # fmt: skip
            ids, _ = _search(eng, hits)
            assert len(ids) == K
            if want is not None:
                assert ids == want
    finally:
        eng.dispose()
