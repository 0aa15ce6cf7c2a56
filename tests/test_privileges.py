"""Roles: what `pgembed grant` gives is exactly what each path needs, and a refusal is a
clear PgembedError.

Every public operation runs as five roles: a superuser, the owner (a non-superuser that
migrated pgembed and created the collection), a writer (granted write), a reader (granted
read) and a stranger (nothing). The operations are generated from the code: the
Collection's public names, the CLI's argparse subcommands and the pgembed.* SQL functions
of pg_proc; each is classed read, write, admin or local (no database), and the class says
who may run it. Roles are taken with ``-c role=...`` on the superuser's connection, so this
works whatever authentication the server uses for other roles.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

import pgembed
from pgembed import Collection, cli, migrate
from pgembed.db import error_for
from pgembed.encoders.testing import TINY_NAME
from pgembed.errors import PermissionDeniedError, PgembedError
from pgembed.storage.schema import IndexParams

ROLES = ("superuser", "owner", "writer", "reader", "stranger")
ALLOWED = {
    "local": set(ROLES),
    "read": {"superuser", "owner", "writer", "reader"},
    "write": {"superuser", "owner", "writer"},
    "admin": {"superuser", "owner"},
    # pgembed's own schema: only the role that installed it (here the owner). Even a
    # superuser is refused, since pgembed's functions belong to another role (pgembed.trust).
    "install": {"owner"},
}
KINDS = ("single", "matryoshka", "binary", "fde", "multivector", "lexical")
TEXTS = ["rain on the plain", "a cat sat on the mat", "dogs bark at night", "snow in june"]


@dataclass
class Site:
    url: str
    admin_url: str
    roles: dict[str, str]  # matrix role -> database role ("" for the superuser itself)
    engines: dict[str, Engine]
    encoder: Any
    model_dir: Path
    maintain: bool  # PostgreSQL 17+: writers are granted MAINTAIN, so they may REINDEX

    def url_as(self, who: str) -> str:
        u = make_url(self.url)
        if self.roles[who]:
            u = u.update_query_dict({"options": f"-c role={self.roles[who]}"})
        return u.render_as_string(hide_password=False)


def _engine(url: str, role: str) -> Engine:
    args = {"options": f"-c role={role}"} if role else {}
    return sa.create_engine(url, poolclass=NullPool, connect_args=args)


@pytest.fixture(scope="module")
def site(admin_url: str, tiny_encoder: Any, tiny_model_dir: Path) -> Iterator[Site]:
    tag = uuid.uuid4().hex[:8]
    roles = {"superuser": "", **{r: f"pgembed_{r}_{tag}" for r in ROLES[1:]}}
    db = f"pgembed_priv_{tag}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        for r in ROLES[1:]:
            conn.execute(sa.text(f'CREATE ROLE "{roles[r]}" NOLOGIN NOSUPERUSER'))
        conn.execute(sa.text(f'CREATE DATABASE "{db}" OWNER "{roles["owner"]}"'))
    url = make_url(admin_url).set(database=db).render_as_string(hide_password=False)
    engines = {r: _engine(url, roles[r]) for r in ROLES}
    try:
        with engines["superuser"].begin() as conn:  # pgvector is not a trusted extension
            conn.execute(sa.text("CREATE EXTENSION vector"))
        migrate.upgrade(engines["owner"])  # the owner owns pgembed's schema and catalog
        own = engines["owner"]
        index = IndexParams(binary="ivfflat", lists=2)
        c = Collection(
            own,
            "docs",
            tiny_encoder,
            kinds=KINDS,
            matryoshka_dims=(8,),
            binary_bits=2,
            index=index,
        ).create()
        c.add(TEXTS, ids=list(range(1, len(TEXTS) + 1)))
        c.calibrate(k=2, sample=4, progress=False)
        pgembed.grant(own, roles["writer"], "docs", "write")
        pgembed.grant(own, roles["reader"], "docs", "read")
        with own.connect() as conn:
            version = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
        yield Site(url, admin_url, roles, engines, tiny_encoder, tiny_model_dir, version >= 170000)
    finally:
        for e in engines.values():
            e.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            for r in ROLES[1:]:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{roles[r]}"'))
        admin.dispose()


def _check(who: str, cls: str, run: Callable[[], Any], role: str | None = None) -> None:
    """Run one operation as ``who``; it succeeds iff the class allows the role, and a
    refusal is a PermissionDeniedError that names the role and says how to grant."""
    if who in ALLOWED[cls]:
        run()
        return
    with pytest.raises(PgembedError) as got:
        run()
    assert isinstance(got.value, PermissionDeniedError), repr(got.value)
    assert "pgembed grant" in str(got.value)
    if role is not None:
        assert got.value.role == role and repr(role) in str(got.value), str(got.value)


# --- the Python API: every public name of Collection ---------------------------------------


def _scratch(site: Site, who: str) -> str:
    """A collection of the owner's for one destructive call."""
    name = f"scratch {who}"
    Collection(site.engines["owner"], name, site.encoder, kinds=("single",)).create()
    return name


