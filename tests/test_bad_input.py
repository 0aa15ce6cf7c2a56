"""A catalogue of bad inputs across the Python API, the CLI and the SQL functions.

Each case asserts the exception type (a PgembedError subclass, or a SQL error carrying a
pgembed message), that the message names the problem, and that nothing was written: the
collection's rows and pgembed's catalog are the same before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, db, query, strategies
from pgembed.corpus import lee_background
from pgembed.encoders.tokenize import TruncationWarning
from pgembed.errors import (
    CollectionError,
    ConfigError,
    DatabaseUnavailableError,
    DimensionError,
    EmptyInputError,
    FDEConfigError,
    FingerprintMismatchError,
    InputError,
    MigrationError,
    NonFiniteError,
    PgembedError,
    UnknownCollectionError,
    UnknownKindError,
    UnknownModelError,
)
from pgembed.storage import catalog, ingest
from pgembed.storage.schema import CollectionSpec, IndexParams

NAME = "bad input docs"
D = 32  # the tiny encoder's dimension
N = 24


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [s for doc in lee_background()[:30] for s in doc.split(". ") if len(s.split()) > 4][:N]


@pytest.fixture(scope="module")
def coll(engine: Engine, tiny_encoder: Any, texts: list[str]) -> Iterator[Collection]:
    c = Collection(
        engine, NAME, tiny_encoder,
        kinds=("single", "matryoshka", "binary", "multivector"), matryoshka_dims=(8, 16),
    ).create()  # fmt: skip
    assert c.add(texts, ids=range(N)) == N
    yield c
    c.drop(force=True)


def state(engine: Engine) -> tuple[Any, ...]:
    """Every row of the collection table and of the catalog, plus the public tables."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f'SELECT id, content, embedding::text FROM "{NAME}" ORDER BY id')
        ).all()
        cat = tuple(
            tuple(conn.execute(sa.text(f"SELECT * FROM pgembed.{t} ORDER BY 1")).all())
            for t in ("encoders", "collections", "fde_configs")
        )
        tables = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ).scalars()
        return (tuple(rows), cat, tuple(tables))


@pytest.fixture
def unchanged(engine: Engine, coll: Collection) -> Iterator[None]:
    """Asserts after the test that neither the collection nor the catalog changed."""
    before = state(engine)
    yield
    assert state(engine) == before


# --- the Python API ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Collection], Any]
    exc: type[BaseException]
    match: str


def _tiny_spec(**kw: Any) -> CollectionSpec:
    return CollectionSpec(**{"name": "x", "dim": D, "encoder": "tiny-bert", **kw})


def _rows(c: Collection, **kw: Any) -> int:
    """ingest.write of one row into the collection, with fields overridden by ``kw``."""
    good = c.rows(["a valid sentence about rain"], np.array([900], dtype=np.int64))
    for k, v in kw.items():
        setattr(good, k, v)
    with c.engine.begin() as conn:
        return ingest.write(conn, c.spec, good)


def _half_finite(c: Collection) -> np.ndarray:
    return np.ones(D, dtype=np.float32) / np.sqrt(D)


