"""Collections own their tables: the catalog records which table each one created.

Revision ID: 0005
Revises: 0004

(Stub: filled in by the following commits.)
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
