"""Placement of sharded collections: every shard records where it belongs, and a shard list
that disagrees is refused; searches keep one hit per id; counts take each id once; a drop
completes when a shard lost its part; target_recall warns as on one server."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine

from pgembed import migrate
from pgembed._placement import LAYOUT
from pgembed._shard_audit import home_of
from pgembed.calibration import CalibrationWarning
from pgembed.shards import PlacementError, ShardedCollection, ShardPlacementWarning, mask

ROWS = 20


def name() -> str:
    return f"pl_{uuid.uuid4().hex[:8]}"


def vectors(n: int, dim: int, seed: int = 3) -> np.ndarray[Any, Any]:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def coordinator_db(make_database: Any) -> Engine:
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    return eng


def snapshot(urls: list[str], coll: str) -> dict[str, Any]:
    """Each shard's collections, placement records and rows (every column): what a refused
    declaration must leave as it was."""
    out: dict[str, Any] = {}
    for url in urls:
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM pgembed.collections ORDER BY 1"))
            placed = conn.execute(
                sa.text("SELECT collection, placement, position, shard_count, members "
                        "FROM pgembed.shard_placement ORDER BY 1")
            )  # fmt: skip
            table = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{coll}"'}).scalar()
            rows = (
                [
                    tuple(map(str, r))
                    for r in conn.execute(sa.text(f'SELECT * FROM "{coll}" ORDER BY id'))
                ]
                if table
                else None
            )
            out[url] = (list(names.scalars()), [tuple(r) for r in placed], rows)
        eng.dispose()
    return out


def recorded_on(coordinator: Engine) -> list[Any]:
    with coordinator.connect() as conn:
        return list(conn.execute(sa.text("SELECT name FROM pgembed.sharded_collections")).all())


def test_shard_of_is_postgres_hash_partitioning(make_sharded: Any) -> None:
    """pgembed.shard_of, which shards compute without a parent table, is what
    satisfies_hash_partition gives a parent partitioned by hash on a bigint id, and so is
    the inline form that count and verify use."""
    coordinator, _ = make_sharded(1)
    rng = np.random.default_rng(5)
    ids = [-(2**63), 2**63 - 1, -1, 0, 1, *rng.integers(-(2**63), 2**63 - 1, 300).tolist()]
    with coordinator.begin() as conn:
        for n in range(1, 8):
            parent = f"hash_parent_{n}"
            conn.execute(sa.text(f"CREATE TEMP TABLE {parent} (id bigint) PARTITION BY HASH (id)"))
            got = conn.execute(
                sa.text(
                    "SELECT x.id, pgembed.shard_of(x.id, :n), (SELECT r FROM "
                    "pg_catalog.generate_series(0, :n - 1) AS r WHERE "
                    "pg_catalog.satisfies_hash_partition(to_regclass(:p)::oid, :n, r, x.id)) "
                    "FROM pg_catalog.unnest(CAST(:ids AS bigint[])) AS x(id)"
                ),
                {"n": n, "p": parent, "ids": ids},
            ).all()
            assert all(mine == theirs for _, mine, theirs in got), (n, got[:5])
            assert {mine for _, mine, _ in got} == set(range(n))
            x = sa.func.unnest(sa.bindparam("ids", ids, type_=ARRAY(sa.BigInteger))).alias("x")
            inline = conn.execute(sa.select(home_of(x.column, n))).scalars().all()
            assert inline == [mine for _, mine, _ in got]  # what count and verify compute


def test_another_placement_is_refused(
    make_sharded: Any, make_database: Any, tiny_encoder: Any
) -> None:
    """Every shard list drawn from the servers (each order of each subset) that shares a
    shard with the recorded placement but differs from it is refused, before any shard
    changes; the recorded one is accepted, and adds through it never duplicate."""
    coordinator, urls = make_sharded(3)
    recorded = urls[:2]
    n = name()
    texts = [f"text {i}" for i in range(ROWS)]
    vecs = vectors(ROWS, tiny_encoder.dim)
    first = ShardedCollection(coordinator, n, tiny_encoder, shards=recorded).create()
    first.add(texts, range(ROWS), vectors=vecs)
    with first.parts[0].engine.connect() as conn:
        placement = conn.execute(
            sa.text("SELECT placement::text FROM pgembed.shard_placement WHERE collection = :n"),
            {"n": n},
        ).scalar()
    assert placement is not None
    before = snapshot(urls, first.spec.table_name)

    other = coordinator_db(make_database)
    lists = [list(c) for r in range(1, len(urls) + 1) for c in itertools.permutations(urls, r)]
    overlapping = [c for c in lists if c != recorded and set(c) & set(recorded)]
    disjoint = [c for c in lists if not set(c) & set(recorded)]
    assert len(overlapping) + len(disjoint) + 1 == len(lists) == 15
    for shards in overlapping:
        coll = ShardedCollection(other, n, tiny_encoder, shards=shards)
        try:
            with pytest.raises(PlacementError) as refused:
                coll.create()
        finally:
            coll.dispose()
        said = str(refused.value)
        assert "Nothing was changed" in said, said
        assert any(f"({mask(u)})" in said for u in shards), said  # names the shard
        assert placement in said or "recorded order" in said, said
        assert snapshot(urls, first.spec.table_name) == before, shards
        assert recorded_on(other) == []

    # The recorded placement, from another coordinator: accepted, and the same rows.
    again = ShardedCollection(other, n, tiny_encoder, shards=recorded).create()
    again.create()  # idempotent
    assert snapshot(urls, first.spec.table_name) == before
    assert again.add(texts, range(ROWS), vectors=vecs) == 0
    stale = [f"changed {i}" for i in range(ROWS)]
    assert again.add(stale, range(ROWS), vectors=vecs) == ROWS  # upserted, not added
    assert again.count() == first.count() == ROWS
    hits = again.search(vecs[0], k=2 * ROWS, ef_search=1000)
    assert sorted(i for i, _ in hits) == list(range(ROWS)) and not hits.duplicates
    again.dispose()

    # A shard list that shares no shard with it is another collection: its own placement.
    for shards in disjoint:
        lone = ShardedCollection(other, name(), tiny_encoder, shards=shards).create()
        lone.drop()
        lone.dispose()
    first.drop(force=True)
    first.dispose()


def test_open_refuses_a_changed_shard_list(make_sharded: Any, tiny_encoder: Any) -> None:
    """A coordinator whose recorded shard order was changed (each other order) is refused
    by open; restored, it opens."""
    coordinator, urls = make_sharded(3)
    n = name()
    ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create().dispose()
    with coordinator.connect() as conn:  # each URL with its server (and password mapping)
        stored = [tuple(r) for r in conn.execute(
            sa.text("SELECT url, server FROM pgembed.shards WHERE collection = :n "
                    "ORDER BY position"),
            {"n": n},
        )]  # fmt: skip

    def store(order: tuple[tuple[str, str], ...]) -> None:
        with coordinator.begin() as conn:
            for i, (url, server) in enumerate(order):
                conn.execute(
                    sa.text("UPDATE pgembed.shards SET url = :u, server = :s "
                            "WHERE collection = :n AND position = :p"),
                    {"u": url, "s": server, "n": n, "p": i},
                )  # fmt: skip

    for order in itertools.permutations(stored):
        if list(order) == stored:
            continue
        store(order)
        with pytest.raises(PlacementError, match=r"holds collection .* as position \d of 3"):
            ShardedCollection.open(coordinator, n, tiny_encoder)
    store(tuple(stored))
    ShardedCollection.open(coordinator, n, tiny_encoder).dispose()


def test_misplaced_rows_are_found_and_returned_once(make_sharded: Any, tiny_encoder: Any) -> None:
    """For every (wrong shard, home shard) pair, a copy of a stored row and a row of a new
    id are written directly to the wrong shard: verify lists exactly those, count takes each
    id once, and searches return each id once, flagged."""
    coordinator, urls = make_sharded(3)
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create()
    ids = np.arange(60, dtype=np.int64)
    vecs = vectors(len(ids), tiny_encoder.dim)
    coll.add([f"row {i}" for i in ids], ids, vectors=vecs)
    homes = coll.route(ids)
    home_of = {int(ids[at]): h for h, ats in enumerate(homes) for at in ats}
    planted: dict[tuple[int, int], tuple[int, int]] = {}  # (wrong, home) -> (copy, orphan)
    fresh = itertools.count(1000)
    for wrong, home in itertools.permutations(range(len(urls)), 2):
        copy = next(i for i, h in home_of.items() if h == home and all(
            i != c for c, _ in planted.values()))  # fmt: skip
        orphan = next(i for i in fresh if int(coll.route([i])[home].size))
        planted[(wrong, home)] = (copy, orphan)
        part = coll.parts[wrong]  # written directly: not through the sharded add
        planted_vecs = np.stack([vecs[copy], vecs[orphan % len(ids)]])
        part.add(["stale copy", "orphan"], [copy, orphan], vectors=planted_vecs, progress=False)

    found = coll.verify()
    got = {(m.shard, m.home, m.id, m.at_home) for m in found.misplaced}
    want = {(w, h, c, True) for (w, h), (c, _) in planted.items()}
    want |= {(w, h, o, False) for (w, h), (_, o) in planted.items()}
    assert got == want and not found.ok
    assert sum(found.placed) == len(ids)
    with pytest.warns(ShardPlacementWarning, match=r"12 row\(s\) sit on a shard"):
        assert coll.count() == len(ids) + len(planted)
    with pytest.warns(ShardPlacementWarning, match="found on more than one shard"):
        hits = coll.search(vecs[0], k=200, ef_search=1000)
    returned = [i for i, _ in hits]
    assert len(returned) == len(set(returned)) == len(ids) + len(planted)
    assert set(hits.duplicates) == {c for c, _ in planted.values()}
    coll.drop(force=True)
    coll.dispose()


def test_drop_force_completes_after_a_shard_lost_its_part(
    make_sharded: Any, tiny_encoder: Any
) -> None:
    """For each shard in turn losing its part: drop(force=True) from an opened collection
    succeeds and leaves nothing on the coordinator or any shard."""
    coordinator, urls = make_sharded(3)
    for lost in range(len(urls)):
        n = name()
        coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create()
        coll.add([f"t {i}" for i in range(ROWS)], range(ROWS),
                 vectors=vectors(ROWS, tiny_encoder.dim))  # fmt: skip
        coll.parts[lost].drop(force=True)
        coll.dispose()
        opened = ShardedCollection.open(coordinator, n, tiny_encoder)
        opened.drop(force=True)
        opened.dispose()
        assert recorded_on(coordinator) == []
        with coordinator.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{n}"'}).scalar() is None
            servers = conn.execute(
                sa.text("SELECT count(*) FROM pg_catalog.pg_foreign_server "
                        "WHERE srvname LIKE 'pgembed_%'")
            ).scalar()  # fmt: skip
            assert servers == 0
        for url, (names, placed, rows) in snapshot(urls, n).items():
            assert (names, placed, rows) == ([], [], None), url


def test_sharded_target_recall_without_calibration_warns(
    make_sharded: Any, tiny_encoder: Any, tiny_model_dir: Path
) -> None:
    """target_recall on an uncalibrated sharded collection: the CalibrationWarning of one
    server, for hybrid and the dense strategies, in Python and through the command line."""
    coordinator, urls = make_sharded(2)
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls,
                             kinds=("single", "lexical")).create()  # fmt: skip
    texts = [f"a note on {w} number {i}" for i, w in enumerate(["rain", "ships", "bread"] * 8)]
    coll.add(texts, range(len(texts)))
    for strategy in ("hybrid", "knn"):
        with pytest.warns(CalibrationWarning, match="no calibration of knn.*on every shard"):
            hits = coll.search("rain", k=3, strategy=strategy, target_recall=0.9)
        assert len(hits) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        coll.search("rain", k=3, strategy="hybrid")  # no target: no warning
    coll.dispose()
    url = coordinator.url.render_as_string(hide_password=False)
    env = {**os.environ, "PGEMBED_MODEL_DIR": str(tiny_model_dir), "PGEMBED_DATABASE_URL": url}
    out = subprocess.run(
        [sys.executable, "-m", "pgembed.cli", "shards", "search", n, "rain", "-k", "3",
         "--strategy", "hybrid", "--target-recall", "0.9"],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "pgembed: warning:" in out.stderr and "no calibration of knn" in out.stderr
    assert len(out.stdout.splitlines()) == 3


def test_every_shard_records_the_placement(make_sharded: Any, tiny_encoder: Any) -> None:
    """create() records one placement id on the coordinator and every shard, each shard at
    its position of the number of shards, with the hash layout."""
    coordinator, urls = make_sharded(3)
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create()
    with coordinator.connect() as conn:
        want = conn.execute(
            sa.text("SELECT placement::text FROM pgembed.sharded_collections WHERE name = :n"),
            {"n": n},
        ).scalar()
    assert want is not None
    for s in coll.shards:
        with s.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT placement::text, position, shard_count, layout, "
                        "cardinality(members) FROM pgembed.shard_placement "
                        "WHERE collection = :n"),
                {"n": n},
            ).one()  # fmt: skip
        assert tuple(row) == (want, s.position, len(urls), LAYOUT, len(urls))
    coll.drop()
    coll.dispose()


def test_collection_from_before_placements_adopts_one(make_sharded: Any, tiny_encoder: Any) -> None:
    """Taken below 0008 and back (no records anywhere), a sharded collection adopts a
    placement when opened: one id on the coordinator and every shard, rows as they were."""
    coordinator, urls = make_sharded(2)
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=urls).create()
    coll.add([f"t {i}" for i in range(ROWS)], range(ROWS), vectors=vectors(ROWS, tiny_encoder.dim))
    coll.dispose()
    # the shards first; forced, since the shards' placement records go (refused otherwise)
    migrate.downgrade(coordinator, "0007", force=True)
    migrate.upgrade(coordinator)
    with coordinator.connect() as conn:
        query = "SELECT placement FROM pgembed.sharded_collections WHERE name = :n"
        assert conn.execute(sa.text(query), {"n": n}).scalar() is None
    opened = ShardedCollection.open(coordinator, n, tiny_encoder)
    assert opened.count() == ROWS
    with coordinator.connect() as conn:
        want = conn.execute(sa.text(query.replace("placement", "placement::text", 1)),
                            {"n": n}).scalar()  # fmt: skip
    assert want is not None
    records = [rec[1:4] for _, placed, _ in snapshot(urls, n).values() for rec in placed]
    assert sorted(records) == [(uuid.UUID(want), 0, 2), (uuid.UUID(want), 1, 2)]
    opened.drop(force=True)
    opened.dispose()


def test_migration_op_refuses_another_placement(
    make_sharded: Any,
    make_database: Any,
    tiny_encoder: Any,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """op.create_sharded_collection on another coordinator: every other order or number of
    the recorded shards is refused before any shard changes; the recorded list joins."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import pgembed.alembic_ops  # noqa: F401  (registers the operations)

    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(tiny_model_dir))
    coordinator, urls = make_sharded(3)
    recorded = urls[:2]
    n = name()
    coll = ShardedCollection(coordinator, n, tiny_encoder, shards=recorded).create()
    coll.add([f"t {i}" for i in range(ROWS)], range(ROWS), vectors=vectors(ROWS, tiny_encoder.dim))
    before = snapshot(urls, n)
    other = coordinator_db(make_database)

    def declare(shards: list[str]) -> None:
        with other.begin() as conn:
            ops = Operations(MigrationContext.configure(conn))
            ops.create_sharded_collection(n, encoder=coll.spec.encoder, shards=shards)

    for r in range(1, len(urls) + 1):
        for shards in map(list, itertools.permutations(urls, r)):
            if shards == recorded or not set(shards) & set(recorded):
                continue
            with pytest.raises(PlacementError, match="Nothing was changed"):
                declare(shards)
            assert snapshot(urls, n) == before and recorded_on(other) == []
    declare(recorded)
    assert recorded_on(other) == [(n,)] and snapshot(urls, n) == before
    coll.drop(force=True)
    coll.dispose()
