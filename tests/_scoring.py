"""Helpers of the scoring extension's tests (tests/test_scoring*.py); their fixtures `built`
and `both` live in conftest.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from pgembed import scoring


@contextlib.contextmanager
def scoring_mode(value: str | None) -> Iterator[None]:
    """PGEMBED_SCORING set to ``value`` (None: unset) for the block."""
    old = os.environ.get(scoring.MODE_ENV)
    if value is None:
        os.environ.pop(scoring.MODE_ENV, None)
    else:
        os.environ[scoring.MODE_ENV] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(scoring.MODE_ENV, None)
        else:
            os.environ[scoring.MODE_ENV] = old


def outcome(conn: sa.Connection, sql: str, args: dict[str, Any]) -> tuple[str, Any]:
    """("ok", the scalar) or (SQLSTATE, the message's first line), in a savepoint."""
    try:
        with conn.begin_nested():
            return "ok", conn.execute(sa.text(sql), args).scalar()
    except sa.exc.DBAPIError as exc:
        orig: Any = exc.orig
        return str(orig.sqlstate), str(orig).splitlines()[0]


def server_identity(conn: sa.Connection) -> tuple[int, Any]:
    """The backend's pid and the postmaster's start: both unchanged means nothing crashed."""
    row = conn.execute(sa.text("SELECT pg_backend_pid(), pg_postmaster_start_time()")).one()
    return int(row[0]), row[1]
