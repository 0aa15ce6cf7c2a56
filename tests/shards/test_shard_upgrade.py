"""`pgembed db upgrade` on the coordinator upgrades every shard, and refuses mismatches."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from pgembed import migrate
from pgembed.errors import MigrationError
from pgembed.shards import ShardedCollection


def test_upgrade_on_the_coordinator_upgrades_every_shard(
    make_sharded: Any, shard_servers: Any, tiny_encoder: Any
) -> None:
    coordinator, urls = make_sharded(2)
    name = f"su_{uuid.uuid4().hex[:8]}"
    ShardedCollection(coordinator, name, tiny_encoder, shards=urls).create().dispose()
    shard1 = sa.create_engine(urls[1])
    migrate.downgrade(shard1, "0005", force=True)  # its placement record goes
    # A shard behind the coordinator is refused, naming it (URL masked).
    with pytest.raises(MigrationError, match=r"shard 1 \(.*'0005'.*pgembed db upgrade") as err:
        ShardedCollection.open(coordinator, name, tiny_encoder)
    assert shard_servers[1].password not in str(err.value)
    # The CLI's `db upgrade` on the coordinator brings it to head.
    env = {**os.environ, "PGEMBED_DATABASE_URL": str(coordinator.url.render_as_string(False))}
    done = subprocess.run(
        [sys.executable, "-m", "pgembed.cli", "db", "upgrade"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert migrate.current(shard1) == migrate.head()
    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    assert coll.count() == 0
    coll.dispose()
    # A shard at a revision this pgembed does not know: refused before any shard changes.
    with shard1.begin() as conn:
        conn.execute(sa.text("UPDATE pgembed.alembic_version SET version_num = 'ffff'"))
    shard0 = sa.create_engine(urls[0])
    migrate.downgrade(shard0, "0005", force=True)
    with pytest.raises(MigrationError, match=r"shard 1 of '.*'ffff'.*does not know"):
        migrate.upgrade(coordinator)
    assert migrate.current(shard0) == "0005"
    done = subprocess.run(
        [sys.executable, "-m", "pgembed.cli", "db", "upgrade"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.startswith("pgembed: error:") and "Traceback" not in done.stderr
    assert shard_servers[1].password not in done.stderr
    shard0.dispose()
    shard1.dispose()


def test_downgrade_on_the_coordinator_downgrades_every_shard(
    make_sharded: Any, shard_servers: Any, tiny_encoder: Any
) -> None:
    coordinator, urls = make_sharded(2)
    name = f"sd_{uuid.uuid4().hex[:8]}"
    coll = ShardedCollection(coordinator, name, tiny_encoder, shards=urls).create()
    coll.add(["a", "b", "c"], [1, 2, 3], vectors=np.eye(3, tiny_encoder.dim, dtype=np.float32))
    coll.dispose()
    shard0, shard1 = (sa.create_engine(u) for u in urls)
    head = migrate.head()
    everyone = (coordinator, shard0, shard1)

    # A shard at a revision this pgembed does not know: refused before anything changes.
    with shard1.begin() as conn:
        conn.execute(sa.text("UPDATE pgembed.alembic_version SET version_num = 'ffff'"))
    with pytest.raises(MigrationError, match=r"shard 1 of '.*'ffff'.*does not know"):
        migrate.downgrade(coordinator, "0006")
    assert [migrate.current(e) for e in (coordinator, shard0)] == [head, head]
    with shard1.begin() as conn:
        conn.execute(sa.text("UPDATE pgembed.alembic_version SET version_num = :h"), {"h": head})

    # To base, the shards' registered collections refuse it without --force: nothing changes.
    with pytest.raises(MigrationError, match=r"on shard [01] of .*registered.*--force") as err:
        migrate.downgrade(coordinator, "base")
    assert all(s.password not in str(err.value) for s in shard_servers)
    assert [migrate.current(e) for e in everyone] == [head] * 3

    # Below 0007 the coordinator's catalog of shards goes: refused without --force.
    env = {**os.environ, "PGEMBED_DATABASE_URL": str(coordinator.url.render_as_string(False))}

    def downgrade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgembed.cli", "db", "downgrade", *args],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    done = downgrade("0006")  # below 0007, whatever revisions follow it
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("pgembed: error:") and f"'{name}'" in done.stderr
    assert "--force" in done.stderr
    assert [migrate.current(e) for e in everyone] == [head] * 3

    # The CLI's `db downgrade` on the coordinator takes every shard down with it.
    done = downgrade("0006", "--force")
    assert done.returncode == 0, done.stderr
    assert [migrate.current(e) for e in everyone] == ["0006"] * 3
    with coordinator.connect() as conn:  # the parent stays, over the shards' rows
        assert conn.execute(sa.text(f'SELECT count(*) FROM public."{name}"')).scalar() == 3
    # The shards keep their collection and rows (only the revision's own objects went).
    with shard0.connect() as conn0, shard1.connect() as conn1:
        held = [c.execute(sa.text(f'SELECT count(*) FROM public."{name}"')).scalar()
                for c in (conn0, conn1)]  # fmt: skip
    assert sum(held) == 3
    for e in (shard0, shard1):
        e.dispose()