PY_CASES = [
    Case("text not a str", lambda c: c.add(["fine text", 42], ids=[900, 901]),
         InputError, r"text at index 1 is a int, not a str"),
    Case("text None", lambda c: c.add([None], ids=[900]),
         InputError, r"text at index 0 is a NoneType"),
    Case("text bytes", lambda c: c.add([b"bytes"], ids=[900]),
         InputError, r"text at index 0 is a bytes"),
    Case("empty text", lambda c: c.add(["ok text", ""], ids=[900, 901]),
         EmptyInputError, r"text at index 1 is empty"),
    Case("whitespace text", lambda c: c.add(["  \n\t "], ids=[900]),
         EmptyInputError, r"text at index 0 is empty or only whitespace"),
    Case("text without tokens", lambda c: c.add(["\x01\x02\x03"], ids=[900]),
         EmptyInputError, r"id 900 has no tokens after normalization"),
    Case("no texts", lambda c: c.add([]), EmptyInputError, r"at least one text"),
    Case("fewer ids than texts", lambda c: c.add(["a b c", "d e f"], ids=[900]),
         InputError, r"1 ids for 2 texts"),
    Case("duplicate ids", lambda c: c.add(["a b c", "d e f"], ids=[900, 900]),
         InputError, r"duplicate ids in one call: \[900\]"),
    Case("float ids", lambda c: c.add(["a b c"], ids=[1.5]),
         InputError, r"ids must be integers"),
    Case("nested ids", lambda c: c.add(["a b c"], ids=[[1]]),
         InputError, r"flat sequence of integers"),
    Case("embedding wrong dim", lambda c: _rows(c, embedding=np.ones((1, D + 1), np.float32)),
         DimensionError, rf"embedding has shape \(1, {D + 1}\); the collection expects \(1, {D}\)"),
    Case("embedding NaN", lambda c: _rows(c, embedding=np.full((1, D), np.nan, np.float32)),
         NonFiniteError, r"embedding holds NaN or infinity in rows \[0\]"),
    Case("embedding inf", lambda c: _rows(c, embedding=np.full((1, D), np.inf, np.float32)),
         NonFiniteError, r"embedding holds NaN or infinity"),
    Case("empty token set", lambda c: _rows(c, tokens=[np.zeros((0, D), np.float32)]),
         EmptyInputError, r"row 0 \(id 900\) has an empty token set"),
    Case("token wrong dim", lambda c: _rows(c, tokens=[np.ones((3, 7), np.float32)]),
         DimensionError, r"tokens of row 0 has shape \(3, 7\)"),
    Case("token -inf", lambda c: _rows(c, tokens=[np.full((2, D), -np.inf, np.float32)]),
         NonFiniteError, r"tokens of row 0 holds NaN or infinity"),
    Case("missing kind in batch", lambda c: _rows(c, tokens=None),
         InputError, r"stores tokens, but the batch lacks it"),
    Case("knn query wrong dim", lambda c: query.knn(c.table().c.embedding, np.ones(5)),
         DimensionError, rf"the query vector has 5 dimensions; the collection stores {D}"),
    Case("knn query NaN",
         lambda c: query.knn(c.table().c.embedding, np.full(D, np.nan)),
         NonFiniteError, r"the query vector holds NaN or infinity; pass finite values"),
    Case("knn k=0", lambda c: query.knn(c.table().c.embedding, _half_finite(c), k=0),
         ConfigError, r"k must be an integer in 1..100000, got 0"),
    Case("knn k=-3", lambda c: query.knn(c.table().c.embedding, _half_finite(c), k=-3),
         ConfigError, r"k must be an integer in 1..100000, got -3"),
    Case("funnel absurd oversample",
         lambda c: query.funnel(c.table().c.embedding, _half_finite(c), prefix=8,
                                oversample=10**9),
         ConfigError, r"oversample must be an integer in 1..1000, got 1000000000"),
    Case("funnel prefix too long",
         lambda c: query.funnel(c.table().c.embedding, _half_finite(c), prefix=D),
         DimensionError, rf"prefix {D} must be in 1..{D - 1}"),
    Case("multivector no tokens",
         lambda c: query.multivector(c.table().c.embedding, c.table().c.tokens,
                                     np.zeros((0, D)), _half_finite(c)),
         EmptyInputError, r"the query has no token vectors .*with n >= 1"),
    Case("unknown collection", lambda c: Collection.open(c.engine, "no such", c.encoder),
         UnknownCollectionError, rf"no collection named 'no such'; known collections: .*{NAME}"),
    Case("unknown kind", lambda c: Collection(c.engine, "k", c.encoder, kinds=("single", "dense")),
         CollectionError, r"unknown kind\(s\) \['dense'\]"),
    Case("no kinds", lambda c: Collection(c.engine, "k", c.encoder, kinds=()),
         CollectionError, r"needs at least one kind"),
    Case("strategy lacks kind", lambda c: c.search("rain", strategy="multivector"),
         UnknownKindError, r"needs the 'fde' kind"),
    Case("unknown strategy", lambda c: c.search("rain", strategy="sparse"),
         ConfigError, r"unknown strategy 'sparse'"),
    Case("unknown model", lambda c: __import__("pgembed").Encoder.load("no-such-model"),
         UnknownModelError, r"no-such-model"),
    Case("declare unknown encoder", lambda c: _declare(c, "ghost-encoder"),
         UnknownModelError, r"encoder 'ghost-encoder' is neither in pgembed.encoders"),
    Case("redeclare differently",
         lambda c: Collection(c.engine, NAME, c.encoder, kinds=("single",)).create(),
         CollectionError, rf"collection '{NAME}' already exists with another declaration"),
    Case("name too long", lambda c: Collection(c.engine, "n" * 64, c.encoder),
         CollectionError, r"invalid collection name 'n{64}': it is 64 bytes in UTF-8"),
    Case("empty name", lambda c: Collection(c.engine, "", c.encoder),
         CollectionError, r"invalid collection name ''"),
    Case("NUL in schema", lambda c: Collection(c.engine, "n", c.encoder, schema="pub\x00lic"),
         CollectionError, r"invalid schema name"),
    Case("matryoshka prefix >= dim", lambda c: _tiny_spec(kinds=("matryoshka",),
                                                          matryoshka_dims=(D,)),
         DimensionError, rf"matryoshka_dims \[{D}\] must be non-empty, each in 1..{D - 1}"),
    Case("binary bits 9", lambda c: _tiny_spec(kinds=("binary",), binary_bits=9),
         ConfigError, r"binary_bits=9 must be an integer in 1..8"),
    Case("vector over HNSW limit", lambda c: _tiny_spec(dim=2001, precision="vector"),
         DimensionError, r"dim 2001 exceeds pgvector's HNSW limit of 2000"),
    Case("bad precision", lambda c: _tiny_spec(precision="float8"),
         ConfigError, r"precision 'float8'"),
    Case("hnsw m=1", lambda c: IndexParams(m=1), ConfigError, r"index m=1 is out of range"),
    Case("unknown binary index", lambda c: IndexParams(binary="annoy"),  # type: ignore[arg-type]
         ConfigError, r"binary index 'annoy': use 'hnsw' or 'ivfflat'"),
    Case("ivfflat lists 0", lambda c: IndexParams(binary="ivfflat", lists=0),
         ConfigError, r"index lists=0 is out of range; pgvector accepts 1..32768"),
    Case("encode dims=0", lambda c: c.encoder.encode(["a b"], dims=0),
         DimensionError, rf"dims=0 is outside 1..{D}"),
]  # fmt: skip


def _declare(c: Collection, encoder: str) -> None:
    """What ``op.create_collection("ghost", encoder=...)`` runs."""
    from pgembed.alembic_ops import encoder_record
    from pgembed.storage.declare import declare

    with c.engine.begin() as conn:
        declare(conn, "ghost", encoder_record(conn, encoder))


