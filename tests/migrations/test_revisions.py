"""pgembed's own migrations against a real server."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import migrate
from pgembed.errors import ExtensionError


def _pgembed_objects(conn: sa.Connection) -> dict[str, int]:
    q = {
        "schema": "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgembed'",
        "tables": "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'pgembed'",
        "functions": "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'pgembed'",
    }
    return {k: conn.execute(sa.text(v)).scalar_one() for k, v in q.items()}


def test_upgrade_creates_schema_catalog_and_pgvector(empty_engine: Engine) -> None:
    assert migrate.current(empty_engine) is None
    migrate.upgrade(empty_engine)
    assert migrate.current(empty_engine) == migrate.head()
    with empty_engine.connect() as conn:
        tables = set(
            conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'pgembed'")
            ).scalars()
        )
        assert tables == {
            "alembic_version", "encoders", "fde_configs", "collections",
            "calibrations", "prefix_quality", "query_depths", "sharded_collections", "shards",
            "shard_placement",
        }  # fmt: skip
        version = conn.execute(
            sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar_one()
        assert migrate.parse_version(version) >= (0, 8)
        assert conn.execute(sa.text("SELECT pgembed.version()")).scalar_one() == "0.5.1"
        # the user's own alembic_version is untouched
        user_table = sa.text("SELECT to_regclass('public.alembic_version')")
        assert conn.execute(user_table).scalar() is None


def test_downgrade_base_removes_everything_and_upgrade_again(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    with empty_engine.connect() as conn:
        assert _pgembed_objects(conn) == {"schema": 0, "tables": 0, "functions": 0}
    assert migrate.current(empty_engine) is None
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        objs = _pgembed_objects(conn)
    assert objs["schema"] == 1 and objs["tables"] >= 4 and objs["functions"] >= 1


def test_catalog_row_survives_a_later_revision_round_trip(
    empty_engine: Engine, noop_revision: Any
) -> None:
    """A no-op revision on top of head goes down and up; rows it does not own stay."""
    head = migrate.head()

    def run(fn: str, rev: str) -> None:
        noop_revision(empty_engine, fn, rev)

    run("upgrade", "heads")
    assert migrate.current(empty_engine) == "9999"
    with empty_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO pgembed.encoders (name, fingerprint, dim, max_length) "
                "VALUES ('m', 'abc', 8, 128)"
            )
        )
    run("downgrade", head)
    assert migrate.current(empty_engine) == head
    run("upgrade", "heads")
    with empty_engine.connect() as conn:
        row = conn.execute(sa.text("SELECT name, fingerprint, dim FROM pgembed.encoders")).one()
    assert tuple(row) == ("m", "abc", 8)


@pytest.mark.parametrize(
    ("installed", "available", "hint"),
    [("0.7.4", "0.8.6", "ALTER EXTENSION vector UPDATE"), ("0.5.1", "0.5.1", "upgrade the server")],
)
def test_old_pgvector_is_refused_with_the_fix(installed: str, available: str, hint: str) -> None:
    with pytest.raises(ExtensionError, match=hint) as err:
        migrate.check_pgvector_version(installed, available)
    assert installed in str(err.value) and ">= 0.8" in str(err.value)


def test_current_pgvector_is_accepted() -> None:
    migrate.check_pgvector_version("0.8.0")
    migrate.check_pgvector_version("0.10.1")


def test_history_lists_the_initial_revision() -> None:
    revisions = [s.revision for s in migrate.history()]
    assert revisions[-1] == "0001" and migrate.head() == revisions[0]


def test_migration_0005_backfills_owned_tables_only(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine, "0004")
    with empty_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO pgembed.encoders VALUES "
                "('e', 'f', 4, 'mean', true, 8, '', '', '{}');"
                "CREATE TABLE public.legacy (id bigint PRIMARY KEY);"
            )
        )
        for name, schema, table in [
            ("legacy", "public", "legacy"),
            ("taken", "pgembed", "alembic_version"),  # a pre-0005 takeover
            ("gone", "public", "gone"),
        ]:
            conn.execute(
                sa.text(
                    "INSERT INTO pgembed.collections (name, table_schema, table_name, "
                    "id_column, encoder, kinds) VALUES (:n, :s, :t, 'id', 'e', '{}')"
                ),
                {"n": name, "s": schema, "t": table},
            )
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT name, table_oid FROM pgembed.collections")).all())
        legacy = conn.execute(sa.text("SELECT 'public.legacy'::regclass::oid")).scalar()
    assert got == {"legacy": legacy, "taken": None, "gone": None}
    migrate.downgrade(empty_engine, "0004")
    with empty_engine.connect() as conn:
        cols = sa.inspect(conn).get_columns("collections", schema="pgembed")
    assert "table_oid" not in {c["name"] for c in cols}
