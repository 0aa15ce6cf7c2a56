"""pgembed's own alembic environment; version table ``pgembed.alembic_version``."""
