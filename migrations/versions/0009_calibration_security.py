"""Per-collection catalog rows are written only by whoever may write the collection.

Revision ID: 0009
Revises: 0008

``pgembed.calibrations``, ``pgembed.prefix_quality`` and ``pgembed.query_depths`` hold rows
of every collection in one table each. A role allowed to calibrate its own collection
(INSERT, UPDATE, DELETE on the table, see ``pgembed grant``) could otherwise rewrite another
owner's rows, and that owner's ``target_recall`` searches would run on the forged settings.

Row-level security on every table of schema pgembed whose foreign key references
``pgembed.collections`` (found in the catalog at upgrade time): a row is seen by roles
that may SELECT from its collection's table, and inserted, updated or deleted only by roles
that may UPDATE it (its owner among them; ``has_table_privilege`` on the oid the collection
recorded). The tables' owner (who runs migrations) and superusers bypass the policies. The
downgrade drops the policies and disables row-level security on the tables that have them.
"""

from __future__ import annotations

from alembic import op

from pgembed.db import raw_connection

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The policies' names, also how the downgrade finds them.
POLICIES = ("pgembed_collection_read", "pgembed_collection_insert",
            "pgembed_collection_update", "pgembed_collection_delete")  # fmt: skip

_UPGRADE = r"""
DO $do$
DECLARE
    t record;
    may text;
BEGIN
    FOR t IN
        SELECT k.conrelid::regclass AS tab, a.attname AS col
          FROM pg_catalog.pg_constraint k
          JOIN pg_catalog.pg_attribute a
            ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
         WHERE k.contype = 'f' AND k.confrelid = 'pgembed.collections'::regclass
           AND pg_catalog.cardinality(k.conkey) = 1
    LOOP
        -- the role may <privilege> the table of the row's collection
        may := pg_catalog.format(
            'EXISTS (SELECT FROM pgembed.collections AS c WHERE c.name = %s.%I '
            'AND pg_catalog.has_table_privilege(c.table_oid, %%L))', t.tab, t.col);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.tab);
        EXECUTE pg_catalog.format('CREATE POLICY pgembed_collection_read ON %s FOR SELECT '
            'USING (%s)', t.tab, pg_catalog.format(may, 'SELECT'));
        EXECUTE pg_catalog.format('CREATE POLICY pgembed_collection_insert ON %s FOR INSERT '
            'WITH CHECK (%s)', t.tab, pg_catalog.format(may, 'UPDATE'));
        EXECUTE pg_catalog.format('CREATE POLICY pgembed_collection_update ON %s FOR UPDATE '
            'USING (%s) WITH CHECK (%s)', t.tab, pg_catalog.format(may, 'UPDATE'),
            pg_catalog.format(may, 'UPDATE'));
        EXECUTE pg_catalog.format('CREATE POLICY pgembed_collection_delete ON %s FOR DELETE '
            'USING (%s)', t.tab, pg_catalog.format(may, 'UPDATE'));
        EXECUTE pg_catalog.format('COMMENT ON POLICY pgembed_collection_read ON %s IS %L',
            t.tab, 'Rows of a collection are seen by roles that may read its table');
        EXECUTE pg_catalog.format('COMMENT ON POLICY pgembed_collection_insert ON %s IS %L',
            t.tab, 'Rows of a collection are added by roles that may update its table');
        EXECUTE pg_catalog.format('COMMENT ON POLICY pgembed_collection_update ON %s IS %L',
            t.tab, 'Rows of a collection are changed by roles that may update its table');
        EXECUTE pg_catalog.format('COMMENT ON POLICY pgembed_collection_delete ON %s IS %L',
            t.tab, 'Rows of a collection are removed by roles that may update its table');
    END LOOP;
END
$do$
"""

_DOWNGRADE = r"""
DO $do$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT p.polrelid::regclass AS tab, p.polname
          FROM pg_catalog.pg_policy p
          JOIN pg_catalog.pg_class r ON r.oid = p.polrelid
         WHERE r.relnamespace = 'pgembed'::regnamespace
           AND p.polname = ANY (%(names)s)
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY %I ON %s', t.polname, t.tab);
        EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', t.tab);
    END LOOP;
END
$do$
"""


# The driver connection runs a parameterless script as is: format's '%' needs no escaping.
def upgrade() -> None:
    raw_connection(op.get_bind()).execute(_UPGRADE)


def downgrade() -> None:
    names = "ARRAY[" + ", ".join(f"'{p}'" for p in POLICIES) + "]::name[]"
    raw_connection(op.get_bind()).execute(_DOWNGRADE.replace("%(names)s", names))
