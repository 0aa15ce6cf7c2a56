"""After an upgrade: what each registered collection's declaration implies, made whole again.

A downgrade below 0004 drops ``pgembed.lexical_stats_update`` and with it (CASCADE) the
triggers that keep each lexical collection's statistics exact; rows written meanwhile are
not counted. :func:`restore_declared` (run at the end of ``migrate.upgrade``) recreates the
statistics table and triggers a lexical collection lacks, recomputing its statistics from
scratch whenever a trigger was missing, then builds every index the declaration implies and
the table lacks (:func:`pgembed.storage.bulk.finish`, which waits for running bulk loads).

Only tables a collection created are touched (its recorded ``table_oid``, from 0005 on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from pgembed.errors import CollectionError, PgembedError
from pgembed.storage import declare, ownership
from pgembed.storage import schema as sch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

_UPDATE_FN = "pgembed.lexical_stats_update()"


def owned_specs(conn: Connection) -> list[sch.CollectionSpec]:
    """Every registered collection whose table exists and is the one it created (before
    0005, which records that, the table of its name); read with the columns of 0001."""
    if conn.execute(sa.text("SELECT to_regclass('pgembed.collections')")).scalar() is None:
        return []
    has_oid = conn.execute(
        sa.text(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = "
            "'pgembed.collections'::regclass AND attname = 'table_oid' AND NOT attisdropped)"
        )
    ).scalar()
    oid = "table_oid" if has_oid else "NULL::oid AS table_oid"
    rows = conn.execute(
        sa.text(
            "SELECT name, table_schema, table_name, id_column, text_column, encoder, kinds, "
            f"{oid} FROM pgembed.collections ORDER BY name"
        )
    ).mappings()
    out = []
    for row in rows:
        try:
            spec = sch.CollectionSpec.from_catalog(row)
        except (KeyError, TypeError, ValueError, PgembedError):
            continue  # a row this version cannot read: left as it is, as everywhere else
        found = ownership.table_oid(conn, spec)
        if found is not None and (not has_oid or found == row["table_oid"]):
            out.append(spec)
    return out


def _missing_triggers(conn: Connection, spec: sch.CollectionSpec) -> list[str]:
    names = [f"{sch.index_base(spec.table_name)}_lexical_{s}" for s, _, _ in declare._TRIGGERS]
    have = set(
        conn.execute(
            sa.text(
                "SELECT t.tgname FROM pg_catalog.pg_trigger t "
                "JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND NOT t.tgisinternal "
                "AND t.tgfoid = CAST(:f AS pg_catalog.regprocedure)"
            ),
            {"s": spec.schema, "t": spec.table_name, "f": _UPDATE_FN},
        ).scalars()
    )
    return [n for n in names if n not in have]


def restore_lexical(conn: Connection, *, recompute: bool = True) -> list[str]:
    """Recreate the statistics table and triggers of every lexical collection that lacks
    them, inside the open transaction; with ``recompute``, statistics that a missing
    trigger may have left stale are computed again from the rows. Returns the names of the
    collections restored. Does nothing below 0004 (no lexical kind there)."""
    found = conn.execute(sa.text("SELECT to_regprocedure(:f)"), {"f": _UPDATE_FN}).scalar()
    if found is None:
        return []
    restored = []
    for spec in owned_specs(conn):
        if not spec.has("lexical"):
            continue
        stats_exists = sa.inspect(conn).has_table(spec.lexical_stats_table, schema=spec.schema)
        if stats_exists and not _missing_triggers(conn, spec):
            continue
        ownership.lock(conn, spec)
        if stats_exists and recompute:
            conn.execute(sa.text(f"DELETE FROM {_stats_name(conn, spec)}"))
            conn.execute(
                sa.text(
                    f"INSERT INTO {_stats_name(conn, spec)} (lexeme, docs, tokens) SELECT "
                    "s.lexeme, s.docs, s.tokens FROM pgembed.lexical_stats_recompute(:c) AS s"
                ),
                {"c": spec.name},
            )
        declare._lexical_stats(conn, spec, new_table=False)  # table if missing, triggers
        restored.append(spec.name)
    return restored


def _stats_name(conn: Connection, spec: sch.CollectionSpec) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(spec.schema)}.{quote(spec.lexical_stats_table)}"


def restore_declared(engine: Engine) -> dict[str, Any]:
    """Lexical statistics and triggers (one transaction), then missing indexes (one
    ``CREATE INDEX`` each, per collection; at head only, whose functions serve every
    index). Returns what was restored: collection names, and index names by collection."""
    from pgembed import migrate
    from pgembed.db import translate_errors
    from pgembed.storage import bulk

    with translate_errors(str(engine.url)), engine.begin() as conn:
        lexical = restore_lexical(conn)
        version = "SELECT version_num FROM pgembed.alembic_version"
        at_head = conn.execute(sa.text(version)).scalar() == migrate.head()
        specs = owned_specs(conn) if at_head else []
    indexes: dict[str, list[str]] = {}
    for spec in specs:
        built = bulk.finish(engine, spec, check=_still_owned(spec))
        if built:
            indexes[spec.name] = built
    return {"lexical": lexical, "indexes": indexes}


def _still_owned(spec: sch.CollectionSpec) -> Callable[[Connection], None]:
    def check(conn: Connection) -> None:
        if spec.name not in {s.name for s in owned_specs(conn)}:
            raise CollectionError(
                f"collection {spec.name!r} was dropped, or its table replaced, while its "
                "indexes were being restored; run `pgembed db upgrade` again"
            )

    return check
