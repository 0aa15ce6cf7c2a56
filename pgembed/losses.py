"""What a downgrade would lose for good, found by trying it: the refusal behind ``--force``.

:func:`refuse_losses` runs the downgrade in a transaction, upgrades straight back to where
the database was, restores what the collections' declarations imply
(:func:`pgembed.storage.restore.restore_lexical`), compares with a snapshot taken before,
and rolls everything back. What differs is what the downgrade destroys and no upgrade
brings back. The snapshot is read from the catalog, not from a list of known tables:

- every row of every table in schema ``pgembed`` (calibrations, query depths, the catalog
  of shards, collection rows...), by primary key, as jsonb, so a dropped column counts
  too (a NULL filled in does not); but for the records collections refer to (encoders,
  FDE configs), which declaring a collection writes again;
- every relation and trigger outside the system schemas and ``pgembed`` (a collection's
  statistics table and triggers, a user's view on a pgembed function that CASCADE takes).

Indexes of collection tables count too, although :func:`restore_declared` would rebuild
them after a real upgrade: no downgrade drops one, and one that did should say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from pgembed.errors import MigrationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

_OUTSIDE = (
    "n.nspname NOT IN ('pgembed', 'information_schema') AND pg_catalog.left(n.nspname, 3) <> 'pg_'"
)
_RELATIONS = (
    "SELECT pg_catalog.format('%s %I.%I', CASE c.relkind WHEN 'r' THEN 'table' "
    "WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' "
    "WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'f' THEN 'foreign table' "
    "WHEN 'S' THEN 'sequence' ELSE 'relation' END, n.nspname, c.relname) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'i', 'I', 'f', 'S') AND {_OUTSIDE}"
)
_TRIGGERS = (
    "SELECT pg_catalog.format('trigger %I on %I.%I', t.tgname, n.nspname, c.relname) "
    "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE NOT t.tgisinternal AND {_OUTSIDE}"
)
# pgembed's tables and their primary keys; not the version table, nor the tables
# pgembed.collections refers to (encoders, FDE configs): declaring a collection writes
# those records again, and one in use goes only with the collection that uses it.
_TABLES = (
    "SELECT c.relname, coalesce((SELECT pg_catalog.array_agg(a.attname ORDER BY a.attnum) "
    "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
    "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary), '{}') "
    "FROM pg_catalog.pg_class c WHERE c.relnamespace = to_regnamespace('pgembed') "
    "AND c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version' "
    "AND c.oid NOT IN (SELECT f.confrelid FROM pg_catalog.pg_constraint f "
    "WHERE f.contype = 'f' AND f.conrelid = to_regclass('pgembed.collections')) ORDER BY 1"
)


@dataclass
class Snapshot:
    objects: set[str] = field(default_factory=set)
    """Relations and triggers outside pgembed, in words."""
    rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Table -> primary key (as jsonb text) -> the row's values as jsonb, NULLs left out."""


def snapshot(conn: Connection) -> Snapshot:
    """pgembed's rows, by table and primary key, and the objects outside pgembed."""
    out = Snapshot(set(conn.execute(sa.text(_RELATIONS)).scalars()))
    out.objects.update(conn.execute(sa.text(_TRIGGERS)).scalars())
    for table, key in conn.execute(sa.text(_TABLES)).all():
        rows = conn.execute(
            sa.text(
                "SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.to_jsonb(t)) "
                f"FROM pgembed.{conn.dialect.identifier_preparer.quote(table)} AS t"
            )
        ).scalars()
        # without a primary key, the whole row is its key
        out.rows[str(table)] = {
            json.dumps([r.get(k) for k in key] if key else r, sort_keys=True): r for r in rows
        }
    return out


def lost(before: Snapshot, after: Snapshot) -> list[str]:
    """What ``before`` has and ``after`` lacks, in words. A row is lost when its key is
    gone or a value it had (not NULL) is gone or changed; a NULL filled in is no loss."""
    out = sorted(before.objects - after.objects)
    for table, rows in sorted(before.rows.items()):
        now = after.rows.get(table, {})
        gone = [
            r
            for k, r in rows.items()
            if k not in now or any(now[k].get(c) != v for c, v in r.items())
        ]
        if gone:
            names = sorted({str(r.get("collection", r.get("name", ""))) for r in gone} - {""})
            of = f" ({', '.join(map(repr, names))})" if names else ""
            out.append(f"{len(gone)} of the {len(rows)} row(s) of pgembed.{table}{of}")
    return out


def refuse_losses(engine: Engine, revision: str) -> None:
    """Raise MigrationError, having changed nothing, when downgrading to ``revision`` and
    upgrading again would not give back every row and object (see the module's doc).
    The revisions' own refusals (registered collections at base) are raised as they are."""
    from alembic import command
    from alembic.util import CommandError

    from pgembed import migrate, scoring
    from pgembed.db import translate_errors
    from pgembed.storage import restore

    here = migrate.current(engine)
    if here is None:
        return
    with translate_errors(str(engine.url)), engine.connect() as conn:
        trans = conn.begin()
        try:
            # one migration at a time: concurrent function replacements fail otherwise
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.migrate'))"))
            before = snapshot(conn)
            scoring.unwire(conn)  # as migrate.downgrade does
            down = migrate._config(conn)
            down.attributes.update(drop_schema_at_base=True, force=False)
            try:
                command.downgrade(down, revision)
                command.upgrade(migrate._config(conn), here)
            except CommandError as exc:
                raise MigrationError(f"downgrade to {revision!r} failed: {exc}") from None
            restore.restore_lexical(conn, recompute=False)  # the rows did not change
            after = snapshot(conn)
        finally:
            trans.rollback()
    gone = lost(before, after)
    if gone:
        raise MigrationError(
            f"downgrading to {revision!r} would lose, and upgrading again would not bring "
            f"back: {'; '.join(gone)}. Nothing was changed. Pass --force to downgrade anyway "
            f"(`pgembed db downgrade {revision} --force`, migrate.downgrade(engine, "
            f"{revision!r}, force=True)) and lose them"
        )
