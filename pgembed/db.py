"""Engines from settings: the configured URL, or the embedded server.

Connection failures become :class:`DatabaseUnavailableError` with a message that names the
URL (password hidden) and the fix, not a driver traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pgembed import config, conninfo
from pgembed.errors import (
    CollectionError,
    DatabaseUnavailableError,
    InputError,
    PermissionDeniedError,
    PgembedError,
    UnknownCollectionError,
    UnknownKindError,
)

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Connection, Engine


def normalize_url(url: str) -> str:
    """``url`` (libpq URI, key=value conninfo or SQLAlchemy URL) as a SQLAlchemy URL for
    psycopg 3, read by libpq's own parser; MalformedURLError (a ConfigError) when malformed."""
    return conninfo.normalize(url)


def resolve_url(url: str | None = None) -> str:
    """The given URL, else PGEMBED_DATABASE_URL, else the embedded server (started on demand)."""
    url = url or config.database_url()
    if url is None:
        from pgembed.server import default_server

        return default_server().start()
    return normalize_url(url)


def _safe(url: str) -> str:
    return conninfo.mask(url)


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver connection failures into DatabaseUnavailableError."""
    from sqlalchemy import exc

    try:
        yield
    except exc.ArgumentError as e:
        raise DatabaseUnavailableError(
            f"malformed database URL {_safe(url)}: {conninfo.scrub(str(e), url)}; expected "
            "postgresql://user:password@host:port/dbname (check PGEMBED_DATABASE_URL)"
        ) from None
    except exc.DBAPIError as e:
        lost = isinstance(e, exc.OperationalError | exc.InterfaceError)
        if not (lost or e.connection_invalidated):
            raise
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        reason = conninfo.scrub(reason, url)
        raise DatabaseUnavailableError(
            f"cannot reach PostgreSQL at {_safe(url)}: {reason}; check that the server runs "
            "and PGEMBED_DATABASE_URL is right, or unset it to use the embedded server"
        ) from None


def _first_line(e: Any) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


# SQLSTATEs of pgembed's own SQL errors ("pgembed: ..."); any other state is bad input.
_PGEMBED_STATES: dict[str, type[PgembedError]] = {
    "42704": UnknownCollectionError,  # undefined_object: unknown collection
    "0A000": UnknownKindError,  # feature_not_supported: a kind the collection lacks
    "55000": CollectionError,  # object_not_in_prerequisite_state
}
# PostgreSQL's own errors when a collection's table lost a column, or changed its type,
# since its catalog entry was written.
_DRIFT_STATES = frozenset(
    {
        "42703",  # undefined_column
        "42883",  # undefined_function: an operator on a column of another type
        "42804",  # datatype_mismatch
        "42846",  # cannot_coerce
        "42P01",  # undefined_table
        "42809",  # wrong_object_type
        "22000",  # data_exception: e.g. a vector of another dimension in the column
        "54000",  # program_limit_exceeded: binary COPY into a column of another type
    }
)
_LOST_STATES = ("08", "57P")  # connection exceptions, operator intervention (shutdown)


def error_for(e: Exception, collection: str | None = None) -> PgembedError | None:
    """The PgembedError for a database error raised while using ``collection``, if any.

    The one map from SQLSTATE to pgembed's errors: pgembed's own messages by their state,
    a lost server, and a table that no longer matches its catalog entry.
    """
    from sqlalchemy import exc

    orig = getattr(e, "orig", None)
    state = str(getattr(orig, "sqlstate", None) or "")
    message = _first_line(e)
    if message.startswith("pgembed"):
        hint = getattr(getattr(orig, "diag", None), "message_hint", None)
        if hint:  # what to do: the function's HINT, which the message line lacks
            message = f"{message}; {hint}"
        return _PGEMBED_STATES.get(state, InputError)(message)
    from pgembed.link_roles import fdw_error

    shard = fdw_error(e, collection)  # the coordinator's postgres_fdw, not this connection
    if shard is not None:
        return shard
    lost = isinstance(e, exc.OperationalError | exc.InterfaceError) and not state
    if lost or state.startswith(_LOST_STATES) or getattr(e, "connection_invalidated", False):
        what = f" while using collection {collection!r}" if collection else ""
        return DatabaseUnavailableError(
            f"the database went away{what}: {message}; check that the server runs "
            "(`pgembed db status`) and run the same call again"
        )
    if state == "42501":  # insufficient_privilege, or a row-level security policy
        return PermissionDeniedError(message, collection)
    if collection is not None and state in _DRIFT_STATES:
        return CollectionError(
            f"the table of collection {collection!r} no longer matches its catalog entry "
            f"({message}); restore the column it expects, or drop the collection "
            "(drop(force=True)) and create it again"
        )
    return None


@contextlib.contextmanager
def translate_sql_errors(collection: str | None = None) -> Iterator[None]:
    """Database errors while using ``collection`` as PgembedError subclasses (see error_for)."""
    from sqlalchemy import exc

    try:
        yield
    except exc.DBAPIError as e:
        err = error_for(e, collection)
        if err is None:
            raise
        raise err from None


@contextlib.contextmanager
def naming_role(conn: Connection | Engine) -> Iterator[None]:
    """A missing privilege while using ``conn`` as PermissionDeniedError naming its role
    (asked on the connection once its failed transaction is rolled back, or on a new
    connection of the engine)."""
    import sqlalchemy as sa

    try:
        yield
    except (sa.exc.DBAPIError, PermissionDeniedError) as e:
        err = e if isinstance(e, PermissionDeniedError) else error_for(e)
        if not isinstance(err, PermissionDeniedError) or err.role:
            raise
        role = None
        with contextlib.suppress(Exception):  # the failed transaction first, then ask
            if isinstance(conn, sa.engine.Engine):
                with conn.connect() as fresh:
                    role = fresh.execute(sa.text("SELECT current_user")).scalar()
            else:
                conn.rollback()
                role = conn.execute(sa.text("SELECT current_user")).scalar()
        raise PermissionDeniedError(err.reason, err.collection, role) from None


def raw_connection(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one: for COPY and multi-statement scripts."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise DatabaseUnavailableError("the database connection is closed; reconnect and retry")
    return raw  # type: ignore[no-any-return]


def create_engine(url: str | None = None, *, check: bool = True, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine for pgembed; ``check`` opens one connection to fail early."""
    import sqlalchemy as sa

    resolved = resolve_url(url)
    with translate_errors(resolved):
        backend = sa.engine.make_url(resolved).get_backend_name()
        if backend != "postgresql":
            raise sa.exc.ArgumentError(f"pgembed needs PostgreSQL, not {backend}")
        engine = sa.create_engine(resolved, pool_pre_ping=True, **kwargs)
        if check:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
    return engine
