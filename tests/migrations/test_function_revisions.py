"""The SQL functions across revisions: 0002-0004 downgrade to exactly what was there before,
and an upgrade backfills what older FDE configs lack.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from _sqlcoll import D, K, N, _make, _queries, _rows, _topk
from sqlalchemy.engine import Engine

from pgembed import migrate, sqlfuncs
from pgembed.storage import catalog
from pgembed.storage.schema import IndexParams
from pgembed.vectors.fde import FDEConfig, FDEEncoder

# --- migration 0002 ----------------------------------------------------------------------


def _functions_and_columns(engine: Engine) -> tuple[set[str], set[str], str]:
    with engine.connect() as conn:
        funcs = set(
            conn.execute(
                sa.text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p "
                    "WHERE p.pronamespace = 'pgembed'::regnamespace"
                )
            ).scalars()
        )
        cols = set(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'pgembed' AND table_name = 'fde_configs'"
                )
            ).scalars()
        )
        version = conn.execute(sa.text("SELECT pgembed.version()")).scalar_one()
    return funcs, cols, version


def test_downgrade_0002_removes_exactly_what_it_added(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine, "0001")
    funcs1, cols1, version1 = _functions_and_columns(empty_engine)
    migrate.upgrade(empty_engine, "0002")
    funcs2, cols2, version2 = _functions_and_columns(empty_engine)
    assert (version1, version2) == ("0.1.0", "0.2.0")
    assert cols2 - cols1 == {"simhash_vectors", "ams_vectors"}
    assert funcs1 < funcs2 and "pgembed.search_knn(text,vector,integer,integer,text)" in funcs2
    migrate.downgrade(empty_engine, "0001")
    assert _functions_and_columns(empty_engine) == (funcs1, cols1, "0.1.0")
    migrate.upgrade(empty_engine, "0002")
    assert _functions_and_columns(empty_engine) == (funcs2, cols2, "0.2.0")


def test_downgrade_0003_restores_0002s_functions(empty_engine: Engine) -> None:
    # Collections are written by today's catalog code, at head; 0003's downgrade then turns
    # "old" into a 0.2.0 catalog row (its binary entry names no index).
    migrate.upgrade(empty_engine)
    old = _make(empty_engine, "old", FDEConfig(D, 2, 2, "identity"), seed=9, bits=1)
    ivf = _make(empty_engine, "ivf", FDEConfig(D, 2, 2, "identity"), seed=8, bits=1,
                index=IndexParams(binary="ivfflat", lists=4))  # fmt: skip
    migrate.downgrade(empty_engine, "0002")
    before = _functions_and_columns(empty_engine)
    assert before[2] == "0.2.0"
    kinds = "SELECT kinds FROM pgembed.collections WHERE name = 'old'"
    defs = "SELECT pg_get_functiondef('pgembed.search_binary'::regproc)"
    with empty_engine.connect() as conn:
        old_kinds = conn.execute(sa.text(kinds)).scalar_one()
        binary_def = conn.execute(sa.text(defs)).scalar_one()
    assert "index" not in old_kinds["binary"]
    migrate.upgrade(empty_engine, "0003")
    funcs3, _, version3 = _functions_and_columns(empty_engine)
    assert version3 == "0.3.0"
    assert funcs3 - before[0] == {
        "pgembed.search_binary(text,vector,integer,integer,integer,integer,text,integer)",
        "pgembed.ivfflat_begin(integer,text,integer)",
        "pgembed.ivfflat_end(text[])",
    }
    with empty_engine.connect() as conn:  # 0003 says what 0.2.0 meant: an HNSW index
        assert conn.execute(sa.text(kinds)).scalar_one()["binary"]["index"] == "hnsw"
    migrate.downgrade(empty_engine, "0002")
    assert _functions_and_columns(empty_engine) == before
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text(defs)).scalar_one() == binary_def
        assert conn.execute(sa.text(kinds)).scalar_one() == old_kinds
    # 0.2.0's search_binary still serves the IVFFlat collection, at the session's probes
    q = _queries(26, 1)[0]
    call = "SELECT id FROM pgembed.search_binary(:c, CAST(:q AS vector), :k, :n)"
    with empty_engine.connect() as conn:
        conn.execute(sa.text("SET ivfflat.probes = 4"))
        params = {"c": ivf.spec.name, "q": str(q.tolist()), "k": K, "n": N // K}
        ids = conn.execute(sa.text(call), params).scalars().all()
    assert ids == _topk(ivf.cos(q), ivf.ids, K)
    # back at head, re-declaring "old" as it was is no conflict
    migrate.upgrade(empty_engine)
    with empty_engine.begin() as conn:
        catalog.register_collection(conn, old.spec, old.fde_id)


def test_downgrade_0004_restores_0003s_functions(empty_engine: Engine) -> None:
    """Every function's definition at 0003 comes back, byte for byte, after 0004 round trips."""
    migrate.upgrade(empty_engine, "0003")
    every = (
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proconfig, "
        "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
        "WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 1"
    )
    with empty_engine.connect() as conn:
        at3 = conn.execute(sa.text(every)).all()
    migrate.upgrade(empty_engine, "0004")
    with empty_engine.connect() as conn:
        at4 = conn.execute(sa.text(every)).all()
        assert conn.execute(sa.text("SELECT pgembed.version()")).scalar_one() == "0.4.0"
    assert {r[0] for r in at4} - {r[0] for r in at3} == {
        "pgembed.vector_schema()",
        "pgembed.to_halfvec(vector,text)",
        "pgembed.check_cosine_query(vector,halfvec)",
        # the lexical kind (test_hybrid.py)
        "pgembed.lexical_stats_update()",
        "pgembed.lexical_stats_recompute(text)",
        "pgembed.bm25_tf_table()",
        "pgembed.check_real(text,double precision,double precision,double precision)",
        "pgembed.search_bm25(text,text,integer,double precision,double precision)",
        "pgembed.fuse(bigint[],double precision[],bigint[],double precision[],integer,text,"
        "integer,double precision,double precision,double precision)",
        "pgembed.search_hybrid(text,text,vector,integer,text,text,integer,double precision,"
        "double precision,double precision,integer,double precision,double precision,integer)",
        "pgembed.search_hybrid(text,text,vector[],integer,text,text,integer,double precision,"
        "double precision,double precision,integer,double precision,double precision,integer)",
        "pgembed.prepare_query(jsonb,vector,integer)",
        "pgembed.distance_sql(text)",
    }
    assert all(r[2] == ["search_path=pg_catalog, pg_temp"] for r in at4), at4
    for _ in range(2):
        migrate.downgrade(empty_engine, "0003")
        with empty_engine.connect() as conn:
            assert conn.execute(sa.text(every)).all() == at3
        migrate.upgrade(empty_engine, "0004")
        with empty_engine.connect() as conn:
            assert conn.execute(sa.text(every)).all() == at4


