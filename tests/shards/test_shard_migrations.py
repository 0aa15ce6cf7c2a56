"""Users' migrations on a coordinator: op.create_sharded_collection / op.drop_sharded_collection,
run by alembic against the three-server fixture."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Engine

import pgembed.alembic_ops  # noqa: F401  (registers the operations)
from pgembed.alembic_ops import (
    CreateShardedCollectionOp,
    DropShardedCollectionOp,
    IrreversibleDropError,
)
from pgembed.errors import CollectionError, UnknownCollectionError
from pgembed.shards import ShardedCollection, shard_urls

ENV_PY = """
from alembic import context

import pgembed.alembic_ops  # noqa: F401

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = """
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_sharded_collection({name!r}, encoder="tiny-bert", shards={urls!r})


def downgrade() -> None:
    op.drop_sharded_collection({name!r})
"""


def _project(root: Path, name: str, urls: list[str]) -> Config:
    cfg = Config(str(root / "alembic.ini"))
    command.init(cfg, str(root / "migrations"))
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "versions" / "a1_sharded.py").write_text(
        REVISION.format(name=name, urls=urls)
    )
    cfg.set_main_option("script_location", str(root / "migrations"))
    return cfg


def _run(cfg: Config, engine: Engine, fn: str, rev: str) -> None:
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, fn)(cfg, rev)


def _held(urls: list[str], name: str) -> list[int | None]:
    """Rows of ``name`` on each shard; None where the shard does not record it."""
    out: list[int | None] = []
    for url in urls:
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            known = conn.execute(
                sa.text("SELECT table_name FROM pgembed.collections WHERE name = :n"), {"n": name}
            ).scalar()
            rows = None if known is None else conn.execute(
                sa.text(f'SELECT count(*) FROM public."{known}"')
            ).scalar()  # fmt: skip
        eng.dispose()
        out.append(rows)
    return out


def _recorded(coordinator: Engine, name: str) -> list[str] | None:
    with coordinator.connect() as conn:
        try:
            return shard_urls(conn, name)
        except UnknownCollectionError:
            return None


def test_sharded_collection_in_a_migration(
    make_sharded: Any,
    tiny_model_dir: Path,
    tiny_encoder: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(tiny_model_dir))
    coordinator, urls = make_sharded(2)
    name = f"mig_{uuid.uuid4().hex[:8]}"
    cfg = _project(tmp_path, name, urls)

    _run(cfg, coordinator, "upgrade", "head")
    assert _recorded(coordinator, name) == urls
    assert _held(urls, name) == [0, 0]
    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    vecs = np.eye(4, tiny_encoder.dim, dtype=np.float32)
    assert coll.add(["a", "b", "c", "d"], [1, 2, 3, 4], vectors=vecs) == 4
    assert [i for i, _ in coll.search(vecs[2], k=1)] == [3]
    coll.dispose()
    with coordinator.connect() as conn:  # plain SQL on the coordinator sees every row
        assert conn.execute(sa.text(f'SELECT count(*) FROM public."{name}"')).scalar() == 4

    # The downgrade's drop is not forced: a populated collection is refused, on no shard
    # dropped, and the coordinator still records it.
    with pytest.raises(CollectionError, match=r"holds \d+ rows"):
        _run(cfg, coordinator, "downgrade", "base")
    held = _held(urls, name)
    assert None not in held and sum(h or 0 for h in held) == 4
    assert _recorded(coordinator, name) == urls

    # A migration that fails after the op: the shards' part committed, the coordinator's
    # rolled back; running it again completes the drop.
    with pytest.raises(RuntimeError), coordinator.begin() as conn:
        Operations(MigrationContext.configure(conn)).drop_sharded_collection(name, force=True)
        raise RuntimeError("a later step of the migration fails")
    assert _held(urls, name) == [None, None]
    assert _recorded(coordinator, name) == urls
    _run(cfg, coordinator, "downgrade", "base")
    assert _recorded(coordinator, name) is None
    with coordinator.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'public."{name}"'}).scalar()
            is None
        )
        servers = conn.execute(sa.text("SELECT count(*) FROM pg_foreign_server")).scalar()
    assert servers == 0

    # The same for a create: the shards keep the collection, a second run records it.
    with pytest.raises(RuntimeError), coordinator.begin() as conn:
        Operations(MigrationContext.configure(conn)).create_sharded_collection(
            name, encoder="tiny-bert", shards=urls
        )
        raise RuntimeError("a later step of the migration fails")
    assert _held(urls, name) == [0, 0] and _recorded(coordinator, name) is None
    _run(cfg, coordinator, "upgrade", "head")
    assert _recorded(coordinator, name) == urls
    ShardedCollection.open(coordinator, name, tiny_encoder).dispose()
    _run(cfg, coordinator, "downgrade", "base")  # empty: the unforced drop goes through
    assert _held(urls, name) == [None, None] and _recorded(coordinator, name) is None


def test_sharded_ops_reverse() -> None:
    create = CreateShardedCollectionOp("d", "tiny-bert", ["u1", "u2"], kinds=("single",))
    drop = create.reverse()
    assert isinstance(drop, DropShardedCollectionOp) and drop.force
    again = drop.reverse()
    assert (again.name, again.encoder, again.shards, again.options) == (
        "d", "tiny-bert", ("u1", "u2"), {"kinds": ("single",)}
    )  # fmt: skip
    with pytest.raises(IrreversibleDropError, match="shards=\\[url1, url2\\]"):
        DropShardedCollectionOp("d").reverse()


@pytest.mark.parametrize("declare_user_table", [False, True])
def test_autogenerate_leaves_sharded_tables_alone(
    make_sharded: Any, tiny_encoder: Any, declare_user_table: bool
) -> None:
    """On a coordinator, every table the sharded collection made (the partitioned parent and
    its foreign partitions, read from the catalog) is left out of autogenerate, with or
    without other tables declared; a user's own new table still gets its op."""
    from alembic.autogenerate import produce_migrations

    from pgembed.alembic_ops import include_object, render_item

    coordinator, urls = make_sharded(2)
    name = f"ag_{uuid.uuid4().hex[:8]}"
    ShardedCollection(coordinator, name, tiny_encoder, shards=urls).create().dispose()
    md = sa.MetaData()
    if declare_user_table:
        sa.Table("user_notes", md, sa.Column("id", sa.Integer, primary_key=True))
    with coordinator.connect() as conn:
        pgembed_tables = set(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pgembed.sharded_collections s "
                    "JOIN pg_class c ON c.oid = s.parent OR c.oid IN "
                    "(SELECT inhrelid FROM pg_inherits WHERE inhparent = s.parent)"
                )
            ).scalars()
        )
        assert name in pgembed_tables and len(pgembed_tables) == 3  # parent + 2 partitions
        ctx = MigrationContext.configure(
            conn,
            opts={"target_metadata": md, "include_object": include_object,
                  "render_item": render_item},
        )  # fmt: skip
        script = produce_migrations(ctx, md)
    assert script.upgrade_ops is not None
    touched = {getattr(op, "table_name", None) for op in script.upgrade_ops.ops}
    assert not touched & pgembed_tables, script.upgrade_ops.ops
    assert touched == ({"user_notes"} if declare_user_table else set())
