"""Collections own their tables: the catalog records which table each one created.

Revision ID: 0005
Revises: 0004

Adds ``pgembed.collections.table_oid``, the oid of the table a collection created.
pgembed creates, writes and drops only that table (see ``pgembed/storage/ownership.py``).

Existing rows are backfilled with the oid of the table they name, when it exists, is a
table, and lies outside pgembed's and the system's schemas. Otherwise the row owns no
table: its writes are refused and dropping it leaves the table alone. The downgrade
removes the column.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE pgembed.collections ADD COLUMN table_oid oid")
    op.execute(
        """
        UPDATE pgembed.collections AS c SET table_oid = r.oid
          FROM pg_catalog.pg_class AS r
          JOIN pg_catalog.pg_namespace AS n ON n.oid = r.relnamespace
         WHERE n.nspname = c.table_schema AND r.relname = c.table_name
           AND r.relkind = 'r'
           AND c.table_schema NOT IN ('pgembed', 'information_schema')
           AND pg_catalog.left(c.table_schema, 3) <> 'pg_'
        """
    )
    op.execute(
        "COMMENT ON COLUMN pgembed.collections.table_oid IS 'oid of the table the collection "
        "created; pgembed writes into and drops only that table (NULL: it owns none)'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE pgembed.collections DROP COLUMN table_oid")
