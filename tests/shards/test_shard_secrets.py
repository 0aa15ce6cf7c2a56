"""Shard passwords live in postgres_fdw's user mappings, never in pgembed.shards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import numpy as np
import pytest
import sqlalchemy as sa
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgembed import conninfo, migrate
from pgembed.db import raw_connection
from pgembed.errors import PgembedError, ShardError
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


def _query_uri(p: dict[str, str]) -> str:
    """A libpq URI with every parameter in its query string (user and password too)."""
    return "postgresql:///?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items())


SHARD_FORMS: dict[str, Callable[[dict[str, str]], str]] = {
    "uri query": _query_uri,
    "uri userinfo": conninfo.to_libpq,
    "key=value": lambda p: make_conninfo("", **p),
    "sqlalchemy": conninfo.to_sqlalchemy,
}


def _options(conn: Any, catalog: str, column: str, server: str) -> dict[str, str]:
    opts = conn.execute(
        sa.text(f"SELECT {column} FROM pg_catalog.{catalog} WHERE srvname = :s"), {"s": server}
    ).scalar()
    return dict(str(o).split("=", 1) for o in opts)


def test_every_libpq_parameter_reaches_the_shards(
    make_sharded: Any, shard_servers: Any, tiny_encoder: Any
) -> None:
    """Shard URLs with user and password in the query string (or key=value), and
    application_name, options, sslmode, connect_timeout: Python's connections and the
    coordinator's foreign servers both connect with them; nothing stores the password; the
    coordinator's shard list keeps working (open, `db upgrade`), also from a URL an older
    pgembed stored without its "//"."""
    coordinator, urls = make_sharded(2)
    tag = uuid.uuid4().hex[:8]
    extra = {
        "application_name": f"pgembed_{tag}",
        "sslmode": "disable",
        "options": f"-c pgembed_test.tag={tag} -c search_path=public",
        "connect_timeout": "7",
    }
    forms = (_query_uri, SHARD_FORMS["key=value"])
    given = [form({**conninfo.params(u), **extra}) for u, form in zip(urls, forms, strict=True)]
    role = conninfo.params(urls[0])["user"]
    assert "password=" in given[0] and "user=" in given[0] and "@" not in given[0]
    name = f"qs_{tag}"
    coll = ShardedCollection(coordinator, name, tiny_encoder, shards=given).create()
    vecs = np.eye(6, tiny_encoder.dim, dtype=np.float32)
    assert coll.add([f"t{i}" for i in range(6)], list(range(1, 7)), vectors=vecs) == 6
    assert [i for i, _ in coll.search(vecs[2], k=1)] == [3]
    for s in coll.shards:  # Python's own connections to the shards
        with s.engine.connect() as conn:
            got = conn.execute(
                sa.text(
                    "SELECT current_setting('pgembed_test.tag'), "
                    "current_setting('application_name'), current_user"
                )
            ).one()
        assert tuple(got) == (tag, f"pgembed_{tag}", role)
    coll.dispose()

    with coordinator.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT url, server FROM pgembed.shards WHERE collection = :n ORDER BY position"
            ),
            {"n": name},
        ).all()
        # postgres_fdw carries them too: plain SQL on the coordinator, then its connections
        assert conn.execute(sa.text(f'SELECT count(*) FROM public."{name}"')).scalar() == 6
        remote = dict(
            conn.execute(
                sa.text(
                    "SELECT server_name, remote_backend_pid FROM postgres_fdw_get_connections()"
                )
            ).all()
        )
        for (url, server), g, srv in zip(stored, given, shard_servers, strict=False):
            assert srv.password not in url and quote(srv.password) not in url
            assert conninfo.params(url) == conninfo.without_secrets(conninfo.params(g))
            opts = _options(conn, "pg_foreign_server", "srvoptions", server)
            assert extra.items() <= opts.items()
            assert _options(conn, "pg_user_mappings", "umoptions", server) == {
                "user": role, "password": srv.password}  # fmt: skip
    for (_, server), url in zip(stored, urls, strict=True):
        shard = sa.create_engine(url)
        with shard.connect() as conn:
            app = conn.execute(
                sa.text("SELECT application_name FROM pg_stat_activity WHERE pid = :p"),
                {"p": remote[server]},
            ).scalar()
        shard.dispose()
        assert app == f"pgembed_{tag}"

    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    assert [conninfo.params(s.url) for s in coll.shards] == [conninfo.params(g) for g in given]
    assert coll.count() == 6
    coll.dispose()
    migrate.upgrade(coordinator)  # reaches every shard through the stored URLs

    # An older pgembed stored a socket URL with ?password= as "postgresql:/db?host=...".
    p = conninfo.params(urls[0])
    legacy = f"postgresql:/{p['dbname']}?host={p['host']}&port={p['port']}&user={p['user']}"
    with coordinator.begin() as conn:
        conn.execute(sa.text("UPDATE pgembed.shards SET url = :u WHERE server = :s"),
                     {"u": legacy, "s": stored[0][1]})  # fmt: skip
    migrate.upgrade(coordinator)
    coll = ShardedCollection.open(coordinator, name, tiny_encoder)
    assert coll.count() == 6
    coll.dispose()


FAILURES: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "wrong password": lambda p: {**p, "password": "ZQ" + p["password"][::-1]},
    "nothing listening": lambda p: {**p, "port": "1"},
    "no such database": lambda p: {**p, "dbname": "no_such_database"},
    "bad options": lambda p: {**p, "options": "-c no_such_setting_at_all=1"},
}


@pytest.mark.parametrize("form", sorted(SHARD_FORMS))
def test_errors_of_a_failing_shard_never_show_its_password(
    form: str, make_sharded: Any, shard_servers: Any, tiny_encoder: Any
) -> None:
    coordinator, urls = make_sharded(1)
    good = conninfo.params(urls[0])
    for why, change in FAILURES.items():
        p = change(good)
        url = SHARD_FORMS[form](p)
        coll = ShardedCollection(coordinator, f"f_{uuid.uuid4().hex[:8]}", tiny_encoder,
                                 shards=[url])  # fmt: skip
        with pytest.raises(PgembedError) as err:
            coll.create()
        coll.dispose()
        text = f"{err.value}\n{err.value!r}"
        for secret in {p["password"], shard_servers[0].password}:
            for shown in (secret, quote(secret), quote(secret, safe=""), quote_plus(secret)):
                assert shown not in text, f"{why}: {text}"
        assert "***" in text, f"{why}: the shard is named, password masked: {text}"


def test_db_psql_and_db_url_take_a_query_string_password(make_sharded: Any) -> None:
    """`pgembed db psql` connects with every parameter of PGEMBED_DATABASE_URL, its password
    passed in the environment (not on psql's command line); `db url --libpq` prints a URI
    psql itself accepts."""
    from pgembed.server import default_server

    _, urls = make_sharded(1)
    p = conninfo.params(urls[0])
    env = {**os.environ, "PGEMBED_DATABASE_URL": _query_uri({**p, "application_name": "qs"})}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip

    query = "SELECT current_user || ' ' || current_setting('application_name')"
    cli = [sys.executable, "-m", "pgembed.cli", "db"]
    out = run(*cli, "psql", "-X", "-w", "-tA", "-c", query)
    assert (out.returncode, out.stdout.strip()) == (0, f"{p['user']} qs"), out.stderr
    libpq = run(*cli, "url", "--libpq").stdout.strip()
    assert libpq.startswith("postgresql://") and conninfo.params(libpq)["application_name"] == "qs"
    psql = str(default_server().binary("psql"))
    out = run(psql, "-X", "-w", "-tA", "-d", libpq, "-c", query)
    assert (out.returncode, out.stdout.strip()) == (0, f"{p['user']} qs"), out.stderr