@pytest.mark.parametrize("case", PY_CASES, ids=[c.id for c in PY_CASES])
def test_python_bad_input(case: Case, coll: Collection, unchanged: None) -> None:
    assert issubclass(case.exc, PgembedError)
    with pytest.raises(case.exc, match=case.match) as err:
        case.call(coll)
    assert type(err.value).__module__ == "pgembed.errors"


def test_fde_config_of_another_dimension(coll: Collection, unchanged: None) -> None:
    from pgembed import FDEConfig

    with pytest.raises(DimensionError, match="16"):
        Collection(coll.engine, "fde other dim", coll.encoder, kinds=("fde",),
                   fde=FDEConfig(dimension=16, num_repetitions=2))  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"k": 0}, r"k must be an integer in 1..100000, got 0"),
        ({"k": -1}, r"k must be an integer in 1..100000, got -1"),
        ({"k": 2**31}, r"k must be an integer in 1..100000, got 2147483648"),
        ({"k": True}, r"k must be an integer in 1..100000, got True \(bool\); pass an int"),
        ({"k": 2.7}, r"k must be an integer in 1..100000, got 2.7 \(float\)"),
        ({"k": "3"}, r"k must be an integer in 1..100000, got '3' \(str\)"),
        ({"k": 5, "strategy": "funnel", "oversample": 10**6}, r"oversample must be an integer"),
        ({"k": 5, "strategy": "binary", "ef_search": 5000}, r"ef_search must be an integer"),
        ({"k": 5, "strategy": "funnel", "prefix": 3}, r"has no index on prefix 3; its prefixes"),
        (
            {"k": 5, "strategy": "binary", "probes": 3},
            r"probes applies to an IVFFlat index.*"
            "pass ef_search instead",
        ),
        ({"k": 5, "strategy": "binary", "rescore": 2}, r"rescore must be in k..k\*oversample"),
        ({"k": 5, "iterative_scan": "always"}, r"iterative_scan must be one of off, relaxed"),
    ],
)
def test_search_options_out_of_range(
    coll: Collection, unchanged: None, opts: dict[str, Any], match: str
) -> None:
    """Collection.search checks k and every option in Python, before any SQL runs."""
    with pytest.raises(ConfigError, match=match):
        coll.search("rain", **opts)


_VALID = {"ef_search": 40, "iterative_scan": "off", "prefix": 8, "oversample": 4,
          "rescore": 10, "probes": 2, "candidates": 50, "k1": 1.2, "b": 0.75, "dense": "knn",
          "fusion": "rrf", "rrf_k": 60, "bm25_weight": 1.0, "dense_weight": 1.0, "alpha": 0.5,
          "depth": 100, "target_recall": 0.9}  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "option"),
    [(s, o) for s in strategies.NAMES for o in strategies.OPTIONS
     if o not in strategies.STRATEGIES[s].options],
)  # fmt: skip
def test_option_of_another_strategy(
    coll: Collection, unchanged: None, strategy: str, option: str
) -> None:
    """Every option a strategy does not take, from the table: a ConfigError naming who does."""
    where = ", ".join(strategies.accepting(option))
    match = rf"option '{option}' does not apply to strategy '{strategy}' \(it applies to {where}\)"
    with pytest.raises(ConfigError, match=match):
        strategies.check_options(strategy, {option: _VALID[option]}, k=5)
    if strategies.KIND[strategy] in coll.spec.all_kinds:
        with pytest.raises(ConfigError, match=match):
            coll.search("rain", k=5, strategy=strategy, **{option: _VALID[option]})


def test_unknown_option(coll: Collection, unchanged: None) -> None:
    with pytest.raises(ConfigError, match=r"option 'nprobe' .*no strategy takes it.*knn accepts"):
        coll.search("rain", k=5, nprobe=3)


