"""Sharded collections: every shard records the placement it belongs to.

Revision ID: 0008
Revises: 0007

A shard holds the rows whose id hashes to its position, so a shard list given in another
order, or with another number of shards, puts rows where no search or count expects them.
``pgembed.shard_placement`` (on every database; shards write it) records, per collection,
the placement this database is a shard of: its id (a random uuid drawn when the sharded
collection is first created), this shard's position, the number of shards, the hash layout,
and the identity of the database at each position. It is written in the same transaction
that creates the shard's collection and goes with it (ON DELETE CASCADE). The coordinator
records the placement id beside the declaration (``pgembed.sharded_collections.placement``;
NULL for collections recorded before this revision, which adopt one when next opened).

``pgembed.shard_of(id, shard_count)`` is PostgreSQL's own hash partitioning of a bigint id
(``satisfies_hash_partition`` on a parent ``PARTITION BY HASH (id)``), computable on a shard
that holds no parent table, so that a shard can find rows that belong to another.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgembed.shard_placement (
            collection text PRIMARY KEY REFERENCES pgembed.collections (name)
                ON DELETE CASCADE ON UPDATE CASCADE,
            placement uuid NOT NULL,
            position integer NOT NULL CHECK (position >= 0),
            shard_count integer NOT NULL CHECK (shard_count > position),
            layout text NOT NULL,
            members text[] NOT NULL CHECK (pg_catalog.cardinality(members) = shard_count),
            recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now()
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE pgembed.shard_placement IS 'The sharded placement each collection of "
        "this database is a shard of: placement id, this shard''s position (hash partition "
        "remainder), the number of shards, the hash layout, and the identity of the database "
        "at each position (system identifier and database oid)'"
    )
    op.execute("ALTER TABLE pgembed.sharded_collections ADD COLUMN placement uuid")
    # satisfies_hash_partition: hashint8extended with the partition seed, combined with a
    # zero hash (hash_combine64), then taken unsigned modulo the number of partitions.
    op.execute(
        """
        CREATE FUNCTION pgembed.shard_of(id bigint, shard_count integer) RETURNS integer
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
            SET search_path = pg_catalog, pg_temp
        RETURN ((pg_catalog.hashint8extended(id, 8816678312871386365)::numeric
                 + 18446744073709551616::numeric + 5305509591434766563::numeric)
                % 18446744073709551616::numeric % shard_count::numeric)::integer
        """
    )
    op.execute(
        "COMMENT ON FUNCTION pgembed.shard_of(bigint, integer) IS 'The position (hash "
        "partition remainder) of the shard that holds id among shard_count shards: what "
        "satisfies_hash_partition gives for a parent partitioned by hash on a bigint id'"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION pgembed.shard_of(bigint, integer)")
    op.execute("ALTER TABLE pgembed.sharded_collections DROP COLUMN placement")
    op.execute("DROP TABLE pgembed.shard_placement")