def _api(site: Site, who: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    e, enc = site.engines[who], site.encoder
    new_id = 100 + ROLES.index(who)

    def opened() -> Collection:
        return Collection.open(e, "docs", enc)

    def declared() -> Collection:  # no database: a declaration
        return Collection(e, "docs", enc, kinds=KINDS, matryoshka_dims=(8,), binary_bits=2)

    def search() -> None:
        c = opened()
        for strategy, opts in (("knn", {}), ("funnel", {"prefix": 8}), ("binary", {}),
                               ("multivector", {}), ("bm25", {}), ("hybrid", {}),
                               ("knn", {"target_recall": 0.5})):  # fmt: skip
            assert c.search("rain", k=2, strategy=strategy, **opts), strategy

    def create() -> None:
        name = f"made {who}"
        Collection(e, name, enc, kinds=("single",)).create()
        Collection.open(site.engines["superuser"], name, enc).drop(force=True)

    def finish_bulk() -> None:  # an index left missing, as by an interrupted bulk load
        su = site.engines["superuser"]
        with su.begin() as conn:
            conn.execute(sa.text("DROP INDEX docs_embedding_hnsw"))
        try:
            assert opened().finish_bulk(progress=False) == ["docs_embedding_hnsw"]
        finally:
            Collection.open(su, "docs", enc).finish_bulk(progress=False)

    def revoke() -> None:  # the writer's write, given back at once
        pgembed.revoke(e, site.roles["writer"], "docs", "write")
        pgembed.grant(site.engines["owner"], site.roles["writer"], "docs", "write")

    return {
        "open": ("read", opened),
        "count": ("read", lambda: opened().count()),
        "search": ("read", search),
        "fde": ("read", lambda: opened().fde),
        "table": ("local", lambda: declared().table()),
        "rows": ("local", lambda: declared().rows(["x"], np.array([1]))),
        "last_mode": ("local", lambda: declared().last_mode),
        "add": ("write", lambda: opened().add([f"text of {who}"], ids=[new_id])),
        "sync": ("write", lambda: opened().sync(progress=False)),
        "calibrate": ("write", lambda: opened().calibrate(k=2, sample=4, progress=False)),
        "create": ("admin", create),
        "finish_bulk": ("admin", finish_bulk),
        "reindex": ("write" if site.maintain else "admin", lambda: opened().reindex()),
        "drop": ("admin", lambda: Collection.open(e, _scratch(site, who), enc).drop()),
        "grant": ("admin", lambda: pgembed.grant(e, site.roles["reader"], "docs", "read")),
        "revoke": ("admin", revoke),
    }


API = sorted({n for n in dir(Collection) if not n.startswith("_")} | {"grant", "revoke"})


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("name", API)
def test_api(site: Site, name: str, who: str) -> None:
    ops = _api(site, who)
    assert set(ops) == set(API), "classify every public name of Collection"
    cls, run = ops[name]
    _check(who, cls, run, site.roles[who])


# --- the CLI: every argparse subcommand ---------------------------------------------------

# Not run as roles, each for its reason: they manage the embedded server as an OS user
# (peer authentication), need other servers, or build a collection from a downloaded corpus.
NOT_ROLES = {
    "db start": "the embedded server: its OS user, not a role",
    "db stop": "the embedded server: its OS user, not a role",
    "db status": "the embedded server: its OS user, not a role",
    "db link-role": "the embedded server: its OS user (tests/shards/test_embedded_shards.py)",
    "db psql": "interactive psql",
    "export": "no database: torch exports a model",
    "shards create": "needs shard servers (tests/shards)",
    "shards ingest": "needs shard servers (tests/shards)",
    "shards search": "needs shard servers (tests/shards)",
    "quickstart": "builds a collection from a downloaded corpus",
}


def _cli(site: Site, who: str, tmp: Path) -> dict[str, tuple[str, list[str]]]:
    texts = tmp / "texts.txt"
    texts.write_text(f"ingested by {who}\n")
    head = migrate.head()
    role = site.roles["reader"]
    return {
        "db url": ("local", ["db", "url"]),
        "db history": ("local", ["db", "history"]),
        "db current": ("admin", ["db", "current"]),
        "db upgrade": ("install", ["db", "upgrade"]),
        "db downgrade": ("install", ["db", "downgrade", head]),
        "encode": (
            "local",
            ["encode", TINY_NAME, "-i", str(texts), "-o", str(tmp / "v.npy"), "--no-progress"],
        ),
        "ingest": ("write", ["ingest", "docs", str(texts), "--no-progress"]),
        "sync": ("write", ["sync", "docs", "--no-progress"]),
        "collections": ("read", ["collections"]),
        "search": ("read", ["search", "docs", "rain", "-k", "2"]),
        "stats": ("read", ["stats", "docs", "--sample", "2"]),
        "calibrate": (
            "write",
            ["calibrate", "docs", "-k", "2", "--sample", "4", "--no-progress"],
        ),
        "shards list": ("admin", ["shards", "list"]),
        "grant": ("admin", ["grant", role, "docs", "--read"]),
        "revoke": ("admin", ["revoke", site.roles["stranger"], "docs", "--read"]),
    }


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path)
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name))