def test_strategy_table_matches_sql_and_builders(engine: Engine) -> None:
    """The table is the one owner: the SQL functions and sqlfuncs' builders agree with it."""
    import inspect

    from pgembed import sqlfuncs

    with engine.connect() as conn:
        for s in strategies.STRATEGIES.values():
            overloads = conn.execute(
                sa.text("SELECT pg_get_function_arguments(p.oid), p.prosrc FROM pg_proc p "
                        "JOIN pg_namespace n ON n.oid = p.pronamespace "
                        "WHERE n.nspname = 'pgembed' AND p.proname = :f"), {"f": s.function},
            ).all()  # fmt: skip
            # hybrid has two: a query vector, or the query's token vectors (multivector)
            assert len(overloads) == (2 if s.name == "hybrid" else 1)
            lead = {"bm25": ["query"], "hybrid": ["query", "q"]}.get(s.name, ["q"])
            # with target_recall, an option left out (NULL) may come from the calibration;
            # the table's default is the fallback the body applies (hybrid's target_recall
            # goes to its dense side: its own defaults stay)
            calibrated = "target_recall" in s.options and s.name != "hybrid"
            for args, body in overloads:
                params = [a.strip().split(" ")[0] for a in args.split(",")]
                assert params == ["collection", *lead, "k", *s.options], args
                for opt, default in s.defaults.items():
                    if calibrated:
                        assert f"{opt} integer DEFAULT NULL" in args
                        assert f"coalesce({opt}, {default})" in body
                    else:
                        assert f"{opt} integer DEFAULT {default}" in args
            sig = inspect.signature(getattr(sqlfuncs, s.function)).parameters
            kw = [n for n, p in sig.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
            assert kw == list(s.options)
            want = {o: None for o in s.defaults} if calibrated else dict(s.defaults)
            assert {o: sig[o].default for o in s.defaults} == want


@pytest.mark.parametrize("k", [True, 2.7, "3", 0, 2**31, None])
def test_k_everywhere(coll: Collection, unchanged: None, k: Any) -> None:
    """Collection.search, the ORM builders and the sqlfuncs builders refuse the same k."""
    from pgembed import sqlfuncs

    q = _half_finite(coll)
    calls = [
        lambda: coll.search(q, k=k),
        lambda: query.knn(coll.table().c.embedding, q, k=k),
        lambda: query.binary_rerank(coll.table().c.embedding, q, k=k),
        lambda: sqlfuncs.search_knn(NAME, q, k=k),
        lambda: sqlfuncs.search_funnel(NAME, q, k=k),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match=r"k must be an integer in 1..100000, got "):
            call()


def _scaled(value: float) -> np.ndarray:
    return np.full(D, value, dtype=np.float32)


QUERY_CASES = [
    ("all zeros", np.zeros(D), InputError, r"query vector is all zeros.*pass a non-zero vector"),
    ("underflows as halfvec", _scaled(1e-9), InputError,
     r"query vector underflows to zero as halfvec \(largest \|x\| = 1e-09\); normalize it"),
    ("beyond halfvec", _scaled(1e5), InputError,
     r"holds 100000, beyond halfvec's range ±65504; normalize it"),
    ("NaN", np.r_[np.nan, np.ones(D - 1)], NonFiniteError, r"NaN or infinity; pass finite"),
    ("-inf", np.r_[-np.inf, np.ones(D - 1)], NonFiniteError, r"NaN or infinity"),
    ("wrong dimension", np.ones(D + 3), DimensionError,
     rf"has {D + 3} dimensions; the collection stores {D}: encode the query with"),
    ("two vectors", np.ones((2, D)), DimensionError, r"must be one non-empty vector"),
    ("ragged", [[1.0, 2.0], [3.0]], InputError, r"not a numeric array"),
    ("strings", ["a"] * D, InputError, r"not a numeric array"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("q", "exc", "match"), [c[1:] for c in QUERY_CASES], ids=[c[0] for c in QUERY_CASES]
)
def test_bad_query_vectors(
    coll: Collection, unchanged: None, q: Any, exc: type[Exception], match: str
) -> None:
    """Every single-vector strategy, and the ORM builder, refuse the query before any SQL."""
    for strategy in ("knn", "funnel", "binary"):
        with pytest.raises(exc, match=match):
            coll.search(q, k=3, strategy=strategy)
    with pytest.raises(exc, match=match):
        query.knn(coll.table().c.embedding, q)


def test_funnel_prefix_of_zeros(coll: Collection, unchanged: None) -> None:
    """The funnel ranks candidates by the prefix alone: a zero prefix would rank nothing."""
    q = np.r_[np.zeros(8), np.ones(D - 8)]
    assert len(coll.search(q, k=3)) == 3  # knn: fine
    with pytest.raises(InputError, match=r"query vector's first 8 values is all zeros"):
        coll.search(q, k=3, strategy="funnel")


@pytest.fixture(scope="module")
def mv(engine: Engine, tiny_encoder: Any, texts: list[str]) -> Iterator[Collection]:
    from pgembed import FDEConfig

    c = Collection(engine, "bad input mv", tiny_encoder, kinds=("fde",),
                   fde=FDEConfig(dimension=D, num_repetitions=2)).create()  # fmt: skip
    c.add(texts[:8], ids=range(8))
    yield c
    c.drop(force=True)


TOKEN_CASES = [
    ("empty list", [], EmptyInputError, r"has no token vectors .*n >= 1"),
    ("no tokens", np.zeros((0, D)), EmptyInputError, r"has no token vectors \(shape \(0, 32\)\)"),
    ("zero tokens", np.zeros((3, D)), InputError, r"token vector 0 is all zeros"),
    ("NaN", np.full((2, D), np.nan), NonFiniteError, r"NaN or infinity"),
    ("1-D", np.ones(D), DimensionError, r"must be an \(n, d\) array.*wrap a single vector"),
    ("ragged", [[1.0] * D, [1.0] * (D - 1)], InputError, r"every token vector of the same"),
    ("wrong dimension", np.ones((2, 7)), DimensionError, rf"have 7 dimensions; .*stores {D}"),
    ("beyond halfvec", np.full((2, D), 1e6), InputError, r"beyond halfvec's range"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("q", "exc", "match"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES]
)
def test_bad_multivector_queries(mv: Collection, q: Any, exc: type[Exception], match: str) -> None:
    """A PgembedError itself, before any SQL (not a StatementError wrapping one)."""
    from pgembed import sqlfuncs

    before = mv.count()
    with pytest.raises(exc, match=match) as err:
        mv.search(q, k=3, strategy="multivector")
    assert type(err.value).__module__ == "pgembed.errors"
    if "dimensions" not in match:  # sqlfuncs does not know the collection's dimension
        with pytest.raises(exc, match=match.replace("the query", "")):
            sqlfuncs.search_multivector(mv.spec.name, q, k=3)
    assert mv.count() == before


def test_lone_surrogate(coll: Collection, unchanged: None) -> None:
    """A lone surrogate (from a bad decode) is refused with its index, in add, encode, search."""
    match = r"text at index 1 holds a lone surrogate '\\ud800' at position 4.*errors='replace'"
    with pytest.raises(InputError, match=match):
        coll.add(["fine text", "bad \ud800 text"], ids=[900, 901])
    with pytest.raises(InputError, match=match):
        coll.encoder.encode(["fine text", "bad \ud800 text"])
    with pytest.raises(InputError, match=r"text at index 0 holds a lone surrogate"):
        coll.search("\udfff rain")


@pytest.mark.parametrize("sample", [0, -5, True, 2.5])
def test_stats_sample(coll: Collection, unchanged: None, sample: Any) -> None:
    from pgembed import stats

    with pytest.raises(ConfigError, match=r"sample must be an integer in 1..1000000"):
        stats.collect(coll, sample=sample)


def test_server_gone_mid_search(coll: Collection, admin_url: str, unchanged: None) -> None:
    """The connection dies between searches (no pre-ping): a DatabaseUnavailableError."""
    eng = sa.create_engine(coll.engine.url, pool_size=1)
    try:
        c = Collection.open(eng, NAME, coll.encoder)
        assert len(c.search("rain", k=2)) == 2
        with eng.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        admin.dispose()
        with pytest.raises(DatabaseUnavailableError, match=r"database went away while using "
                           rf"collection '{NAME}'.*check that the server runs"):  # fmt: skip
            c.search("rain", k=2)
    finally:
        eng.dispose()


def test_table_changed_behind_the_catalog(engine: Engine, tiny_encoder: Any) -> None:
    """A renamed or retyped column: CollectionError naming the mismatch, not 'went away'."""
    from pgembed import stats

    name = "bad input drift"
    c = Collection(engine, name, tiny_encoder, kinds=("single", "binary")).create()
    c.add(["one two three", "four five six"], ids=[1, 2])
    match = rf"the table of collection '{name}' no longer matches its catalog entry"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE "{name}" RENAME COLUMN embedding TO e2'))
        for strategy in ("knn", "binary"):
            with pytest.raises(CollectionError, match=match + r".*drop the collection"):
                c.search("one", k=2, strategy=strategy)
        with pytest.raises(CollectionError, match=match + r": column 'embedding' is missing"):
            stats.collect(c, sample=1)
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE "{name}" RENAME COLUMN e2 TO embedding'))
            conn.execute(sa.text(f'DROP INDEX "{name}_embedding_hnsw", "{name}_embedding_bq_hnsw"'))
            conn.execute(sa.text(f'ALTER TABLE "{name}" ALTER COLUMN embedding TYPE real[] '
                                 "USING embedding::vector::real[]"))  # fmt: skip
        with pytest.raises(CollectionError, match=match + r" \(operator does not exist"):
            c.search("one", k=2)
        with pytest.raises(CollectionError, match=r"column 'embedding' is real\[\], expected"):
            stats.collect(c, sample=1)
    finally:
        c.drop(force=True)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("dimension", 0, "dimension"),
        ("num_repetitions", -1, "num_repetitions"),
        ("num_simhash_projections", 99, r"num_simhash_projections.*2\*\*k partitions"),
        ("projection", "gaussian", "projection"),
        ("projection_dimension", 1.5, "projection_dimension"),
        ("final_projection_dimension", 0, "final_projection_dimension"),
        ("seed", -1, "seed"),
        ("fill_empty_partitions", "yes", "fill_empty_partitions"),
    ],
)
def test_invalid_fde_config(
    coll: Collection, unchanged: None, field: str, value: Any, match: str
) -> None:
    from pgembed import FDEConfig

    with pytest.raises(FDEConfigError, match=match) as err:
        Collection(coll.engine, "fde bad", coll.encoder, kinds=("fde",),
                   fde=FDEConfig(**{"dimension": D, field: value}))  # fmt: skip
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_fingerprint_mismatch_writes_nothing(
    coll: Collection, engine: Engine, unchanged: None
) -> None:
    """The catalog keeps the first fingerprint; another one under the same name is refused."""
    from pgembed.pipeline import encoder_record

    rec = encoder_record(coll.encoder)
    forged = catalog.EncoderRecord(**{**rec.__dict__, "fingerprint": "0" * 64})
    match = r"encoder 'tiny-bert' has fingerprint 000000000000…, but the catalog recorded"
    with pytest.raises(FingerprintMismatchError, match=match), engine.begin() as conn:
        catalog.register_encoder(conn, forged)


def test_over_long_texts_warn_with_the_count(engine: Engine, tiny_encoder: Any) -> None:
    """Over-long texts are the documented exception: truncated, written, counted in a warning."""
    c = Collection(engine, "bad input long", tiny_encoder).create()
    try:
        long = " ".join(["word"] * 500)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert c.add([long, "short text here", long + " again"], ids=[1, 2, 3]) == 3
        msgs = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
        assert msgs == ["2 of 3 texts were longer than max_length=64 tokens and were truncated"]
        assert c.count() == 3
    finally:
        c.drop(force=True)


def test_bare_string_is_refused(engine: Engine, tiny_encoder: Any) -> None:
    c = Collection(engine, "bad input bare str", tiny_encoder).create()
    try:
        with pytest.raises(InputError, match="wrap it in a list"):
            c.add("abc")
    finally:
        n = c.count()
        c.drop(force=True)
    assert n == 0


def test_nul_in_text_is_an_input_error(coll: Collection, unchanged: None) -> None:
    with pytest.raises(InputError, match="NUL"):
        coll.add(["abc\x00def"], ids=[900])


def test_id_out_of_bigint_range(engine: Engine, tiny_encoder: Any) -> None:
    c = Collection(engine, "bad input big id", tiny_encoder).create()
    try:
        with pytest.raises(InputError, match="bigint"):
            c.add(["a b c"], ids=[2**63])
    finally:
        n = c.count()
        c.drop(force=True)
    assert n == 0


# --- URLs and a database that goes away ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "malformed database URL"),
        ("mysql://user@localhost/db", "malformed database URL"),
        ("postgresql://user:s3cret@127.0.0.1:1/x", "cannot reach PostgreSQL"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(DatabaseUnavailableError, match=match) as err:
        db.create_engine(url)
    assert "s3cret" not in str(err.value)


def test_missing_database(admin_url: str) -> None:
    url = sa.make_url(admin_url).set(database="pgembed_no_such_db")
    with pytest.raises(DatabaseUnavailableError, match=r'database "pgembed_no_such_db" does not'):
        db.create_engine(url.render_as_string(hide_password=False))


def test_schema_not_installed(empty_engine: Engine, tiny_encoder: Any) -> None:
    with pytest.raises(MigrationError, match=r"run `pgembed db upgrade`"):
        Collection(empty_engine, "no schema", tiny_encoder).create()
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('public.\"no schema\"')")).scalar() is None


def _terminate_when_blocked(admin_url: str, database: str) -> int:
    """Terminate the backend of ``database`` that waits on a lock; returns its pid."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with admin.connect() as conn:
                pid = conn.execute(
                    sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d "
                            "AND wait_event_type = 'Lock' LIMIT 1"), {"d": database},
                ).scalar()  # fmt: skip
                if pid is not None:
                    assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    return int(pid)
            time.sleep(0.05)
        raise AssertionError("the write never blocked")
    finally:
        admin.dispose()


def _write_while_terminated(coll: Collection, admin_url: str) -> BaseException | None:
    """Hold a row lock, start an upsert of that row, terminate its backend while it waits."""
    eng = db.create_engine(coll.engine.url.render_as_string(hide_password=False))
    writer = Collection.open(eng, NAME, coll.encoder)
    got: list[BaseException | None] = []

    def write() -> None:
        try:
            writer.add(["a changed text for row zero", "a new row"], ids=[0, 950])
            got.append(None)
        except BaseException as exc:  # reported to the test
            got.append(exc)

    with coll.engine.connect() as locker, locker.begin():
        locker.execute(sa.text(f'SELECT 1 FROM "{NAME}" WHERE id = 0 FOR UPDATE'))
        th = threading.Thread(target=write)
        th.start()
        _terminate_when_blocked(admin_url, str(coll.engine.url.database))
        th.join(30)
    eng.dispose()
    assert not th.is_alive() and len(got) == 1
    return got[0]


def test_database_gone_mid_write_writes_nothing(
    coll: Collection, admin_url: str, unchanged: None
) -> None:
    err = _write_while_terminated(coll, admin_url)
    assert err is not None
    assert "connection" in str(err).lower() or "went away" in str(err)


def test_database_gone_mid_write_is_a_clear_error(coll: Collection, admin_url: str) -> None:
    err = _write_while_terminated(coll, admin_url)
    assert isinstance(err, DatabaseUnavailableError), repr(err)


def test_dead_pooled_connection_is_replaced(coll: Collection, admin_url: str) -> None:
    """A backend killed between calls: db.create_engine's pre-ping reconnects transparently."""
    eng = db.create_engine(coll.engine.url.render_as_string(hide_password=False), pool_size=1)
    c = Collection.open(eng, NAME, coll.encoder)
    with eng.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    admin.dispose()
    try:
        assert c.add(["a sentence written after the kill"], ids=[960]) == 1
        assert c.count() == N + 1
    finally:
        with coll.engine.begin() as conn:
            conn.execute(sa.text(f'DELETE FROM "{NAME}" WHERE id = 960'))
        eng.dispose()


# --- the SQL functions --------------------------------------------------------------------


def _vec(x: Any) -> str:
    return "[" + ",".join(str(float(v)) for v in np.ravel(x)) + "]"


Q = _vec(np.ones(D) / np.sqrt(D))
SQL_CASES = [
    ("unknown collection", f"SELECT * FROM pgembed.search_knn('nope', '{Q}')",
     rf"pgembed: no collection named 'nope'; known collections: .*'{NAME}'"),
    ("NULL collection", "SELECT * FROM pgembed.collection_info(NULL, 'single')",
     r"pgembed: the collection name is NULL"),
    ("wrong dimensions", f"SELECT * FROM pgembed.search_knn('{NAME}', '[1,2,3]')",
     rf"pgembed: the query vector has 3 dimensions; the collection stores {D}"),
    ("zero vector", f"SELECT * FROM pgembed.search_knn('{NAME}', '{_vec(np.zeros(D))}')",
     r"pgembed: the query vector is all zeros"),
    ("k = 0", f"SELECT * FROM pgembed.search_knn('{NAME}', '{Q}', 0)",
     r"pgembed: k must be an integer in 1..100000, got 0"),
    ("k < 0", f"SELECT * FROM pgembed.search_funnel('{NAME}', '{Q}', -4)",
     r"pgembed: k must be an integer in 1..100000, got -4"),
    ("absurd oversample",
     f"SELECT * FROM pgembed.search_funnel('{NAME}', '{Q}', 10, 8, 1000000)",
     r"pgembed: oversample must be an integer in 1..1000, got 1000000"),
    ("prefix not indexed", f"SELECT * FROM pgembed.search_funnel('{NAME}', '{Q}', 10, 12)",
     rf"pgembed: collection '{NAME}' has no index on prefix 12"),
    ("binary oversample 0", f"SELECT * FROM pgembed.search_binary('{NAME}', '{Q}', 5, 0)",
     r"pgembed: oversample must be an integer in 1..1000, got 0"),
    ("probes on an HNSW index",
     f"SELECT * FROM pgembed.search_binary('{NAME}', '{Q}', 5, probes => 3)",
     rf"pgembed: probes applies to an IVFFlat index, but collection '{NAME}' has an HNSW"),
    ("ef_search 0", f"SELECT * FROM pgembed.search_knn('{NAME}', '{Q}', 5, 0)",
     r"pgembed: ef_search must be an integer in 1..1000, got 0"),
    ("bad iterative_scan",
     f"SELECT * FROM pgembed.search_knn('{NAME}', '{Q}', 5, NULL, 'sometimes')",
     r"pgembed: iterative_scan must be off, relaxed_order or strict_order, got 'sometimes'"),
    ("kind not stored",
     f"SELECT * FROM pgembed.search_multivector('{NAME}', ARRAY['{Q}']::vector[])",
     rf"pgembed: collection '{NAME}' does not store the 'fde' kind"),
    ("maxsim empty query",
     f"SELECT pgembed.maxsim('{{}}'::vector[], ARRAY['{Q}']::vector[])",
     r"pgembed.maxsim: the query has no token vectors"),
    ("fde_query unknown config", f"SELECT pgembed.fde_query(987654, ARRAY['{Q}']::vector[])",
     r"pgembed: no FDE config 987654"),
    ("fde_query collection without fde",
     f"SELECT pgembed.fde_query('{NAME}', ARRAY['{Q}']::vector[])",
     rf"pgembed: collection '{NAME}' does not store the 'fde' kind"),
    # malformed literals are refused by pgvector's input functions, before pgembed runs
    ("malformed literal", f"SELECT * FROM pgembed.search_knn('{NAME}', '[1,2,')",
     r'invalid input syntax for type vector: "\[1,2,"'),
    ("literal not a vector", f"SELECT * FROM pgembed.search_knn('{NAME}', 'hello')",
     r'invalid input syntax for type vector: "hello"'),
    ("NaN literal", f"SELECT * FROM pgembed.search_knn('{NAME}', '[NaN,1]')",
     r"NaN not allowed in vector"),
    ("inf literal", f"SELECT * FROM pgembed.search_knn('{NAME}', '[Infinity,1]')",
     r"infinite value not allowed in vector"),
    ("empty literal", f"SELECT * FROM pgembed.search_knn('{NAME}', '[]')",
     r"vector must have at least 1 dimension"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sql", "match"), [c[1:] for c in SQL_CASES], ids=[c[0] for c in SQL_CASES]
)
def test_sql_bad_input(engine: Engine, unchanged: None, sql: str, match: str) -> None:
    with pytest.raises(sa.exc.DBAPIError, match=match), engine.connect() as conn:
        conn.execute(sa.text(sql)).all()


def test_sql_search_still_works_after_errors(engine: Engine, coll: Collection) -> None:
    """The guard rails do not get in the way: a valid call returns k rows, best first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM pgembed.search_knn('{NAME}', '{Q}', 5)")).all()
    assert len(rows) == 5 and [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


# --- the CLI ------------------------------------------------------------------------------


def one_error(stderr: str) -> str:
    """The one `pgembed: error:` line, last on stderr; any other line is a one-line warning."""
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("pgembed: error: "), stderr
    assert all(line.startswith("pgembed: warning: ") for line in lines[:-1]), stderr
    assert "internal error" not in lines[-1], stderr
    return lines[-1]


def _cli(
    engine: Engine, model_dir: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PGEMBED_MODEL_DIR": str(model_dir),
        "PGEMBED_DATABASE_URL": engine.url.render_as_string(hide_password=False),
    }
    return subprocess.run([sys.executable, "-m", "pgembed.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip


BINARY = bytes(range(256)) * 4  # not UTF-8, and holds NUL bytes: a binary file

CLI_CASES = [
    ("unknown collection", ("search", "no such coll", "rain"), "", 1,
     r"no collection named 'no such coll'"),
    ("unknown model", ("ingest", "cli new", "--model", "no-such-model"), "some text\n", 1,
     r"no-such-model"),
    ("unknown kind", ("ingest", "cli new", "--model", "tiny-bert", "--kinds", "single,dense"),
     "some text\n", 1, r"unknown kind\(s\) \['dense'\]"),
    ("bad JSON line", ("ingest", NAME, "--jsonl"), '{"id": 1, "text": "ok"}\n{"id": 2}\n', 1,
     r"line 2 is not a JSON object with 'id' and 'text'.*give \{"),
    ("blank line in text input", ("ingest", NAME), "first text\n\nthird text\n", 1,
     r"text at index 1 is empty or only whitespace"),
    ("blank line into a new collection", ("ingest", "cli new", "--model", "tiny-bert"),
     "first text\n\nthird text\n", 1, r"text at index 1 is empty or only whitespace"),
    ("empty stdin into a new collection", ("ingest", "cli new", "--model", "tiny-bert"), "", 1,
     r"no texts in stdin; give one text per line"),
    ("strategy lacks kind", ("search", NAME, "rain", "--strategy", "multivector"), "", 1,
     r"needs the 'fde' kind"),
    ("option of another strategy", ("search", NAME, "rain", "--probes", "3"), "", 1,
     r"option 'probes' does not apply to strategy 'knn' \(it applies to binary\)"),
    ("k = 0", ("search", NAME, "rain", "-k", "0"), "", 2, r"k must be an integer in 1..100000"),
    ("k = 2**31", ("search", NAME, "rain", "-k", "2147483648"), "", 2,
     r"argument -k: k must be an integer in 1..100000, got 2147483648"),
    ("k not a number", ("search", NAME, "rain", "-k", "three"), "", 2, r"argument -k"),
    ("sample 0", ("stats", NAME, "--sample", "0"), "", 2, r"--sample: expected an integer in 1"),
    ("sample -5", ("stats", NAME, "--sample", "-5"), "", 2, r"--sample: expected an integer"),
    ("batch size -1", ("ingest", NAME, "--batch-size", "-1"), "new text\n", 2,
     r"--batch-size: expected an integer in 1"),
    ("missing input file", ("ingest", NAME, "/nonexistent/texts.txt"), "", 1,
     r"cannot read input /nonexistent/texts.txt: No such file or directory; give a readable"),
    ("directory as input", ("ingest", NAME, "/"), "", 1, r"cannot read input /: Is a directory"),
    ("binary input", ("ingest", NAME, sys.executable), "", 1,
     r"input .* is not UTF-8 text \(invalid byte at line \d+\); give a text file"),
    *[(f"jsonl {what}", ("ingest", NAME, "--jsonl"), '{"id": 1, "text": "ok"}\n' + line, 1,
       "line 2" + match)
      for what, line, match in [
          ("float id", '{"id": 1.7, "text": "x y"}', r": 'id' must be a JSON integer, got 1.7"),
          ("bool id", '{"id": true, "text": "x y"}', r": 'id' must be a JSON integer, got True"),
          ("string id", '{"id": "3", "text": "x y"}', r": 'id' must be a JSON integer"),
          ("null text", '{"id": 2, "text": null}', r": 'text' must be a JSON string, got None"),
          ("number text", '{"id": 2, "text": 12345}', r": 'text' must be a JSON string, got 1"),
          ("blank text", '{"id": 2, "text": "  "}', r": the text is empty or only whitespace"),
          ("lone surrogate", '{"id": 2, "text": "a \\ud800"}', r": the text holds a lone sur"),
          ("array", '[1, "x"]', r" is not a JSON object with 'id' and 'text'"),
      ]],
    ("jsonl duplicate id", ("ingest", NAME, "--jsonl"),
     '{"id": 1, "text": "ok"}\n{"id": 1, "text": "again"}\n', 1,
     r"duplicate ids in one call: \[1\]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "args", "stdin", "rc", "match"), [pytest.param(*c, id=c[0]) for c in CLI_CASES]
)
def test_cli_bad_input(
    engine: Engine, tiny_model_dir: Path, unchanged: None, name: str, args: tuple[str, ...],
    stdin: str, rc: int, match: str,
) -> None:  # fmt: skip
    """One `pgembed: error:` line, exit 1 (runtime) or 2 (usage), nothing written."""
    import re

    quiet = ("--no-progress",) if args[0] == "ingest" else ()
    out = _cli(engine, tiny_model_dir, *args, *quiet, stdin=stdin)
    assert out.returncode == rc, (out.stdout, out.stderr)
    assert re.search(match, one_error(out.stderr)), out.stderr


def test_encode_cli_bad_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A binary --input, and --output into a missing folder: one line, no file written."""
    binary = tmp_path / "ls"
    binary.write_bytes(BINARY)
    good = tmp_path / "in.txt"
    good.write_text("one text\n")
    env = {**os.environ, "PGEMBED_MODEL_DIR": str(tiny_model_dir)}
    cases = [
        (["-i", str(binary), "-o", str(tmp_path / "x.npy")], r"is not UTF-8 text"),
        (["-i", "/nonexistent", "-o", str(tmp_path / "x.npy")], r"cannot read --input"),
        (["-i", str(good), "-o", str(tmp_path / "missing" / "x.npy")],
         r"--output folder .*missing does not exist; create it first"),
    ]  # fmt: skip
    for args, match in cases:
        out = subprocess.run([sys.executable, "-m", "pgembed.cli", "encode", "tiny-bert", *args],
                             env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 1, out.stderr
        assert __import__("re").search(match, one_error(out.stderr)), out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "ls"]


def test_encode_and_ingest_read_the_same_lines(
    engine: Engine, tiny_model_dir: Path, tiny_encoder: Any, tmp_path: Path
) -> None:
    """Form feed, U+2028, U+0085 and a lone CR stay inside a line in both commands: row i of
    the .npy is the text stored under id i."""
    lines = ["first\fline", "second\u2028line", "third\x85line", "fourth\rline", "fifth"]
    src = tmp_path / "in.txt"
    src.write_bytes(("\n".join(lines) + "\r\n").encode())  # CRLF on the last line
    npy = tmp_path / "out.npy"
    env = {**os.environ, "PGEMBED_MODEL_DIR": str(tiny_model_dir)}
    argv = ["encode", "tiny-bert", "-i", str(src), "-o", str(npy), "--no-progress"]
    enc = subprocess.run([sys.executable, "-m", "pgembed.cli", *argv, "--device", "cpu"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert enc.returncode == 0, enc.stderr
    name = "bad input lines"
    ing = _cli(engine, tiny_model_dir, "ingest", name, str(src), "--model", "tiny-bert",
               "--no-progress")  # fmt: skip
    assert ing.returncode == 0, ing.stderr
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text(f'SELECT id, content FROM "{name}" ORDER BY id')).all()
        assert [tuple(r) for r in stored] == list(enumerate(lines))
        np.testing.assert_allclose(np.load(npy), tiny_encoder.encode(lines), atol=1e-5)
    finally:
        Collection.open(engine, name, tiny_encoder).drop(force=True)
