"""Index scan settings that travel with the ORM builders' statements.

pgvector's HNSW scan returns at most ``hnsw.ef_search`` rows (40 by default), and a filter
applied after the scan can leave fewer than ``k``. The SQL functions set ``hnsw.ef_search``
and the iterative scans for their one call; a plain ``Select`` cannot carry a setting, so
the builders of :mod:`pgembed.query` tag theirs with the execution option ``pgembed_scan``
(``{setting: value}``), and the listener here applies it around that one statement on the
same connection: ``hnsw.ef_search`` is raised to the rows the index stage must give (never
lowered), and with a filter, ``hnsw.iterative_scan`` / ``ivfflat.iterative_scan`` keep the
scan going until enough rows pass it. A value the session already set wins, except that
ef_search is raised. The previous values come back after the statement (inside a
transaction as ``SET LOCAL``, in autocommit for the session). Drop the tag with
``stmt.execution_options(pgembed_scan=None)`` to run a builder under your own settings.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

OPTION = "pgembed_scan"
_SAVED = "_pgembed_scan_saved"
_EF = "hnsw.ef_search"
_DEFAULT_EF = 40
_MAX_EF = 1000  # pgvector's upper bound for hnsw.ef_search


def settings(rows: int, *, filtered: bool, order: str = "relaxed_order") -> dict[str, str]:
    """What a statement whose index stage must give ``rows`` rows asks for.

    ``order`` is the HNSW iterative scan: ``strict_order`` where the index order is the
    result order (knn), ``relaxed_order`` where an exact rerank follows.
    """
    out = {_EF: str(min(_MAX_EF, max(_DEFAULT_EF, rows)))}
    if filtered or rows > _MAX_EF:
        out["hnsw.iterative_scan"] = order
        out["ivfflat.iterative_scan"] = "relaxed_order"  # the only order IVFFlat has
    return out


def tag(
    stmt: sa.Select[Any], rows: int, *, filtered: bool, order: str = "relaxed_order"
) -> sa.Select[Any]:
    """``stmt`` carrying the scan settings for ``rows`` index rows."""
    return stmt.execution_options(**{OPTION: settings(rows, filtered=filtered, order=order)})


def _wanted(name: str, value: str, current: str | None) -> str:
    if name == _EF:
        have = int(current) if current and current.isdigit() else _DEFAULT_EF
        return str(max(have, int(value)))
    return value if current in (None, "", "off") else current


def _set(cursor: Any, values: dict[str, str | None]) -> None:
    local = not getattr(getattr(cursor, "connection", None), "autocommit", False)
    calls = ", ".join("pg_catalog.set_config(%s, %s, %s)" for _ in values)
    params: list[Any] = []
    for name, value in values.items():
        params += [name, value, local]  # a NULL value resets to the default
    cursor.execute(f"SELECT {calls}", params)


@event.listens_for(Engine, "before_cursor_execute")
def _apply(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    wanted = context.execution_options.get(OPTION) if context is not None else None
    if not wanted:
        return
    names = list(wanted)
    reads = ", ".join("pg_catalog.current_setting(%s, true)" for _ in names)
    cursor.execute(f"SELECT {reads}", names)
    row = cursor.fetchone()
    saved = dict(zip(names, row, strict=True))
    setattr(context, _SAVED, saved)
    _set(cursor, {n: _wanted(n, wanted[n], saved[n]) for n in names})


def _restore(context: Any) -> None:
    saved = getattr(context, _SAVED, None)
    if saved is None:
        return
    delattr(context, _SAVED)
    cursor = context.root_connection.connection.dbapi_connection.cursor()
    try:
        _set(cursor, saved)
    finally:
        cursor.close()


@event.listens_for(Engine, "after_cursor_execute")
def _after(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    if context is not None and getattr(context, _SAVED, None) is not None:
        # The statement's rows are still to be fetched from this cursor: restore on another.
        _restore(context)


@event.listens_for(Engine, "handle_error")
def _on_error(ctx: Any) -> None:
    context = ctx.execution_context
    if context is None or getattr(context, _SAVED, None) is None:
        return
    try:
        _restore(context)
    except Exception:
        setattr(context, _SAVED, None)
