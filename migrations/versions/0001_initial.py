"""pgvector, schema pgembed, the catalog tables and the 0.1.0 SQL functions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

from pgembed.migrate import (
    drop_functions,
    install_sql,
    refuse_orphaning_collections,
    require_pgvector,
)
from pgembed.storage import SCHEMA

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    require_pgvector(op.get_bind())
    op.create_table(
        "encoders",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, sa.CheckConstraint("dim > 0"), nullable=False),
        sa.Column("pooling", sa.Text, nullable=False, server_default="mean"),
        sa.Column("normalized", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("max_length", sa.Integer, nullable=False),
        sa.Column("query_prefix", sa.Text, nullable=False, server_default=""),
        sa.Column("document_prefix", sa.Text, nullable=False, server_default=""),
        sa.Column("matryoshka_dims", pg.ARRAY(sa.Integer), nullable=False, server_default="{}"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "fde_configs",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("num_repetitions", sa.Integer, nullable=False),
        sa.Column("num_simhash_projections", sa.Integer, nullable=False),
        sa.Column("projection", sa.Text, nullable=False),
        sa.Column("projection_dimension", sa.Integer, nullable=False),
        sa.Column("fill_empty_partitions", sa.Boolean, nullable=False),
        sa.Column("final_projection_dimension", sa.Integer),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("output_dimension", sa.Integer, nullable=False),
        # The materialized random matrices: `matrices` is the lossless serialization Python
        # reads; the arrays are the same numbers, flattened, for the SQL functions.
        sa.Column("matrices", sa.LargeBinary, nullable=False),
        sa.Column("simhash", pg.ARRAY(sa.REAL), nullable=False),
        sa.Column("ams_index", pg.ARRAY(sa.Integer)),
        sa.Column("ams_sign", pg.ARRAY(sa.REAL)),
        sa.Column("final_index", pg.ARRAY(sa.Integer)),
        sa.Column("final_sign", pg.ARRAY(sa.REAL)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint(
            "dimension",
            "num_repetitions",
            "num_simhash_projections",
            "projection",
            "projection_dimension",
            "fill_empty_partitions",
            "final_projection_dimension",
            "seed",
            name="fde_configs_params_key",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "collections",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("table_schema", sa.Text, nullable=False, server_default="public"),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("id_column", sa.Text, nullable=False, server_default="id"),
        sa.Column("text_column", sa.Text),
        sa.Column(
            "encoder",
            sa.Text,
            sa.ForeignKey(f"{SCHEMA}.encoders.name", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column(
            "fde_config",
            sa.Integer,
            sa.ForeignKey(f"{SCHEMA}.fde_configs.id", ondelete="RESTRICT"),
        ),
        # kind -> {"column": ..., "dims": ..., "bits": ..., "index": {...}}
        sa.Column("kinds", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("table_schema", "table_name", name="collections_table_key"),
        schema=SCHEMA,
    )
    install_sql(op.get_bind(), "pgembed--0.1.0.sql")


def downgrade() -> None:
    # Registered collections would be orphaned: refuse unless forced (`--force`). Forced,
    # their tables stay as ordinary tables; only the catalog goes.
    refuse_orphaning_collections(op.get_bind(), bool(context.config.attributes.get("force")))
    drop_functions(op.get_bind())
    for table in ("collections", "fde_configs", "encoders"):
        op.drop_table(table, schema=SCHEMA)
