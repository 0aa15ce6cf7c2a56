"""Three embedded servers (separate homes) as shards, beside the session's coordinator server.

Shards are reached by Python and by the coordinator's postgres_fdw alike, through a
link role (``pgembed_link``, made with ``EmbeddedServer.allow_password_login``): peer
authentication admits only the OS user who started a server, and the coordinator's backend
runs as the server user, not as that OS user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import migrate
from pgembed.server import PORT, EmbeddedServer

LINK_ROLE = "pgembed_link"
N_SHARDS = 3
SMALL = "shared_buffers=64MB,max_connections=40"
"""Settings of the shard servers: the machine is shared with the coordinator's server."""


@dataclass
class ShardServer:
    server: EmbeddedServer
    password: str

    def start(self) -> None:
        saved = os.environ.get("PGEMBED_PG_SETTINGS")
        os.environ["PGEMBED_PG_SETTINGS"] = SMALL
        try:
            self.server.start()
            # pgembed's own link-role rule: the role logs in with its password, from
            # Python and from the coordinator's postgres_fdw alike. A superuser, as the
            # tests create and migrate fresh shard databases through it.
            self.server.allow_password_login(LINK_ROLE, self.password, superuser=True)
        finally:
            if saved is None:
                os.environ.pop("PGEMBED_PG_SETTINGS", None)
            else:
                os.environ["PGEMBED_PG_SETTINGS"] = saved

    def stop(self) -> None:
        self.server.stop()

    def url(self, database: str) -> str:
        return (
            f"postgresql+psycopg://{LINK_ROLE}:{self.password}@/{database}"
            f"?host={self.server.run_dir}&port={PORT}"
        )

    def create_database(self) -> str:
        name = f"pgembed_shard_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(self.server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)


@pytest.fixture(scope="session")
def shard_servers() -> Iterator[list[ShardServer]]:
    root = Path(tempfile.mkdtemp(prefix="pgembed-shards-", dir="/tmp"))
    os.chmod(root, 0o755)  # the server user enters each home below
    servers = [
        ShardServer(EmbeddedServer(root / f"shard{i}"), secrets.token_hex(12))
        for i in range(N_SHARDS)
    ]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(root, ignore_errors=True)


MakeShards = Callable[[int], tuple[Engine, list[str]]]


@pytest.fixture
def make_sharded(
    shard_servers: list[ShardServer], make_database: Callable[[], str]
) -> Iterator[MakeShards]:
    """Factory: (coordinator engine, shard URLs) with fresh databases, all migrated to head."""
    engines: list[Engine] = []

    def make(n: int = N_SHARDS) -> tuple[Engine, list[str]]:
        urls = [s.create_database() for s in shard_servers[:n]]
        for url in urls:
            eng = sa.create_engine(url)
            migrate.upgrade(eng)
            eng.dispose()
        coordinator = sa.create_engine(make_database())
        migrate.upgrade(coordinator)
        engines.append(coordinator)
        return coordinator, urls

    yield make
    for e in engines:
        e.dispose()
