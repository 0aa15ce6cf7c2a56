"""Per-collection catalog rows are writable only by whoever may write the collection.

Role A owns collection a, role B owns collection b; both were granted write on their own
collection (`pgembed grant`), so both hold INSERT, UPDATE and DELETE on the calibration
tables. Row-level security (migration 0009) keeps A off b's rows: for every table of
schema pgembed with a ``collection`` column (found in the catalog), A's inserts, updates
and deletes of b's rows are refused or touch nothing, and B's target_recall searches pick
the same setting afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

import pgembed
from pgembed import Collection, migrate


@dataclass
class Two:
    su: Engine
    a: Engine
    b: Engine
    encoder: Any


@pytest.fixture(scope="module")
def two(make_database: Any, admin_url: str, tiny_encoder: Any) -> Iterator[Two]:
    url = make_database()
    tag = uuid.uuid4().hex[:8]
    ra, rb = f"pgembed_a_{tag}", f"pgembed_b_{tag}"
    su = sa.create_engine(url, poolclass=NullPool)
    migrate.upgrade(su)
    with su.begin() as conn:
        for r in (ra, rb):
            conn.execute(sa.text(f'CREATE ROLE "{r}" NOLOGIN'))
    for name, role in (("a", ra), ("b", rb)):
        c = Collection(su, name, tiny_encoder, kinds=("single", "matryoshka"),
                       matryoshka_dims=(8,)).create()  # fmt: skip
        c.add([f"{name} text {i} about rain and snow" for i in range(12)], ids=list(range(12)))
        with su.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE "{name}" OWNER TO "{role}"'))
        pgembed.grant(su, role, name, "write")
    a, b = (sa.create_engine(url, poolclass=NullPool, connect_args={"options": f"-c role={r}"})
            for r in (ra, rb))  # fmt: skip
    for eng, name in ((a, "a"), (b, "b")):  # each owner calibrates its own collection
        Collection.open(eng, name, tiny_encoder).calibrate(k=2, sample=8, progress=False)
    yield Two(su, a, b, tiny_encoder)
    for e in (a, b):
        e.dispose()
    with su.begin() as conn:
        for r in (ra, rb):
            conn.execute(sa.text(f'DROP OWNED BY "{r}"'))
            conn.execute(sa.text(f'DROP ROLE "{r}"'))
    su.dispose()


def _per_collection_tables(su: Engine) -> list[str]:
    with su.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT format('%I.%I', table_schema, table_name) FROM "
                    "information_schema.columns WHERE table_schema = 'pgembed' "
                    "AND column_name = 'collection' ORDER BY 1"
                )
            ).scalars()
        )


def _rows(su: Engine, table: str, collection: str) -> list[Any]:
    with su.connect() as conn:
        return list(
            conn.execute(
                sa.text(f"SELECT * FROM {table} WHERE collection = :c ORDER BY 1, 2, 3"),
                {"c": collection},
            ).mappings()
        )


def _pick(two: Two, engine: Engine) -> tuple[Any, list[Any]]:
    """B's target_recall: the setting the SQL function picks, and the search's hits."""
    with engine.connect() as conn:
        setting = conn.execute(
            sa.text("SELECT pgembed.calibrated_setting('b', 'knn', 0.5)")
        ).scalar()
    hits = Collection.open(engine, "b", two.encoder).search("rain", k=2, target_recall=0.5)
    return setting, hits


def _refused_or_nothing(engine: Engine, sql: str, params: dict[str, Any]) -> None:
    """The statement fails with insufficient_privilege, or changes no row."""
    try:
        with engine.begin() as conn:
            n = conn.execute(sa.text(sql), params).rowcount
    except sa.exc.DBAPIError as exc:
        assert getattr(exc.orig, "sqlstate", None) == "42501", (sql, exc)
        return
    assert n == 0, sql


TABLES = ["pgembed.calibrations", "pgembed.prefix_quality", "pgembed.query_depths"]


def test_tables_are_found(two: Two) -> None:
    """The catalog's per-collection tables include those calibrate writes, and b has rows
    in each of them that references pgembed.collections (so the test below bites)."""
    found = _per_collection_tables(two.su)
    assert set(TABLES) <= set(found)
    for table in TABLES:
        assert _rows(two.su, table, "b"), table


@pytest.mark.parametrize("verb", ["insert", "update", "delete", "move"])
def test_a_cannot_touch_b_rows(two: Two, verb: str) -> None:
    before_pick = _pick(two, two.b)
    for table in _per_collection_tables(two.su):
        before = _rows(two.su, table, "b")
        with two.su.connect() as conn:
            cols = list(
                conn.execute(
                    sa.text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                    ),
                    {"t": table},
                ).scalars()
            )
        if verb == "insert":
            row = dict(before[0]) if before else {"collection": "b"}
            names = [c for c in cols if c in row]
            _refused_or_nothing(
                two.a,
                f"INSERT INTO {table} ({', '.join(names)}) "
                f"VALUES ({', '.join(f'CAST(:{c} AS {_type(two.su, table, c)})' for c in names)})",
                {c: _param(row[c]) for c in names},
            )
        elif verb == "update":
            _refused_or_nothing(
                two.a, f"UPDATE {table} SET collection = collection WHERE collection = 'b'", {}
            )
        elif verb == "delete":
            _refused_or_nothing(two.a, f"DELETE FROM {table} WHERE collection = 'b'", {})
        else:  # A's own rows relabelled as b's: refused by the policy's check
            _refused_or_nothing(
                two.a, f"UPDATE {table} SET collection = 'b' WHERE collection = 'a'", {}
            )
        assert _rows(two.su, table, "b") == before, (verb, table)
    assert _pick(two, two.b) == before_pick


def _type(su: Engine, table: str, column: str) -> str:
    with su.connect() as conn:
        return str(
            conn.execute(
                sa.text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = CAST(:t AS regclass) AND attname = :c"
                ),
                {"t": table, "c": column},
            ).scalar_one()
        )


def _param(value: Any) -> Any:
    import json

    return json.dumps(value) if isinstance(value, dict | list) else value


def test_a_still_writes_its_own_rows(two: Two) -> None:
    """The policies refuse only other collections' rows: A deletes and recalibrates a's."""
    for table in TABLES:
        with two.a.connect() as conn, conn.begin() as tx:
            n = conn.execute(sa.text(f"DELETE FROM {table} WHERE collection = 'a'")).rowcount
            tx.rollback()
        assert n == len(_rows(two.su, table, "a")) > 0, table
    Collection.open(two.a, "a", two.encoder).calibrate(k=2, sample=8, progress=False)


def test_policies_follow_migration(two: Two) -> None:
    """0009 puts row-level security on every table referencing pgembed.collections, its
    downgrade takes it off, and upgrading again puts it back."""
    check = sa.text(
        "SELECT k.conrelid::regclass::text AS t, r.relrowsecurity AS on, "
        "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = k.conrelid) AS policies "
        "FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid WHERE k.contype = 'f' "
        "AND k.confrelid = 'pgembed.collections'::regclass ORDER BY 1"
    )

    def state() -> list[Any]:
        with two.su.connect() as conn:
            return [tuple(r) for r in conn.execute(check)]

    tables = [t for t, _, _ in state()]
    assert set(TABLES) <= set(tables)
    assert state() == [(t, True, 4) for t in tables]
    migrate.downgrade(two.su, "0008")
    try:
        assert state() == [(t, False, 0) for t in tables]
    finally:
        migrate.upgrade(two.su)
    assert state() == [(t, True, 4) for t in tables]