COMMANDS = sorted(_leaves(cli.build_parser()))


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("command", COMMANDS)
def test_cli(
    site: Site,
    command: str,
    who: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = _cli(site, who, tmp_path)
    assert set(table) | set(NOT_ROLES) == set(COMMANDS), "classify every subcommand"
    assert not set(table) & set(NOT_ROLES)
    if command in NOT_ROLES:
        return  # listed above with its reason, and checked against the parser
    cls, argv = table[command]
    monkeypatch.setenv("PGEMBED_DATABASE_URL", site.url_as(who))
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(site.model_dir))
    rc = cli.main(argv)
    err = capsys.readouterr().err
    if who in ALLOWED[cls]:
        assert rc == 0, err
        return
    lines = [line for line in err.splitlines() if line.startswith("pgembed: error:")]
    assert rc == 1 and len(lines) == 1, err
    if cls == "install" and "permission denied" not in lines[0]:
        # the schema is another role's: the trust check refuses before reading it
        assert "pgembed refuses to use objects that another role controls" in lines[0]
        return
    assert "permission denied" in lines[0] and "pgembed grant" in lines[0], lines[0]


# --- SQL: every pgembed.* function of pg_proc ---------------------------------------------

# Values for the arguments a function cannot default, by argument name.
ARGS = {
    "collection": "'docs'",
    "query": "'rain'",
    "kind": "'single'",
    "strategy": "'knn'",
    "target_recall": "0.5",
    "docs": "4",
    "tokens": "16",
    "lexemes": "ARRAY['rain']",
    "dfs": "ARRAY[1]::bigint[]",
    "k": "2",
}


def _functions(site: Site) -> list[Any]:
    with site.engines["superuser"].connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT p.oid, p.oid::regprocedure::text AS sig, p.proname, "
                    "p.proargnames AS names, "
                    "(SELECT array_agg(format_type(t, NULL) ORDER BY i) FROM "
                    " unnest(p.proargtypes) WITH ORDINALITY AS a(t, i)) AS types, "
                    "p.pronargs - p.pronargdefaults AS needed, "
                    "p.prorettype = 'trigger'::regtype AS is_trigger "
                    "FROM pg_proc p WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 2"
                )
            ).all()
        )


def _value(site: Site, name: str, type_: str) -> str:
    dim = site.encoder.dim
    if type_ == "vector":
        return f"CAST(array_fill(0.1, ARRAY[{dim}]) AS vector)"
    if type_ == "vector[]":
        return f"ARRAY[CAST(array_fill(0.1, ARRAY[{dim}]) AS vector)]"
    return ARGS[name]


