"""0.5.0: calibrations, and searches that meet a recall target.

Revision ID: 0006
Revises: 0005

Adds two catalog tables, written by ``Collection.calibrate`` (``pgembed calibrate``):

- ``pgembed.calibrations``: per collection, strategy and setting (the search options, as
  jsonb), the recall@k measured against exact search and its one-sided 95% lower bound over
  the queries (``recall_low``, what targets are held against), the median time per query,
  k, the number of queries, the collection's row count and the time of measurement;
- ``pgembed.prefix_quality``: per collection and Matryoshka prefix, the recall@k of the
  prefix alone against the full vector, the effective rank (RankMe) of the prefix, and
  whether the prefix is weak;
- ``pgembed.query_depths``: where the collection's encoder was exported with shallower
  graphs (``pgembed export --layers``), per strategy, setting and query encoder depth, the
  recall@k against exact search with full-depth queries, its lower bound, and the encode
  and database time per query (elastic depth on the query side, 2DMSE).

All three go with their collection (ON DELETE CASCADE). Then installs ``pgembed--0.5.0.sql``,
whose four dense searches take ``target_recall`` (see that script). The downgrade runs
``pgembed--0.5.0--0.4.0.sql``, which drops what 0.5.0 added and restores 0.4.0's
definitions of the functions it changed, then drops the tables.
"""

from __future__ import annotations

from alembic import op

from pgembed.migrate import install_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgembed.calibrations (
            collection text NOT NULL REFERENCES pgembed.collections (name)
                ON DELETE CASCADE ON UPDATE CASCADE,
            strategy text NOT NULL,
            setting jsonb NOT NULL,
            k integer NOT NULL CHECK (k > 0),
            recall double precision NOT NULL CHECK (recall >= 0 AND recall <= 1),
            recall_low double precision NOT NULL CHECK (recall_low >= 0 AND recall_low <= recall),
            ms double precision NOT NULL CHECK (ms >= 0),
            queries integer NOT NULL CHECK (queries > 0),
            rows bigint NOT NULL CHECK (rows >= 0),
            seed bigint,
            calibrated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, strategy, setting)
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE pgembed.calibrations IS 'Measured recall@k against exact search "
        "(recall_low: its one-sided 95 percent lower bound over the queries) and median time per "
        "query of each search setting of a collection (pgembed calibrate); target_recall "
        "picks the cheapest setting whose recall_low meets the target'"
    )
    op.execute(
        """
        CREATE TABLE pgembed.prefix_quality (
            collection text NOT NULL REFERENCES pgembed.collections (name)
                ON DELETE CASCADE ON UPDATE CASCADE,
            prefix integer NOT NULL CHECK (prefix > 0),
            k integer NOT NULL CHECK (k > 0),
            recall double precision NOT NULL CHECK (recall >= 0 AND recall <= 1),
            effective_rank double precision NOT NULL,
            full_effective_rank double precision NOT NULL,
            weak boolean NOT NULL,
            calibrated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, prefix)
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE pgembed.prefix_quality IS 'Per Matryoshka prefix of a collection: "
        "recall@k of exact search on the prefix alone against the full vector, RankMe of "
        "the prefix and of the full vector, and whether the prefix is weak (pgembed "
        "calibrate); target_recall never picks a weak prefix unless it is given'"
    )
    op.execute(
        """
        CREATE TABLE pgembed.query_depths (
            collection text NOT NULL REFERENCES pgembed.collections (name)
                ON DELETE CASCADE ON UPDATE CASCADE,
            strategy text NOT NULL,
            setting jsonb NOT NULL,
            layers integer NOT NULL CHECK (layers > 0),
            k integer NOT NULL CHECK (k > 0),
            recall double precision NOT NULL CHECK (recall >= 0 AND recall <= 1),
            recall_low double precision NOT NULL CHECK (recall_low >= 0 AND recall_low <= recall),
            encode_ms double precision NOT NULL CHECK (encode_ms >= 0),
            ms double precision NOT NULL CHECK (ms >= 0),
            queries integer NOT NULL CHECK (queries > 0),
            rows bigint NOT NULL CHECK (rows >= 0),
            calibrated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (collection, strategy, setting, layers)
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE pgembed.query_depths IS 'Per search setting of a collection and "
        "depth (layers) of its query encoder: recall@k against exact search with full-depth "
        "queries (recall_low: its one-sided 95 percent lower bound), encode and database ms "
        "per query (pgembed calibrate); Collection.search with target_recall encodes a text "
        "query at the cheapest depth that meets the target'"
    )
    install_sql(op.get_bind(), "pgembed--0.5.0.sql")


def downgrade() -> None:
    # The measurements go with their tables: migrate.downgrade refuses this, before any
    # change and unless forced, while they hold rows (pgembed.losses).
    install_sql(op.get_bind(), "pgembed--0.5.0--0.4.0.sql")
    op.execute("DROP TABLE pgembed.query_depths")
    op.execute("DROP TABLE pgembed.prefix_quality")
    op.execute("DROP TABLE pgembed.calibrations")
