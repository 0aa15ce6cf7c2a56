"""Engines from settings: the configured URL, or the embedded server.

Connection failures become :class:`DatabaseUnavailableError` with a message that names the
URL (password hidden) and the fix, not a driver traceback.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pgembed import config
from pgembed.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def normalize_url(url: str) -> str:
    """Accept libpq-style URLs and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def resolve_url(url: str | None = None) -> str:
    """The given URL, else PGEMBED_DATABASE_URL, else the embedded server (started on demand)."""
    url = url or config.database_url()
    if url is None:
        from pgembed.server import default_server

        return default_server().start()
    return normalize_url(url)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver connection failures into DatabaseUnavailableError."""
    from sqlalchemy import exc

    try:
        yield
    except exc.ArgumentError as e:
        raise DatabaseUnavailableError(
            f"malformed database URL {_safe(url)}: {e}; expected "
            "postgresql://user:password@host:port/dbname (check PGEMBED_DATABASE_URL)"
        ) from None
    except exc.DBAPIError as e:
        lost = isinstance(e, exc.OperationalError | exc.InterfaceError)
        if not (lost or e.connection_invalidated):
            raise
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise DatabaseUnavailableError(
            f"cannot reach PostgreSQL at {_safe(url)}: {reason}; check that the server runs "
            "and PGEMBED_DATABASE_URL is right, or unset it to use the embedded server"
        ) from None


_SQLSTATE_ERRORS = {
    "42704": "UnknownCollectionError",  # undefined_object: unknown collection
    "0A000": "UnknownKindError",  # feature_not_supported: a kind the collection lacks
    "55000": "CollectionError",  # object_not_in_prerequisite_state
}


@contextlib.contextmanager
def translate_sql_errors() -> Iterator[None]:
    """Errors that pgembed's SQL functions raise ("pgembed: ...") as PgembedError subclasses."""
    from sqlalchemy import exc

    from pgembed import errors

    try:
        yield
    except exc.DBAPIError as e:
        message = str(e.orig).strip().splitlines()[0] if e.orig is not None else ""
        if not message.startswith("pgembed"):
            raise
        state = getattr(e.orig, "sqlstate", None) or ""
        cls: type[errors.PgembedError] = getattr(errors, _SQLSTATE_ERRORS.get(state, "InputError"))
        raise cls(message) from None


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
