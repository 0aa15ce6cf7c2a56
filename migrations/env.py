"""Alembic environment for pgembed's own schema.

Run through :mod:`pgembed.migrate`, which passes an open connection in
``config.attributes["connection"]``. The version table lives in schema ``pgembed`` so it
never collides with a user's own ``alembic_version``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from pgembed import trust
from pgembed.storage import SCHEMA

config = context.config
connection = config.attributes["connection"]

# One migrator at a time per database; released at commit.
connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('pgembed.migrate'))"))
# Before any DDL: no schema pgembed did not create, nothing another role owns (pgembed.trust).
# So the schema that exists here is pgembed's own.
trust.check(connection)
exists = connection.execute(
    text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": SCHEMA}
).scalar()
if not exists:
    connection.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))

context.configure(
    connection=connection,
    version_table="alembic_version",
    version_table_schema=SCHEMA,
    transactional_ddl=True,
)

with context.begin_transaction():
    context.run_migrations()
    # At base only the empty version table is left: remove the schema too.
    at_base = not context.get_context().get_current_heads()
    if config.attributes.get("drop_schema_at_base") and at_base:
        connection.execute(text(f'DROP SCHEMA "{SCHEMA}" CASCADE'))
