"""Every downgrade from head, with data present, then upgrade again: nothing goes silently.

The revisions come from alembic's script directory (each one below head, and base). One
populated database is built per module (a collection with every kind, lexical included; an
IVFFlat binary collection; a calibration; a recorded sharded collection) and copied
(CREATE DATABASE ... TEMPLATE) for each revision. For each:

- unforced, a downgrade that would lose something refuses with a MigrationError that
  names it, and changes nothing (same revision, same rows, same objects);
- it loses something exactly when a forced round trip does not give every row back (the
  refusal is neither missing nor spurious), judged by this test's own snapshot;
- after the round trip (forced where it refused) every strategy answers as before, and
  the BM25 statistics equal a recount from scratch;
- where the downgrade left a lexical collection without its statistics triggers, rows
  deleted meanwhile are counted after the upgrade (statistics recomputed, BM25 answers
  those of the same deletion made at head).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from pgembed import Collection, FDEConfig, migrate, strategies
from pgembed.corpus import lee_background
from pgembed.errors import MigrationError
from pgembed.storage import catalog
from pgembed.storage import schema as sch
from pgembed.storage.indexes import built
from pgembed.storage.schema import KINDS, IndexParams

FDE = FDEConfig(dimension=32, num_repetitions=4, num_simhash_projections=2,
                projection_dimension=8, final_projection_dimension=None)  # fmt: skip
QUERIES = ("economic growth", "a storm hit the coast")
DELETED = range(30, 36)  # rows deleted at a revision without statistics triggers
REVISIONS = [s.down_revision or "base" for s in migrate.history()]  # each one below head


def _texts() -> list[str]:
    sents = [s for doc in lee_background()[:20] for s in doc.split(". ") if len(s.split()) > 4]
    return sents[:40]


class Site:
    def __init__(self, admin_url: str) -> None:
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.url = make_url(admin_url)
        self.made: list[str] = []

    def database(self, template: str | None = None) -> tuple[str, Engine]:
        name = f"pgembed_rt_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
        self.made.append(name)
        url = self.url.set(database=name).render_as_string(hide_password=False)
        return name, sa.create_engine(url)


def _answers(engine: Engine, enc: Any) -> dict[str, Any]:
    """Every strategy of every collection, on each query (the strategies from the code)."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM pgembed.collections ORDER BY 1")).scalars()
        names = list(names)
    for name in names:
        coll = Collection.open(engine, name, enc)
        for strategy in strategies.NAMES:
            if not coll.spec.has(strategies.KIND[strategy]):
                continue
            for q in QUERIES:
                out[f"{name}/{strategy}/{q}"] = coll.search(q, k=5, strategy=strategy)
    return out


def _stats(engine: Engine) -> dict[str, Any]:
    """Each lexical collection's maintained statistics (lexemes at 0 left out), asserted
    equal to a recount from scratch."""
    out = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT name, table_schema, kinds -> 'lexical' ->> 'stats' FROM "
                "pgembed.collections WHERE kinds ? 'lexical' ORDER BY 1"
            )
        ).all()
        for name, schema, table in rows:
            kept = conn.execute(
                sa.text(
                    f'SELECT lexeme, docs, tokens FROM "{schema}"."{table}" '
                    "WHERE (docs, tokens) <> (0, 0) ORDER BY 1"
                )
            ).all()
            fresh = conn.execute(
                sa.text(
                    "SELECT lexeme, docs, tokens FROM pgembed.lexical_stats_recompute(:c) "
                    "WHERE (docs, tokens) <> (0, 0) ORDER BY 1"
                ),
                {"c": name},
            ).all()
            assert kept == fresh, f"statistics of {name!r} differ from a recount"
            out[name] = kept
    return out


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Every table of schema pgembed but the version (rows as jsonb), every table and
    trigger and index in public with the rows of its tables."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN "
                "('pgembed', 'public') AND tablename <> 'alembic_version' ORDER BY 1, 2"
            )
        ).all()
        for schema, table in tables:
            out[f"{schema}.{table}"] = sorted(
                conn.execute(
                    sa.text(f'SELECT to_jsonb(t)::text FROM "{schema}"."{table}" AS t')
                ).scalars()
            )
        out["objects"] = sorted(
            conn.execute(
                sa.text(
                    "SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal "
                    "UNION ALL SELECT 'index ' || indexname FROM pg_indexes "
                    "WHERE schemaname = 'public'"
                )
            ).scalars()
        )
    return out


