"""pgembed's migrations on a database that holds populated collections.

Data survives every upgrade; going down to base refuses while collections are registered,
unless forced, and forced it keeps the collection tables as ordinary tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, FDEConfig, migrate
from pgembed.corpus import lee_background
from pgembed.errors import CollectionError, MigrationError

FDE = FDEConfig(dimension=32, num_repetitions=4, num_simhash_projections=2,
                projection_dimension=8, final_projection_dimension=None)  # fmt: skip
KINDS = ("single", "matryoshka", "binary", "fde")
STRATEGIES: tuple[tuple[str, dict[str, int]], ...] = (
    ("knn", {}), ("funnel", {"prefix": 8}), ("binary", {}), ("multivector", {}),
)  # fmt: skip


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [s for doc in lee_background()[:20] for s in doc.split(". ") if len(s.split()) > 4][:40]


@pytest.fixture
def live(make_database: Any) -> Iterator[Engine]:
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _populate(engine: Engine, enc: Any, texts: list[str]) -> list[Collection]:
    a = Collection(engine, "live a", enc, kinds=KINDS, fde=FDE, matryoshka_dims=(8,),
                   binary_bits=2).create()  # fmt: skip
    b = Collection(engine, "live b", enc, table="live b table", text_column=None).create()
    assert a.add(texts, ids=range(len(texts)), batch_size=16) == len(texts)
    b_ids = list(range(1000, 1000 + len(texts) // 2))
    vecs = enc.encode(texts[: len(b_ids)])
    with engine.begin() as conn:  # a vectors-only collection, written through the table
        rows = [{"id": i, "embedding": v} for i, v in zip(b_ids, vecs, strict=True)]
        conn.execute(b.table().insert(), rows)
    return [a, b]


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Every row of the collection tables (as text) and of the catalog, in order."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in ("live a", "live b table"):
            rows = conn.execute(sa.text(f'SELECT * FROM public."{table}" ORDER BY id')).all()
            out[table] = [tuple(map(str, r)) for r in rows]
        if conn.execute(sa.text("SELECT to_regclass('pgembed.collections')")).scalar():
            out["catalog"] = conn.execute(
                sa.text(
                    "SELECT name, table_name, encoder, kinds::text FROM pgembed.collections "
                    "ORDER BY name"
                )
            ).all()
            out["encoders"] = conn.execute(
                sa.text("SELECT name, fingerprint, dim FROM pgembed.encoders ORDER BY name")
            ).all()
            out["fde_configs"] = conn.execute(
                sa.text(
                    "SELECT id, md5(matrices), md5(simhash::text) FROM pgembed.fde_configs "
                    "ORDER BY id"
                )
            ).all()
    return out


def _answers(engine: Engine, enc: Any) -> list[list[tuple[int, float]]]:
    """Every search strategy's top 5 for two queries, through the SQL functions."""
    a = Collection.open(engine, "live a", enc)
    return [
        a.search(q, k=5, strategy=strategy, **opts)
        for q in ("economic growth", "a storm hit the coast")
        for strategy, opts in STRATEGIES
    ]


def test_each_step_down_and_up_keeps_the_data(
    live: Engine, tiny_encoder: Any, texts: list[str]
) -> None:
    _populate(live, tiny_encoder, texts)
    before = _snapshot(live)
    answers = _answers(live, tiny_encoder)
    assert all(len(hits) == 5 for hits in answers)
    assert len(before["live a"]) == len(texts) and len(before["catalog"]) == 2
    revisions = [s for s in migrate.history() if s.down_revision is not None]  # newest first
    for script in revisions:  # down one revision at a time (never to base), then up again
        migrate.downgrade(live, str(script.down_revision))
        assert migrate.current(live) == script.down_revision
        assert _snapshot(live)["live a"] == before["live a"]
        migrate.upgrade(live)
        assert migrate.current(live) == migrate.head()
        assert _snapshot(live) == before, f"data changed across {script.revision}"
        assert _answers(live, tiny_encoder) == answers, f"searches changed ({script.revision})"
    # still a working collection at head: reopen, resume (nothing to do), extend
    a = Collection.open(live, "live a", tiny_encoder)
    assert a.add(texts, ids=range(len(texts))) == 0
    assert a.add(["one more sentence about migrations"], ids=[len(texts)]) == 1
    assert a.count() == len(texts) + 1


def test_noop_revision_round_trip_keeps_populated_collections(
    live: Engine, tiny_encoder: Any, texts: list[str], noop_revision: Any
) -> None:
    """A later revision on top of head goes down and up over live data."""
    head = migrate.head()

    def run(fn: str, rev: str) -> None:
        noop_revision(live, fn, rev)

    _populate(live, tiny_encoder, texts)
    before = _snapshot(live)
    for _ in range(2):
        run("upgrade", "heads")
        assert migrate.current(live) == "9999"
        assert _snapshot(live) == before
        run("downgrade", head)
        assert migrate.current(live) == head
        assert _snapshot(live) == before


def test_downgrade_to_base_refuses_registered_collections(
    live: Engine, tiny_encoder: Any, texts: list[str]
) -> None:
    _populate(live, tiny_encoder, texts)
    before = _snapshot(live)
    with pytest.raises(MigrationError) as err:
        migrate.downgrade(live, "base")
    msg = str(err.value)
    assert "'live a' (table public.live a)" in msg and "'live b'" in msg
    assert "pgembed db downgrade base --force" in msg
    # nothing happened: same revision, same catalog, same rows
    assert migrate.current(live) == migrate.head()
    assert _snapshot(live) == before

    migrate.downgrade(live, "base", force=True)
    assert migrate.current(live) is None
    after = _snapshot(live)
    assert "catalog" not in after  # the catalog is gone ...
    assert after["live a"] == before["live a"]  # ... the tables stay, with their rows
    assert after["live b table"] == before["live b table"]

    # upgrade again: the left-over tables are now the user's own, and pgembed does not
    # take them over (re-declaring on one is refused, naming the fix); rows stay
    migrate.upgrade(live)
    again = Collection(live, "live a", tiny_encoder, kinds=KINDS, fde=FDE, matryoshka_dims=(8,),
                       binary_bits=2)  # fmt: skip
    with pytest.raises(CollectionError, match=r"does not take over tables\. Pass table="):
        again.create()
    assert _snapshot(live)["live a"] == before["live a"]
    with live.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pgembed.collections")).scalar() == 0


def test_empty_catalog_downgrades_to_base_without_force(live: Engine, tiny_encoder: Any) -> None:
    c = Collection(live, "live empty", tiny_encoder).create()
    with pytest.raises(MigrationError, match="'live empty'"):
        migrate.downgrade(live, "base")
    c.drop()
    migrate.downgrade(live, "base")
    assert migrate.current(live) is None


def test_cli_downgrade_base_needs_force(live: Engine, tiny_encoder: Any, texts: list[str]) -> None:
    _populate(live, tiny_encoder, texts)
    env = {**os.environ, "PGEMBED_DATABASE_URL": live.url.render_as_string(hide_password=False)}

    def pgembed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgembed.cli", *args],
                              env=env, capture_output=True, text=True, check=False)  # fmt: skip

    out = pgembed("db", "downgrade", "base")
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith("pgembed: error: downgrading to base removes pgembed's catalog")
    assert "--force" in out.stderr and "Traceback" not in out.stderr
    assert migrate.current(live) == migrate.head()
    assert "--force" in pgembed("db", "downgrade", "--help").stdout
    out = pgembed("db", "downgrade", "base", "--force")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pgembed schema at base (removed)"
    with live.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "live a"')).scalar_one() == len(texts)
