"""What a downgrade would lose for good, found by trying it: the refusal behind ``--force``.

:func:`refuse_losses` runs the downgrade in a transaction, upgrades straight back to where
the database was, restores what the collections' declarations imply
(:func:`pgembed.storage.restore.restore_lexical`), compares with a snapshot taken before,
and rolls everything back. What differs is what the downgrade destroys and no upgrade
brings back. The snapshot is read from the catalog, not from a list of known tables:

- every row of every table in schema ``pgembed`` (calibrations, query depths, the catalog
  of shards, collection rows, encoders...), as jsonb, so a dropped column counts too;
- every relation and trigger outside the system schemas and ``pgembed`` (a collection's
  statistics table and triggers, a user's view on a pgembed function that CASCADE takes).

Indexes of collection tables count too, although :func:`restore_declared` would rebuild
them after a real upgrade: no downgrade drops one, and one that did should say so.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import sqlalchemy as sa

from pgembed.errors import MigrationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

Snapshot = dict[str, Counter[str]]

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


def snapshot(conn: Connection) -> Snapshot:
    """pgembed's rows (md5 of each row as jsonb, by table) and the objects outside it."""
    out: Snapshot = {
        "objects": Counter(conn.execute(sa.text(_RELATIONS)).scalars()),
    }
    out["objects"].update(conn.execute(sa.text(_TRIGGERS)).scalars())
    tables = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "WHERE c.relnamespace = to_regnamespace('pgembed') AND c.relkind IN ('r', 'p') "
            "AND c.relname <> 'alembic_version' ORDER BY 1"
        )
    ).scalars()
    quote = conn.dialect.identifier_preparer.quote
    for table in tables:
        # each row's hash, then what names it (its collection), for the message
        rows = conn.execute(
            sa.text(
                "SELECT md5(to_jsonb(t)::text) || ' ' || coalesce(to_jsonb(t) ->> 'collection', "
                f"to_jsonb(t) ->> 'name', '') FROM pgembed.{quote(table)} AS t"
            )
        ).scalars()
        out[f"pgembed.{table}"] = Counter(rows)
    return out


def lost(before: Snapshot, after: Snapshot) -> list[str]:
    """What ``before`` has and ``after`` lacks, in words."""
    out = []
    for key, items in sorted(before.items()):
        gone = items - after.get(key, Counter())
        if not gone:
            continue
        if key == "objects":
            out.extend(sorted(gone))
        else:
            n = sum(gone.values())
            names = sorted({row.split(" ", 1)[1] for row in gone} - {""})
            of = f" ({', '.join(map(repr, names))})" if names else ""
            out.append(f"{n} of the {sum(items.values())} row(s) of {key}{of}")
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
