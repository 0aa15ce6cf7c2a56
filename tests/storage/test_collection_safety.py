"""Declaring and writing collections safely: owned tables, every kind set, the catalog's
declaration, names in bytes, concurrent declarations, and the write path's edge cases."""

from __future__ import annotations

import itertools
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Engine

import pgembed.alembic_ops  # noqa: F401  (registers the operations)
from pgembed import Collection, FDEConfig, migrate, sqlfuncs
from pgembed.errors import (
    BlankTextWarning,
    CollectionError,
    ConfigError,
    DimensionError,
    InputError,
    TableLeftAloneWarning,
)
from pgembed.storage import catalog
from pgembed.storage.schema import KINDS
from pgembed.vectors import binary

FDE = FDEConfig(
    dimension=32,
    num_repetitions=4,
    num_simhash_projections=2,
    projection_dimension=8,
    final_projection_dimension=None,
)
TEXTS = [
    "the cat sat on the warm mat by the door",
    "stock markets fell sharply on monday morning",
    "a recipe for bread needs flour water and salt",
    "the rocket launched into orbit after a delay",
    "volcanoes erupt when magma rises to the surface",
    "she played a violin sonata in the concert hall",
]


def _name(prefix: str = "safety") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _catalog_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(catalog.collections.c.name)).scalars())


def _has_table(engine: Engine, table: str, schema: str = "public") -> bool:
    with engine.connect() as conn:
        return sa.inspect(conn).has_table(table, schema=schema)


@pytest.fixture
def user_table(engine: Engine) -> Any:
    """Creates a user's own table (one row) by name; dropped after the test."""
    made: list[str] = []

    def make(name: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE TABLE "{name}" (id bigint PRIMARY KEY, secret text)'))
            conn.execute(sa.text(f"INSERT INTO \"{name}\" VALUES (1, 'keep me')"))
        made.append(name)

    yield make
    with engine.begin() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))


def _user_rows(engine: Engine, name: str) -> list[Any]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()]


# --- 1. collections own their tables ------------------------------------------------------


def test_create_refuses_a_users_table(engine: Engine, tiny_encoder: Any, user_table: Any) -> None:
    name = _name("user_data")
    user_table(name)
    coll = Collection(engine, name, tiny_encoder)
    with pytest.raises(CollectionError, match=r"does not take over tables. Pass table="):
        coll.create()
    assert name not in _catalog_names(engine)
    assert _user_rows(engine, name) == [(1, "keep me")]
    # Writes are refused too: no collection of that name is recorded.
    with pytest.raises(CollectionError, match="no collection named"):
        coll.add(["x"], ids=[2])
    assert _user_rows(engine, name) == [(1, "keep me")]


@pytest.mark.parametrize("schema", ["pgembed", "pg_catalog", "information_schema", "pg_toast"])
def test_reserved_schemas_are_refused(engine: Engine, tiny_encoder: Any, schema: str) -> None:
    name = _name()
    coll = Collection(engine, name, tiny_encoder, schema=schema, table="alembic_version")
    with pytest.raises(CollectionError, match="schema='public'"):
        coll.create()
    assert name not in _catalog_names(engine)
    assert migrate.current(engine) == migrate.head()  # pgembed's version table untouched


def test_missing_schema_is_refused(engine: Engine, tiny_encoder: Any) -> None:
    name = _name()
    with pytest.raises(CollectionError, match=r"schema 'no_such_schema' does not exist; create"):
        Collection(engine, name, tiny_encoder, schema="no_such_schema").create()
    assert name not in _catalog_names(engine)


def test_another_collections_table_is_refused(engine: Engine, tiny_encoder: Any) -> None:
    first, second = _name(), _name()
    Collection(engine, first, tiny_encoder).create()
    with pytest.raises(CollectionError, match=f"belongs to collection '{first}'"):
        Collection(engine, second, tiny_encoder, table=first).create()
    assert second not in _catalog_names(engine)
    Collection(engine, first, tiny_encoder).drop()


def test_own_table_is_idempotent_a_replaced_one_is_left_alone(
    engine: Engine, tiny_encoder: Any, user_table: Any
) -> None:
    name = _name()
    coll = Collection(engine, name, tiny_encoder).create()
    coll.add(TEXTS[:2])
    assert coll.create().count() == 2  # re-running create() on its own table: no-op
    # The table is replaced behind pgembed's back: same name, another table.
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE "{name}"'))
    user_table(name)
    with pytest.raises(CollectionError, match="re-created outside pgembed"):
        coll.create()
    with pytest.raises(CollectionError, match="will not write into it"):
        coll.add(TEXTS[2:3], ids=[7])
    with pytest.warns(TableLeftAloneWarning, match="left alone"):
        assert coll.drop(force=True) is False
    assert _user_rows(engine, name) == [(1, "keep me")]
    assert name not in _catalog_names(engine)


