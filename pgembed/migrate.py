"""pgembed's own schema migrations: upgrade, downgrade, current, history.

The alembic environment ships inside the package (``pgembed/migrations``), with the SQL files
it installs (``pgembed/sql``), so both work from an installed wheel.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from pgembed import trust
from pgembed.db import raw_connection
from pgembed.errors import ExtensionError, MigrationError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script
    from sqlalchemy.engine import Connection, Engine

MIN_PGVECTOR = (0, 8)


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "pgembed:migrations")
    cfg.attributes["connection"] = connection
    return cfg


def _run(engine: Engine, fn_name: str, revision: str, **attrs: object) -> None:
    from alembic import command
    from alembic.util import CommandError

    from pgembed.db import translate_errors

    with translate_errors(str(engine.url)), engine.begin() as conn:
        cfg = _config(conn)
        cfg.attributes.update(attrs)
        try:
            getattr(command, fn_name)(cfg, revision)
        except CommandError as exc:
            raise MigrationError(f"{fn_name} to {revision!r} failed: {exc}") from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring pgembed's schema up to ``revision`` (default: the newest), then wire
    ``pgembed.maxsim`` to the scoring extension's C functions when the database has the
    extension, or to the SQL ones when it has not (:func:`pgembed.scoring.wire`; for the
    embedded server the extension is built first where a C compiler exists). On a
    coordinator of sharded collections, every shard it records is upgraded after it
    (:func:`pgembed.shards.upgrade_shards`).
    """
    from pgembed import scoring, shards

    scoring.mode()  # a bad PGEMBED_SCORING fails before anything runs
    _run(engine, "upgrade", revision)
    scoring.wire(engine)
    shards.upgrade_shards(engine, revision)  # a coordinator's shards follow it
    _restore_declared(engine)  # triggers, statistics and indexes a downgrade took


def downgrade(engine: Engine, revision: str, force: bool = False) -> None:
    """Take pgembed's schema down to ``revision``; ``"base"`` removes every pgembed object.

    Unless ``force=True``, refuses (:class:`MigrationError`, before any change) a downgrade
    that would lose what upgrading again does not bring back: calibrations, query depths,
    the catalog of shards, collection rows, objects outside pgembed
    (:func:`pgembed.losses.refuse_losses` tries it in a transaction it rolls back). Going
    to base removes the catalog: forced, the collection tables stay as ordinary tables
    with their rows (pgvector stays installed too). Statistics triggers a downgrade drops
    are not lost: ``upgrade`` recreates them and recomputes the statistics. On a
    coordinator of sharded collections, every shard it records is downgraded first
    (:func:`pgembed.shards.downgrade_shards`), after checks of every database that change
    nothing when they refuse.
    """
    from pgembed import scoring, shards

    if not force:
        _refuse_losses(engine, revision)
    shards.downgrade_shards(engine, revision, force)  # while the coordinator still lists them
    # The revisions' downgrade scripts expect the SQL maxsim they installed: unwire first.
    # A downgrade that stays at or above 0.4.0 wires it again after.
    _unwire(engine)
    try:
        _run(engine, "downgrade", revision, drop_schema_at_base=True, force=force)
    except BaseException:
        scoring.wire(engine)  # refused or failed: the schema is where it was
        raise
    if current(engine) is None:
        _drop_scoring_extension(engine)
    else:
        scoring.wire(engine)


def _refuse_losses(engine: Engine, revision: str) -> None:
    """The check of :func:`pgembed.losses.refuse_losses` on each shard a coordinator
    records that the downgrade would take down, then on the database itself."""
    from pgembed import losses, shards

    recorded = shards._recorded_shards(engine)
    try:
        if recorded:
            target = shards._downgrade_target(engine, revision)
            revs = shards._shard_revisions(recorded, "downgrade")
            order: list[str | None] = [None, *(s.revision for s in reversed(history()))]
            for s in recorded:
                if order.index(revs[s.position]) <= order.index(target):
                    continue
                try:
                    losses.refuse_losses(s.engine, "base" if target is None else target)
                except MigrationError as exc:
                    raise MigrationError(f"on {s.label}: {exc}") from None
    finally:
        for s in recorded:
            s.engine.dispose()
    losses.refuse_losses(engine, revision)


def _restore_declared(engine: Engine) -> None:
    from pgembed.storage import restore

    restore.restore_declared(engine)


def _unwire(engine: Engine) -> None:
    import sqlalchemy as sa

    from pgembed import scoring
    from pgembed.db import translate_errors

    with translate_errors(str(engine.url)), engine.begin() as conn:
        # one migration at a time: concurrent function replacements fail otherwise
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.migrate'))"))
        scoring.unwire(conn)


def _drop_scoring_extension(engine: Engine) -> None:
    """At base every pgembed object goes, the scoring extension too (pgvector stays)."""
    import sqlalchemy as sa

    from pgembed import scoring
    from pgembed.db import translate_errors

    with translate_errors(str(engine.url)), engine.begin() as conn:
        ext_schema = conn.execute(
            sa.text("SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = :n"),
            {"n": scoring.EXTENSION},
        ).scalar()
        conn.execute(sa.text(f"DROP EXTENSION IF EXISTS {scoring.EXTENSION}"))
        # CREATE EXTENSION made its schema but DROP EXTENSION leaves it: drop it when empty,
        # since the next upgrade never adopts a schema it finds (pgembed.trust).
        if ext_schema is not None and not _holds_objects(conn, int(ext_schema)):
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {scoring.EXTENSION}"))


