"""0.4.0: every pgembed function resolves its names only to the intended objects.

Revision ID: 0004
Revises: 0003

(Stub: filled in by the following commits.)
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