def test_dropped_table_is_created_again(engine: Engine, tiny_encoder: Any) -> None:
    name = _name()
    coll = Collection(engine, name, tiny_encoder).create()
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE "{name}"'))
    with pytest.raises(CollectionError, match=r"does not exist .*run create\(\)"):
        coll.add(TEXTS[:1])
    coll.create()
    assert coll.add(TEXTS[:1]) == 1
    assert coll.drop(force=True) is True
    assert not _has_table(engine, name)


@pytest.fixture
def model_dir(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(tiny_model_dir))
    return tiny_model_dir


def _op(conn: sa.Connection) -> Any:
    return Operations(MigrationContext.configure(conn))


def test_alembic_ops_follow_the_same_rules(
    engine: Engine, model_dir: Path, user_table: Any
) -> None:
    name = _name("alembic_user")
    user_table(name)
    with pytest.raises(CollectionError, match="does not take over"), engine.begin() as conn:
        _op(conn).create_collection(name, encoder="tiny-bert")
    with pytest.raises(CollectionError, match="pgembed or to PostgreSQL"), engine.begin() as c:
        _op(c).create_collection(name, encoder="tiny-bert", schema="pgembed", table="encoders")
    assert name not in _catalog_names(engine)
    # A collection whose table was replaced: drop_collection removes only the catalog row.
    other = _name("alembic_own")
    with engine.begin() as conn:
        _op(conn).create_collection(other, encoder="tiny-bert")
        _op(conn).create_collection(other, encoder="tiny-bert")  # idempotent
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE "{other}"'))
    user_table(other)
    with pytest.warns(TableLeftAloneWarning), engine.begin() as conn:
        _op(conn).drop_collection(other, force=True)
    assert _user_rows(engine, other) == [(1, "keep me")]
    assert other not in _catalog_names(engine)


# --- 2. every kind set is writable ----------------------------------------------------------


VECTOR_KINDS = tuple(k for k in KINDS if k != "lexical")


def _kind_sets() -> list[Any]:
    """Every set of vector kinds; lexical joins those of even size (each vector kind is in
    one of them), since it never stands alone (test_lexical_alone_is_refused)."""
    out = []
    for n in range(1, len(VECTOR_KINDS) + 1):
        for combo in itertools.combinations(VECTOR_KINDS, n):
            kinds = (*combo, "lexical") if n % 2 == 0 else combo
            for bits in (1, 2) if "binary" in kinds else (1,):
                out.append(pytest.param(kinds, bits, id=f"{'+'.join(kinds)}-b{bits}"))
    return out


def test_lexical_alone_is_refused(engine: Engine, tiny_encoder: Any) -> None:
    name = _name("lexical only")
    with pytest.raises(CollectionError, match=r"kinds=\('single', 'lexical'\)"):
        Collection(engine, name, tiny_encoder, kinds=("lexical",)).create()
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table(name)


def _stored(engine: Engine, coll: Collection) -> dict[str, Any]:
    t = coll.table()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.id)).mappings().all()
    return {c.key: [r[c.key] for r in rows] for c in t.c}


def _snapshot(engine: Engine, coll: Collection) -> list[tuple[Any, ...]]:
    """Every stored value of the table, comparable with ==."""

    def plain(v: Any) -> Any:
        if v is None or isinstance(v, int | str):
            return v
        if isinstance(v, list):  # token vectors
            return tuple(np.asarray(x, dtype=np.float32).tobytes() for x in v)
        return np.asarray(v, dtype=np.float32).tobytes()

    return [tuple(plain(v) for v in r.values()) for r in _stored_rows(engine, coll)]


def _search_ok(coll: Collection, stored: dict[str, Any], i: int) -> None:
    """Each strategy the collection supports finds row i first from row i's own vectors."""
    spec = coll.spec
    want = int(stored["id"][i])
    strategies = {"knn": "single", "funnel": "matryoshka", "binary": "binary", "multivector": "fde"}
    for strategy, kind in strategies.items():
        if not spec.has(kind):
            continue
        q = stored["tokens"][i] if strategy == "multivector" else stored["embedding"][i]
        hits = coll.search(np.asarray(q, dtype=np.float32), k=3, strategy=strategy)
        assert hits[0][0] == want, (strategy, hits)
    if spec.has("multivector") and not spec.has("fde"):
        # No candidate index: tokens are searched by exact MaxSim in SQL.
        t = coll.table()
        q = np.asarray(stored["tokens"][i], dtype=np.float32)
        score = sqlfuncs.maxsim(q, t.c.tokens)
        with coll.engine.connect() as conn:
            top = conn.execute(sa.select(t.c.id).order_by(score.desc()).limit(1)).scalar()
        assert top == want