def _holds_objects(conn: Connection, schema_oid: int) -> bool:
    import sqlalchemy as sa

    return bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend WHERE refobjid = :s "
                "AND refclassid = CAST('pg_catalog.pg_namespace' AS regclass))"
            ),
            {"s": schema_oid},
        ).scalar()
    )


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None when pgembed is not installed."""
    import sqlalchemy as sa

    from pgembed.db import translate_errors

    with translate_errors(str(engine.url)), engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('pgembed.alembic_version')")).scalar()
        if exists is None:
            return None
        trust.check_version_table(conn)  # a view or a policy would run its author's code
        row = conn.execute(sa.text("SELECT version_num FROM pgembed.alembic_version")).first()
        return None if row is None else str(row[0])


def head() -> str:
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def history() -> list[Script]:
    """Revisions, newest first."""
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(_config()).walk_revisions())


# --- helpers called by the revisions ------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("-", 1)[0].split(".") if p.isdigit())


def require_pgvector(conn: Connection) -> str:
    """Create pgvector if needed and check it is >= 0.8; return its version."""
    import sqlalchemy as sa

    available = conn.execute(
        sa.text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if available is None:
        raise ExtensionError(
            "the PostgreSQL server has no pgvector extension; install pgvector >= 0.8 on it "
            "(for example the postgresql-NN-pgvector package or the pgvector/pgvector image), "
            "or unset PGEMBED_DATABASE_URL to use the embedded server, which ships it"
        )
    conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    # It went to the first schema of the search_path ("$user" when a schema has that name):
    # refuse one that another role owns, before pgembed's functions name it.
    trust.check(conn)
    installed = conn.execute(
        sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    ).scalar_one()
    check_pgvector_version(str(installed), str(available))
    return str(installed)


def check_pgvector_version(installed: str, available: str | None = None) -> None:
    if parse_version(installed) >= MIN_PGVECTOR:
        return
    want = ".".join(map(str, MIN_PGVECTOR))
    if available and parse_version(available) >= MIN_PGVECTOR:
        fix = f"run ALTER EXTENSION vector UPDATE (the server offers {available})"
    else:
        fix = "upgrade the server's pgvector package, then ALTER EXTENSION vector UPDATE"
    raise ExtensionError(f"pgvector {installed} is too old; pgembed needs >= {want}: {fix}")


VECTOR_SCHEMA = "@extschema:vector@"
"""Placeholder in pgembed's SQL files for the vector extension's schema (PostgreSQL's own
spelling): install_sql replaces it with the schema's name, quoted by the server."""


def vector_schema_identifier(conn: Connection) -> str:
    """The vector extension's schema as a quoted SQL identifier (``quote_ident``)."""
    import sqlalchemy as sa

    ident = conn.execute(
        sa.text(
            "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e "
            "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        )
    ).scalar()
    if ident is None:
        raise ExtensionError(
            "the vector extension is not installed in this database; run "
            "`pgembed db upgrade` from the start (revision 0001 creates it), or CREATE "
            "EXTENSION vector as a superuser"
        )
    if "$" in ident or VECTOR_SCHEMA in ident:
        # The name goes inside $fn$-quoted function bodies.
        raise ExtensionError(
            f"the vector extension's schema {ident} has a '$' in its name, which pgembed's "
            "functions cannot embed; move it (ALTER EXTENSION vector SET SCHEMA another_name)"
        )
    return str(ident)


def install_sql(conn: Connection, filename: str) -> None:
    """Run one of pgembed's SQL files (several statements, no parameters).

    ``@extschema:vector@`` in the file becomes the vector extension's schema, as quoted by
    the server: the only text substituted into pgembed's SQL.
    """
    sql = resources.files("pgembed").joinpath("sql", filename).read_text(encoding="utf-8")
    if VECTOR_SCHEMA in sql:
        sql = sql.replace(VECTOR_SCHEMA, vector_schema_identifier(conn))
    # The driver connection runs a parameterless multi-statement script as is, so the
    # '%' of format('%I') needs no escaping.
    raw_connection(conn).execute(sql)


def refuse_orphaning_collections(conn: Connection, force: bool) -> None:
    """Raise MigrationError when registered collections would lose their catalog entries."""
    import sqlalchemy as sa

    if force:
        return
    if conn.execute(sa.text("SELECT to_regclass('pgembed.collections')")).scalar() is None:
        return
    rows = conn.execute(
        sa.text("SELECT name, table_schema, table_name FROM pgembed.collections ORDER BY name")
    ).all()
    if not rows:
        return
    listed = ", ".join(f"{name!r} (table {schema}.{table})" for name, schema, table in rows)
    raise MigrationError(
        f"downgrading to base removes pgembed's catalog, but {len(rows)} collection(s) are "
        f"registered: {listed}. Drop them first (Collection.drop / op.drop_collection), or "
        "run `pgembed db downgrade base --force` (migrate.downgrade(engine, 'base', "
        "force=True)): the catalog goes, the collection tables stay as ordinary tables "
        "with their rows"
    )


def drop_functions(conn: Connection) -> None:
    """Drop every function in schema pgembed (used by downgrades)."""
    raw_connection(conn).execute(
        """
        DO $$
        DECLARE f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
                     WHERE p.pronamespace = 'pgembed'::regnamespace
            LOOP
                EXECUTE format('DROP FUNCTION %s CASCADE', f);
            END LOOP;
        END $$
        """
    )
