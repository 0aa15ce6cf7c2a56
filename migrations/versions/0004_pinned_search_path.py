"""0.4.0: every pgembed function resolves its names only to the intended objects.

Revision ID: 0004
Revises: 0003

Every function gets ``search_path = pg_catalog, pg_temp``, pgvector's objects qualified with
the vector extension's schema (found now, at migration time), and calls that match their
signatures exactly; see ``pgembed--0.4.0.sql`` and DESIGN.md, "SQL security". 0.4.0 also
refuses query vectors that do not survive halfvec (underflow to zero, overflow) and MaxSim
inputs with NULL tokens or mixed dimensions, with pgembed errors.

Scripts. From 0.4.0 on, a version's SQL is one full install script, ``pgembed--X.sql``,
that defines every function with CREATE OR REPLACE (pgvector's convention); an upgrade
runs it. Signatures stay those of 0.3.0, so the generated column
``pgembed.fde_configs.ams_vectors``, which depends on ``pgembed.ams_vectors``, stays.

Downgrades (the one mechanism, for every revision): a downgrade runs
``pgembed--NEW--OLD.sql``, which drops the functions NEW added and restores OLD's
definition of every function NEW changed. Here that is every function, so
``pgembed--0.4.0--0.3.0.sql`` holds 0.3.0's full definitions, copied verbatim from the
0.1.0 -> 0.2.0 and 0.2.0 -> 0.3.0 scripts. Revision 0003 already works this way
(``pgembed--0.3.0--0.2.0.sql``); 0002's downgrade drops its functions and columns and
re-runs ``pgembed--0.1.0.sql``, the full 0.1.0 script, which is the same thing.
"""

from __future__ import annotations

from alembic import op

from pgembed.migrate import install_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_sql(op.get_bind(), "pgembed--0.4.0.sql")


def downgrade() -> None:
    # Drops pgembed.lexical_stats_update and with it (CASCADE) the lexical collections'
    # statistics triggers; their statistics tables stay. migrate.upgrade recreates the
    # triggers and recomputes the statistics (pgembed.storage.restore).
    install_sql(op.get_bind(), "pgembed--0.4.0--0.3.0.sql")