@pytest.mark.parametrize(("kinds", "bits"), _kind_sets())
def test_every_kind_set_is_writable_and_searchable(
    engine: Engine, tiny_encoder: Any, kinds: tuple[str, ...], bits: int
) -> None:
    name = _name("kinds")
    coll = Collection(
        engine, name, tiny_encoder, kinds=kinds, fde=FDE, binary_bits=bits, matryoshka_dims=(8, 16)
    ).create()
    try:
        assert coll.add(TEXTS, ids=range(10, 10 + len(TEXTS))) == len(TEXTS)
        got = _stored(engine, coll)
        spec = coll.spec
        assert got["id"] == list(range(10, 10 + len(TEXTS)))
        assert got["content"] == TEXTS
        cols = {"embedding", "embedding_bits", "fde", "tokens"} & set(got)
        assert cols == set(spec.vector_columns())
        pooled, tokens = tiny_encoder.encode_both(TEXTS, "document", progress=False)
        if spec.has("single"):
            np.testing.assert_allclose(
                np.array(got["embedding"], dtype=np.float32), pooled, atol=2e-3
            )
        if "embedding_bits" in got:
            want = binary.pack_residual(pooled, bits)
            stored_bits = [
                np.packbits(np.array([c == "1" for c in b])) for b in got["embedding_bits"]
            ]
            np.testing.assert_array_equal(np.array(stored_bits), want)
        if spec.has("multivector"):
            for s, t in zip(got["tokens"], tokens, strict=True):
                np.testing.assert_allclose(np.asarray(s, dtype=np.float32), t, atol=2e-3)
        if spec.has("fde"):
            want_fde = coll.fde.encode_document(tokens)
            np.testing.assert_allclose(
                np.array(got["fde"], dtype=np.float32), want_fde, rtol=2e-3, atol=2e-3
            )
        _search_ok(coll, got, 3)
    finally:
        coll.drop(force=True)


# --- 3. writes follow the catalog -----------------------------------------------------------


@pytest.fixture
def recorded(engine: Engine, tiny_encoder: Any) -> Any:
    name = _name("recorded")
    coll = Collection(
        engine,
        name,
        tiny_encoder,
        kinds=("matryoshka", "binary", "fde"),
        fde=FDE,
        binary_bits=2,
        matryoshka_dims=(8, 16),
    ).create()
    coll.add(TEXTS[:3])
    yield coll
    coll.drop(force=True)


@pytest.mark.parametrize(
    ("options", "differs"),
    [
        ({"kinds": ("single",)}, r"the table stores \['binary', 'fde', 'matryoshka'"),
        ({"binary_bits": 1}, "binary bits: recorded 2, declared 1"),
        ({"table": "elsewhere"}, "table_name: recorded"),
        ({"text_column": "body"}, "text_column: recorded"),
    ],
    ids=["fewer-kinds", "fewer-bits", "other-table", "other-text-column"],
)
def test_writes_refuse_another_declaration(
    engine: Engine, tiny_encoder: Any, recorded: Collection, options: dict, differs: str
) -> None:
    declared = {
        "kinds": ("matryoshka", "binary", "fde"),
        "fde": FDE,
        "binary_bits": 2,
        "matryoshka_dims": (8, 16),
        **options,
    }
    other = Collection(engine, recorded.spec.name, tiny_encoder, **declared)
    before = _snapshot(engine, recorded)
    with pytest.raises(CollectionError, match=rf"{differs}.*Collection\.open\(engine"):
        other.add(["a changed first text", "a new text"], ids=[0, 99])
    with pytest.raises(CollectionError, match=differs):
        other.sync()
    assert _snapshot(engine, recorded) == before
    assert not _has_table(engine, "elsewhere")


def test_writes_refuse_another_fde_config(
    engine: Engine, tiny_encoder: Any, recorded: Collection
) -> None:
    from dataclasses import replace

    other = Collection(
        engine,
        recorded.spec.name,
        tiny_encoder,
        kinds=("matryoshka", "binary", "fde"),
        fde=replace(FDE, seed=FDE.seed + 1),
        binary_bits=2,
        matryoshka_dims=(8, 16),
    )
    before = _snapshot(engine, recorded)
    with pytest.raises(CollectionError, match=r"another FDE config.*Collection\.open"):
        other.add(["a changed first text"], ids=[0])
    assert _snapshot(engine, recorded) == before