def _lexical_triggers(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgname LIKE '%\\_lexical\\_%'"
                )
            ).scalar_one()
        )


def _delete(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ("rt every", "rt ivf"):
            delete = sa.text(f'DELETE FROM "{table}" WHERE id IN :ids')
            conn.execute(delete.bindparams(sa.bindparam("ids", expanding=True)),
                         {"ids": list(DELETED)})  # fmt: skip


@pytest.fixture(scope="module")
def site(admin_url: str) -> Iterator[Site]:
    s = Site(admin_url)
    yield s
    with s.admin.connect() as conn:
        for name in s.made:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    s.admin.dispose()


@pytest.fixture(scope="module")
def populated(site: Site, tiny_encoder: Any) -> dict[str, Any]:
    """The template database, what it answers and holds, and what it answers once the
    DELETED rows are gone (deleted at head, where the triggers count them)."""
    name, eng = site.database()
    migrate.upgrade(eng)
    texts = _texts()
    every = Collection(eng, "rt every", tiny_encoder, kinds=KINDS, fde=FDE,
                       matryoshka_dims=(8,), binary_bits=2).create()  # fmt: skip
    every.add(texts, ids=range(len(texts)), batch_size=16)
    ivf = Collection(eng, "rt ivf", tiny_encoder, kinds=("single", "binary", "lexical"),
                     index=IndexParams(binary="ivfflat", lists=2)).create()  # fmt: skip
    ivf.add(texts[:20], ids=range(20))
    every.calibrate(sample=8, k=5, progress=False, strategies=["knn"])
    with eng.begin() as conn:  # a coordinator's record (no shards to reach)
        conn.execute(
            sa.text(
                "INSERT INTO pgembed.sharded_collections (name, declaration) "
                "VALUES ('rt sharded', '{\"kinds\": [\"single\"]}')"
            )
        )
    found = {"answers": _answers(eng, tiny_encoder), "stats": _stats(eng),
             "snapshot": _snapshot(eng)}  # fmt: skip
    eng.dispose()
    _, copy = site.database(template=name)
    _delete(copy)
    found["answers_deleted"] = _answers(copy, tiny_encoder)
    found["stats_deleted"] = _stats(copy)
    copy.dispose()
    found["template"] = name
    assert found["stats_deleted"] != found["stats"]  # the deletion shows in the statistics
    return found


def test_revisions_are_every_one_below_head() -> None:
    assert REVISIONS[-1] == "base" and len(REVISIONS) == len(migrate.history())
    assert migrate.head() not in REVISIONS


@pytest.mark.parametrize("records", [True, False], ids=["records", "no-records"])
@pytest.mark.parametrize("revision", REVISIONS)
def test_downgrade_refuses_or_round_trips(
    revision: str, records: bool, site: Site, populated: dict[str, Any], tiny_encoder: Any
) -> None:
    """``records``: with the calibration and the sharded record; without them, the
    downgrades above base lose nothing and go through unforced."""
    _, eng = site.database(template=populated["template"])
    before = populated["snapshot"]
    assert _snapshot(eng) == before
    if not records:
        with eng.begin() as conn:
            for table in ("calibrations", "prefix_quality", "query_depths", "sharded_collections"):
                conn.execute(sa.text(f"DELETE FROM pgembed.{table}"))
        before = _snapshot(eng)
    head = migrate.head()
    try:
        migrate.downgrade(eng, revision)
        refused = None
    except MigrationError as exc:
        refused = str(exc)
    if refused is not None:  # nothing changed, and the message says how to go on
        assert migrate.current(eng) == head
        assert _snapshot(eng) == before
        assert "--force" in refused, refused
        migrate.downgrade(eng, revision, force=True)
    expected = None if revision == "base" else revision
    assert migrate.current(eng) == expected
    triggers_kept = _lexical_triggers(eng)
    migrate.upgrade(eng)
    assert migrate.current(eng) == head
    after = _snapshot(eng)
    lost = sorted(k for k in before if before[k] != after.get(k))
    # refused exactly when a forced round trip loses something, and it named it
    assert (refused is not None) == bool(lost), (refused, lost)
    if revision == "base":  # the catalog went, forced: the tables stay with their rows
        assert refused is not None and "'rt every'" in refused and "'rt ivf'" in refused
        assert after["public.rt every"] == before["public.rt every"]
        eng.dispose()
        return
    for key in lost:  # each table that lost rows is named, with its count
        if key.startswith("pgembed."):
            assert refused is not None and f"row(s) of {key}" in refused, (key, refused)
    assert _answers(eng, tiny_encoder) == populated["answers"]
    assert _stats(eng) == populated["stats"]
    if triggers_kept:
        eng.dispose()
        return
    # The downgrade took the statistics triggers: rows deleted down there still count.
    migrate.downgrade(eng, revision, force=True)
    _delete(eng)
    migrate.upgrade(eng)
    assert _stats(eng) == populated["stats_deleted"]
    assert _answers(eng, tiny_encoder) == populated["answers_deleted"]
    eng.dispose()


def test_cli_downgrade_refuses_in_one_line(site: Site, populated: dict[str, Any]) -> None:
    _, eng = site.database(template=populated["template"])
    env = {**os.environ, "PGEMBED_DATABASE_URL": eng.url.render_as_string(hide_password=False)}
    out = subprocess.run([sys.executable, "-m", "pgembed.cli", "db", "downgrade", "0003"],
                         env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith("pgembed: error: downgrading to '0003' would lose")
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "row(s) of pgembed.calibrations ('rt every')" in out.stderr
    assert "pgembed db downgrade 0003 --force" in out.stderr
    assert migrate.current(eng) == migrate.head()
    assert _snapshot(eng) == populated["snapshot"]
    eng.dispose()


def test_upgrade_restores_every_declared_index_and_trigger(
    site: Site, populated: dict[str, Any], tiny_encoder: Any
) -> None:
    """Whatever a downgrade (or anyone) took, an upgrade builds again every index the
    declarations imply (from schema.table) and the lexical statistics triggers (from the
    catalog), recounting statistics that went stale meanwhile."""
    _, eng = site.database(template=populated["template"])
    declared = {}
    with eng.begin() as conn:
        for rec in catalog.list_collections(conn):
            names = {str(i.name) for i in sch.table(rec.spec).indexes}
            assert names and names <= {b.name for b in built(conn, rec.spec)}
            declared[rec.spec.name] = names
            for name in names:
                conn.execute(sa.text(f'DROP INDEX "{rec.spec.schema}"."{name}"'))
        triggers = conn.execute(
            sa.text(
                "SELECT format('DROP TRIGGER %I ON %s', tgname, tgrelid::regclass) FROM "
                "pg_trigger WHERE tgfoid = 'pgembed.lexical_stats_update()'::regprocedure"
            )
        ).scalars()
        for drop in list(triggers):
            conn.execute(sa.text(drop))
    _delete(eng)  # uncounted: the statistics go stale
    assert _lexical_triggers(eng) == 0
    migrate.upgrade(eng)
    assert _lexical_triggers(eng) == 4 * len(populated["stats"])
    with eng.connect() as conn:
        for name, names in declared.items():
            have = {b.name for b in built(conn, catalog.get_collection(conn, name).spec)}
            assert names <= have, (name, names - have)
    assert _stats(eng) == populated["stats_deleted"]
    assert _answers(eng, tiny_encoder) == populated["answers_deleted"]
    eng.dispose()


def test_objects_outside_pgembed_that_a_downgrade_takes_are_named(empty_engine: Engine) -> None:
    """Base drops every function in schema pgembed with CASCADE: a view on one, outside
    pgembed, would go too. (Views on pgembed's own functions and tables make the earlier
    revisions' plain DROPs fail, which changes nothing either.)"""
    migrate.upgrade(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(sa.text("CREATE FUNCTION pgembed.mine() RETURNS int RETURN 7"))
        conn.execute(sa.text("CREATE VIEW public.mine AS SELECT pgembed.mine() AS v"))
    with pytest.raises(MigrationError, match=r"view public\.mine\. Nothing was changed"):
        migrate.downgrade(empty_engine, "base")
    assert migrate.current(empty_engine) == migrate.head()
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT v FROM public.mine")).scalar() == 7
    migrate.downgrade(empty_engine, "base", force=True)
    assert migrate.current(empty_engine) is None