def test_upgrade_backfills_simhash_vectors_of_older_configs(empty_engine: Engine) -> None:
    """A config saved at 0.1.0 (no simhash_vectors yet) works with fde_query after 0002."""
    migrate.upgrade(empty_engine, "0001")
    enc = FDEEncoder(FDEConfig(D, 3, 3, "ams_sketch", 5, seed=41))
    cfg = enc.config
    with empty_engine.begin() as conn:
        row = {
            "dimension": cfg.dimension,
            "num_repetitions": cfg.num_repetitions,
            "num_simhash_projections": cfg.num_simhash_projections,
            "projection": cfg.projection,
            "projection_dimension": cfg.block_dim,
            "fill_empty_partitions": cfg.fill_empty_partitions,
            "seed": cfg.seed,
            "output_dimension": cfg.output_dim,
            "matrices": enc.to_bytes(),
            "simhash": enc.simhash.ravel().tolist(),
            "ams_index": np.asarray(enc.ams_index).ravel().tolist(),
            "ams_sign": np.asarray(enc.ams_sign).ravel().tolist(),
        }
        cid = conn.execute(
            catalog.fde_configs.insert().values(**row).returning(catalog.fde_configs.c.id)
        ).scalar_one()
    migrate.upgrade(empty_engine)
    q = np.random.default_rng(42).normal(size=(6, D)).astype(np.float32)
    got = np.array(_rows(empty_engine, sa.select(sqlfuncs.fde_query(cid, q)))[0][0])
    np.testing.assert_allclose(got, enc.encode_query([q])[0], rtol=1e-3, atol=1e-4)


def test_downgrade_0006_restores_0005s_functions(empty_engine: Engine) -> None:
    """0.5.0 adds target_recall to the dense searches (hybrid's too) and the calibration
    picker; its downgrade gives back 0.4.0's functions byte for byte, and drops the
    calibration tables."""
    migrate.upgrade(empty_engine, "0005")
    every = (
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proconfig, "
        "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
        "WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 1"
    )
    tables = (
        "SELECT to_regclass('pgembed.calibrations'), to_regclass('pgembed.prefix_quality'), "
        "to_regclass('pgembed.query_depths')"
    )
    with empty_engine.connect() as conn:
        at5 = conn.execute(sa.text(every)).all()
    migrate.upgrade(empty_engine, "0006")
    with empty_engine.connect() as conn:
        at6 = conn.execute(sa.text(every)).all()
        assert conn.execute(sa.text("SELECT pgembed.version()")).scalar_one() == "0.5.0"
        assert None not in conn.execute(sa.text(tables)).one()
    searches = ("search_knn", "search_funnel", "search_binary", "search_multivector",
                "search_hybrid")  # fmt: skip
    added = {r[0] for r in at6} - {r[0] for r in at5}
    assert added == {
        "pgembed.calibrated_setting(text,text,double precision,jsonb)",
        *(n for n in added if n.split("(")[0].removeprefix("pgembed.") in searches),
    }
    assert {n.split("(")[0] for n in added} >= {f"pgembed.{s}" for s in searches}
    assert all(n.endswith(",double precision)") for n in added if "search_" in n)
    assert all(r[2] == ["search_path=pg_catalog, pg_temp"] for r in at6), at6
    assert all(r[3] for r in at6)  # every function carries a comment
    for _ in range(2):
        migrate.downgrade(empty_engine, "0005")
        with empty_engine.connect() as conn:
            assert conn.execute(sa.text(every)).all() == at5
            assert conn.execute(sa.text(tables)).one() == (None, None, None)
        migrate.upgrade(empty_engine, "0006")
        with empty_engine.connect() as conn:
            assert conn.execute(sa.text(every)).all() == at6
