"""0.3.0: an IVFFlat index for binary codes; ``search_binary`` gains ``probes``.

Revision ID: 0003
Revises: 0002

Installs ``pgembed--0.2.0--0.3.0.sql``; the downgrade runs ``pgembed--0.3.0--0.2.0.sql``,
which restores 0.2.0's ``search_binary``. Collections keep their indexes either way: an
IVFFlat binary index still serves 0.2.0's ``search_binary`` at the session's
``ivfflat.probes``.
"""

from __future__ import annotations

from alembic import op

from pgembed.migrate import install_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_sql(op.get_bind(), "pgembed--0.2.0--0.3.0.sql")


def downgrade() -> None:
    install_sql(op.get_bind(), "pgembed--0.3.0--0.2.0.sql")