def test_sql_functions(site: Site) -> None:
    funcs = _functions(site)
    called = 0
    for f in funcs:
        names = list(f.names or [])
        for who in ROLES:
            e = site.engines[who]
            if "collection" not in names[: f.needed] or f.is_trigger:
                # no collection's data: running it is USAGE on pgembed plus EXECUTE
                with e.connect() as conn:
                    may = conn.execute(
                        sa.text(
                            "SELECT has_schema_privilege('pgembed', 'USAGE') "
                            "AND has_function_privilege(CAST(:f AS oid), 'EXECUTE')"
                        ),
                        {"f": f.oid},
                    ).scalar_one()
                assert may == (who != "stranger"), (f.sig, who)
                continue
            args = ", ".join(
                _value(site, n, t)
                for n, t in zip(names[: f.needed], f.types[: f.needed], strict=True)
            )
            sql = f"SELECT * FROM pgembed.{f.proname}({args})"
            try:
                with e.connect() as conn:
                    conn.execute(sa.text(sql)).all()
            except sa.exc.DBAPIError as exc:
                assert who not in ALLOWED["read"], (sql, who, exc)
                assert isinstance(error_for(exc, "docs"), PermissionDeniedError), (sql, exc)
            else:
                assert who in ALLOWED["read"], (sql, who)
            called += 1
    assert called >= 5 * 8  # the searches, bm25, fde_query, collection_info... all ran


# --- the grant itself ---------------------------------------------------------------------


def test_grant_then_revoke_restores_a_stranger(site: Site) -> None:
    """revoke(read) undoes grant(write): the role is a stranger again."""
    role = site.roles["stranger"]
    own = site.engines["owner"]
    pgembed.grant(own, role, "docs", "write")
    Collection.open(site.engines["stranger"], "docs", site.encoder).search("rain", k=1)
    pgembed.revoke(own, role, "docs", "write")
    _check("reader", "write", lambda: Collection.open(
        site.engines["stranger"], "docs", site.encoder).add(["x"], ids=[999]))  # fmt: skip
    pgembed.revoke(own, role, "docs", "read")
    with own.connect() as conn:
        left = (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = :r "
                    "UNION ALL SELECT count(*) FROM information_schema.role_routine_grants "
                    "WHERE grantee = :r"
                ),
                {"r": role},
            )
            .scalars()
            .all()
        )
    assert left == [0, 0]
    _check("stranger", "read", lambda: Collection.open(
        site.engines["stranger"], "docs", site.encoder))  # fmt: skip


@pytest.mark.parametrize("bad", [("role", "no_such_role"), ("collection", "no such"),
                                 ("access", "admin")])  # fmt: skip
def test_grant_bad_input(site: Site, bad: tuple[str, str]) -> None:
    kw = {"role": site.roles["reader"], "collection": "docs", "access": "read"}
    kw[bad[0]] = bad[1]
    with pytest.raises(PgembedError, match=bad[1]):
        pgembed.grant(site.engines["owner"], kw["role"], kw["collection"], kw["access"])


def test_grant_in_a_schema_of_its_own(site: Site) -> None:
    """A collection in a schema of its own, for a role whose name needs quoting: read
    gives USAGE on that schema too, and revoke takes back all it gave."""
    own, su = site.engines["owner"], site.engines["superuser"]
    role = f"Pgembed Odd {uuid.uuid4().hex[:6]}"
    with su.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" NOLOGIN'))
    with own.begin() as conn:
        conn.execute(sa.text('CREATE SCHEMA IF NOT EXISTS "Other Schema"'))
    odd = _engine(site.url, role.replace(" ", "\\ "))  # libpq options escape spaces
    try:
        c = Collection(own, "other", site.encoder, kinds=("single",), schema="Other Schema")
        c.create().add(TEXTS[:2], ids=[1, 2])
        ran = pgembed.grant(own, role, "other", "read")
        assert f'GRANT USAGE ON SCHEMA "Other Schema" TO "{role}"' in ran
        assert Collection.open(odd, "other", site.encoder).search("rain", k=1)
        pgembed.revoke(own, role, "other", "read")
        with su.connect() as conn:
            held = conn.execute(
                sa.text(
                    "SELECT has_schema_privilege(:r, 'pgembed', 'USAGE'), "
                    "has_schema_privilege(:r, 'Other Schema', 'USAGE')"
                ),
                {"r": role},
            ).one()
        assert tuple(held) == (False, False)
        with pytest.raises(PermissionDeniedError, match=f"role '{role}'"):
            Collection.open(odd, "other", site.encoder)
    finally:
        odd.dispose()
        Collection.open(own, "other", site.encoder).drop(force=True)
        with su.begin() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
