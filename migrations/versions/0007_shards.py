"""Sharded collections: the coordinator's catalog of shards.

Revision ID: 0007
Revises: 0006

A sharded collection is an ordinary pgembed collection on each of several servers (the
shards). The coordinator records its declaration in ``pgembed.sharded_collections`` and
where each shard lives in ``pgembed.shards``; it also holds a partitioned parent table, hash
on id, over postgres_fdw foreign tables (created by ``pgembed.shards``, not here), so plain
SQL on the coordinator sees every row. Shard URLs are stored without their passwords, which
live in the foreign servers' user mappings; the tables are readable by their owner only.

Installs ``sql/pgembed_shards.sql`` on every database (shards run it too):
``pgembed.bm25_statistics`` and ``pgembed.search_bm25_global``, BM25 with statistics summed
over the shards.
"""

from __future__ import annotations

from alembic import op

from pgembed import migrate

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgembed.sharded_collections (
            name text PRIMARY KEY,
            declaration jsonb NOT NULL,
            parent oid,
            created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE pgembed.shards (
            collection text NOT NULL
                REFERENCES pgembed.sharded_collections (name) ON DELETE CASCADE,
            position integer NOT NULL CHECK (position >= 0),
            url text NOT NULL,
            server name NOT NULL,
            PRIMARY KEY (collection, position)
        )
        """
    )
    op.execute("REVOKE ALL ON pgembed.sharded_collections, pgembed.shards FROM PUBLIC")
    op.execute(
        "COMMENT ON TABLE pgembed.sharded_collections IS 'Collections sharded over several "
        "servers: the declaration every shard records, and the oid of the partitioned parent "
        "table (hash on id) over their foreign tables'"
    )
    migrate.install_sql(op.get_bind(), "pgembed_shards.sql")  # BM25 with global statistics
    op.execute(
        "COMMENT ON TABLE pgembed.shards IS 'Where each shard of a sharded collection lives: "
        "its database URL (without its password, which the server''s user mapping holds) and "
        "its postgres_fdw server; "
        "position is the hash partition remainder'"
    )


def downgrade() -> None:
    # Refused by migrate.downgrade, before any change and unless forced, while sharded
    # collections are recorded (pgembed.losses).
    op.execute(
        "DROP FUNCTION pgembed.search_bm25_global(text, text, bigint, bigint, text[], bigint[], "
        "integer, double precision, double precision)"
    )
    op.execute("DROP FUNCTION pgembed.bm25_statistics(text, text)")
    op.execute("DROP TABLE pgembed.shards")
    op.execute("DROP TABLE pgembed.sharded_collections")
