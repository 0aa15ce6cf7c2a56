"""Shard passwords live in postgres_fdw's user mappings, never in pgembed.shards."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from psycopg import sql

from pgembed.db import raw_connection
from pgembed.errors import ShardError
from pgembed.shards import ShardedCollection, without_password


def test_passwords_stay_in_the_user_mappings(
    make_sharded: Any, shard_servers: Any, tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator, urls = make_sharded(2)
    name = f"pw_{uuid.uuid4().hex[:8]}"
    coll = ShardedCollection(coordinator, name, tiny_encoder, shards=urls).create()
    vecs = np.eye(6, tiny_encoder.dim, dtype=np.float32)
    assert coll.add([f"t{i}" for i in range(6)], list(range(1, 7)), vectors=vecs) == 6
    coll.dispose()
    with coordinator.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT url, server FROM pgembed.shards WHERE collection = :n ORDER BY 1"),
            {"n": name},
        ).all()
    assert sorted(u for u, _ in stored) == sorted(without_password(u) for u in urls)
    assert not any(s.password in u for u, _ in stored for s in shard_servers)
    # The same database and user, with the password left out.
    assert all(u.replace(f":{s.password}@", "@") == without_password(u)
               for u, s in zip(urls, shard_servers, strict=False))  # fmt: skip

    # Opening resolves each password from the current user's user mapping.
    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    assert [s.url for s in coll.shards] == urls and coll.count() == 6
    coll.dispose()

    # Without it in the mapping, libpq's own sources apply (here PGPASSWORD); nothing else
    # holds it.
    server = next(srv for u, srv in stored if u == without_password(urls[0]))
    with coordinator.begin() as conn:
        raw_connection(conn).execute(
            sql.SQL("ALTER USER MAPPING FOR CURRENT_USER SERVER {} OPTIONS (DROP password)").format(
                sql.Identifier(server)
            )
        )
    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    assert coll.shards[0].url == without_password(urls[0])
    with pytest.raises(ShardError, match=r"shard 0 \(.*password") as err:
        coll.count()
    assert shard_servers[0].password not in str(err.value)
    coll.dispose()
    monkeypatch.setenv("PGPASSWORD", shard_servers[0].password)
    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    assert coll.count() == 6
    coll.dispose()