def test_open_and_an_equal_declaration_write_every_recorded_kind(
    engine: Engine, tiny_encoder: Any, recorded: Collection
) -> None:
    name = recorded.spec.name
    opened = Collection.open(engine, name, tiny_encoder)
    assert opened.add(["a changed first text"], ids=[0]) == 1
    same = Collection(
        engine,
        name,
        tiny_encoder,
        kinds=("fde", "binary", "matryoshka"),
        fde=FDE,
        binary_bits=2,
        matryoshka_dims=(16, 8),
    )
    assert same.add(["another new text"], ids=[5]) == 1  # no create(): still the catalog's
    got = _stored(engine, recorded)
    for col in ("embedding", "embedding_bits", "fde", "tokens"):
        assert all(v is not None for v in got[col]), col
    i = got["id"].index(0)
    want = tiny_encoder.encode(["a changed first text"], "document", progress=False)[0]
    np.testing.assert_allclose(np.asarray(got["embedding"][i], dtype=np.float32), want, atol=2e-3)


# --- 4. declaration input -------------------------------------------------------------------


def test_names_are_checked_in_bytes(engine: Engine, tiny_encoder: Any) -> None:
    with pytest.raises(CollectionError, match=r"80 bytes in UTF-8.*shorter name"):
        Collection(engine, "é" * 40, tiny_encoder)
    with pytest.raises(CollectionError, match="64 bytes"):
        Collection(engine, "x", tiny_encoder, table="é" * 32)
    # 31 two-byte characters: 62 bytes, a valid identifier; index names still fit.
    name = "é" * 30 + uuid.uuid4().hex[:1]
    coll = Collection(
        engine, name, tiny_encoder, kinds=("matryoshka", "binary"), matryoshka_dims=(8, 16)
    ).create()
    try:
        assert coll.add(TEXTS[:2]) == 2
        assert coll.search(TEXTS[0], k=1)[0][0] == 0
    finally:
        coll.drop(force=True)


def test_long_names_sharing_a_prefix_get_distinct_indexes(
    engine: Engine, tiny_encoder: Any
) -> None:
    prefix = "a_rather_long_collection_name_prefix_" + uuid.uuid4().hex[:12] + "_"
    colls = [
        Collection(
            engine,
            prefix + s,
            tiny_encoder,
            kinds=("matryoshka", "binary", "fde"),
            fde=FDE,
            matryoshka_dims=(8, 16),
        ).create()
        for s in ("first", "second")
    ]
    try:
        names = []
        with engine.connect() as conn:
            for c in colls:
                names.append({i["name"] for i in sa.inspect(conn).get_indexes(c.spec.name)})
        assert not names[0] & names[1]
        for found in names:
            # one of each index per collection, however long the shared prefix
            for suffix in (
                "_embedding_hnsw",
                "_embedding_8_hnsw",
                "_embedding_16_hnsw",
                "_embedding_bq_hnsw",
                "_fde_bq_hnsw",
            ):
                assert sum(n.endswith(suffix) for n in found) == 1, (suffix, found)
            assert all(len(n.encode()) <= 63 for n in found)
        colls[1].add(TEXTS[:2])
        assert colls[1].search(TEXTS[1], k=1, strategy="funnel")[0][0] == 1
    finally:
        for c in colls:
            c.drop(force=True)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"matryoshka_dims": (8, 8)}, ConfigError, r"repeats a prefix.*\[8\]"),
        ({"matryoshka_dims": (0, 8)}, DimensionError, r"each in 1\.\.31"),
        ({"matryoshka_dims": (8, 32)}, DimensionError, r"each in 1\.\.31"),
        ({"matryoshka_dims": ()}, DimensionError, "non-empty"),
        ({"matryoshka_dims": ("8",)}, ConfigError, "must be integers"),
        ({"matryoshka_dims": (8.5,)}, ConfigError, "must be integers"),
        ({"binary_bits": 2.0}, ConfigError, "integer in 1..8"),
        ({"text_column": "id"}, CollectionError, "choose another text_column"),
        ({"text_column": "embedding"}, CollectionError, "choose another text_column"),
        ({"text_column": "tokens"}, CollectionError, "choose another text_column"),
        ({"text_column": "embedded_hash"}, CollectionError, "choose another text_column"),
    ],
)
def test_bad_declarations_are_refused(
    engine: Engine, tiny_encoder: Any, options: dict, error: type, match: str
) -> None:
    name = _name()
    with pytest.raises(error, match=match):
        Collection(engine, name, tiny_encoder, kinds=("matryoshka", "binary"), **options)
    assert name not in _catalog_names(engine)
    assert not _has_table(engine, name)


