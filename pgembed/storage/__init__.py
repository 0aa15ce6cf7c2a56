"""pgembed.storage: collection tables, the catalog, ingest.

``SCHEMA`` is pgembed's own schema (catalog tables, SQL functions, alembic's version table):
the one place its name is written.
"""

SCHEMA = "pgembed"