def test_unsorted_prefixes_are_sorted(engine: Engine, tiny_encoder: Any) -> None:
    name = _name()
    coll = Collection(
        engine, name, tiny_encoder, kinds=("matryoshka",), matryoshka_dims=(16, 8)
    ).create()
    try:
        assert coll.spec.matryoshka_dims == (8, 16)
        Collection(
            engine, name, tiny_encoder, kinds=("matryoshka",), matryoshka_dims=(8, 16)
        ).create()
        assert Collection.open(engine, name, tiny_encoder).spec.matryoshka_dims == (8, 16)
    finally:
        coll.drop()


# --- 5. concurrent declarations -------------------------------------------------------------


def test_concurrent_create_makes_one_collection(make_database: Any, tiny_encoder: Any) -> None:
    url = make_database()
    migrate.upgrade(sa.create_engine(url))
    engines = [sa.create_engine(url, poolclass=sa.pool.NullPool) for _ in range(3)]
    for round_ in range(5):
        name = f"race_{round_}"
        barrier = threading.Barrier(len(engines))
        errors: list[BaseException] = []

        def create(
            eng: Engine, name: str = name, barrier: Any = barrier, errors: list = errors
        ) -> None:
            coll = Collection(eng, name, tiny_encoder, kinds=("single", "fde"), fde=FDE)
            barrier.wait()
            try:
                coll.create()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with engines[0].connect() as conn:
            rows = conn.execute(
                sa.select(catalog.collections.c.table_oid).where(catalog.collections.c.name == name)
            ).all()
            oid = conn.execute(sa.text("SELECT to_regclass(:t)::oid"), {"t": name}).scalar()
        assert len(rows) == 1 and rows[0][0] == oid is not None
    for e in engines:
        e.dispose()


# --- 6. write-path edge cases ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "2", None])
def test_bad_batch_sizes(engine: Engine, tiny_encoder: Any, size: Any) -> None:
    coll = Collection(engine, _name(), tiny_encoder).create()
    try:
        with pytest.raises(InputError, match=r"batch_size must be a positive integer.*e\.g\."):
            coll.add(TEXTS[:2], batch_size=size)
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            coll.sync(batch_size=size)
        assert coll.count() == 0
    finally:
        coll.drop()


def test_sync_clears_null_and_blank_texts_and_goes_on(engine: Engine, tiny_encoder: Any) -> None:
    coll = Collection(
        engine, _name(), tiny_encoder, kinds=("binary", "fde"), fde=FDE, binary_bits=2
    ).create()
    try:
        coll.add(TEXTS[:4])
        t = coll.table()
        with engine.begin() as conn:
            old = conn.execute(sa.select(t.c.embedding).where(t.c.id == 1)).scalar_one()
            conn.execute(t.update().where(t.c.id == 1).values(content=None))
            conn.execute(t.update().where(t.c.id == 2).values(content=" \t\n "))
            conn.execute(t.insert().values(id=50, content=TEXTS[5]))
        with pytest.warns(BlankTextWarning, match=r"ids \[2\]"):
            assert coll.sync(batch_size=1) == 1  # row 50
        got = {r["id"]: r for r in _stored_rows(engine, coll)}
        for i in (1, 2):
            assert all(got[i][c] is None for c in coll.spec.vector_columns()), i
        assert got[1]["embedded_hash"] is None
        assert all(got[50][c] is not None for c in coll.spec.vector_columns())
        assert coll.sync() == 0  # the blank row is not claimed again
        for strategy in ("knn", "binary"):
            ids = [i for i, _ in coll.search(np.asarray(old, np.float32), k=3, strategy=strategy)]
            assert 1 not in ids and 2 not in ids
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == 2).values(content=TEXTS[2]))
        assert coll.sync() == 1
    finally:
        coll.drop(force=True)


def _stored_rows(engine: Engine, coll: Collection) -> list[Any]:
    t = coll.table()
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t).order_by(t.c.id)).mappings().all())


def test_a_refused_text_is_named_by_its_row_id(engine: Engine, tiny_encoder: Any) -> None:
    from pgembed.errors import EmptyInputError

    coll = Collection(engine, _name(), tiny_encoder)
    with pytest.raises(EmptyInputError, match=r"the text of row id 12 is empty") as info:
        coll._rows_by_id([TEXTS[0], TEXTS[1], "  "], np.array([10, 11, 12]))
    assert "index" not in str(info.value)
    with pytest.raises(EmptyInputError, match=r"the text of row id 7 is empty"):
        coll._rows_by_id(["\n"], np.array([7]))
