"""Declaring collections: the spec from an encoder's record, the table, the catalog row.

Storage only (no encoder runtime): ``pgembed.Collection`` and alembic's
``op.create_collection`` / ``op.drop_collection`` both declare through here, and
``op.add_lexical`` / ``op.drop_lexical`` add the lexical kind to a collection or remove it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pgembed.errors import (
    CollectionError,
    ConfigError,
    DimensionError,
    TableLeftAloneWarning,
    UnknownKindError,
)
from pgembed.storage import catalog, names, ownership
from pgembed.storage import schema as sch
from pgembed.storage.schema import CollectionSpec, IndexParams

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.vectors.fde import FDEConfig, FDEEncoder


def declare_spec(
    conn: Connection,
    spec: CollectionSpec,
    enc: catalog.EncoderRecord,
    fde: FDEEncoder | None,
) -> int | None:
    ownership.check_schema(spec.schema)
    ownership.lock(conn, spec)  # concurrent declarations of this name or table wait here
    if spec.has("lexical"):
        check_ts_config(conn, spec.lexical_config)
    catalog.register_encoder(conn, enc)
    fde_id = catalog.save_fde_config(conn, fde) if fde is not None else None
    _, recorded = catalog.register_collection(conn, spec, fde_id)
    new = ownership.table_oid(conn, spec) is None
    ownership.create_table(conn, spec, recorded)
    if spec.has("lexical"):
        _lexical_stats(conn, spec, new_table=new)
    return fde_id


# --- the lexical kind -------------------------------------------------------------------

_AS_IS = postgresql.psycopg.dialect(paramstyle="named")  # type: ignore[no-untyped-call]

_TRIGGERS = (
    ("insert", "INSERT", "REFERENCING NEW TABLE AS new_rows"),
    ("update", "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("delete", "DELETE", "REFERENCING OLD TABLE AS old_rows"),
    ("truncate", "TRUNCATE", ""),
)


def check_ts_config(conn: Connection, config: str) -> None:
    """Refuse a text search configuration that pg_ts_config does not hold: a bare name must
    be in pg_catalog (pgembed's functions see only pg_catalog), others schema-qualified.
    Names are compared as given; the spelling stored for ``::regconfig`` must read back the
    same configuration (oid), or the collection would index with another one."""
    schema, name = names.ts_config_parts(config)
    found = conn.execute(
        sa.text(
            "SELECT c.oid, CASE WHEN pg_catalog.pg_input_is_valid(:spelled, 'regconfig') "
            "THEN CAST(:spelled AS pg_catalog.regconfig)::oid END FROM pg_catalog.pg_ts_config c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace "
            "WHERE n.nspname = :s AND c.cfgname = :n"
        ),
        {"s": schema, "n": name, "spelled": names.ts_config_sql(config)},
    ).first()
    if found is not None and found[0] == found[1]:
        return
    if found is not None:
        raise ConfigError(
            f"text search configuration {config!r} is shadowed: "
            f"{names.ts_config_sql(config)!r} resolves to another configuration in this "
            "session's search_path; qualify it with its schema"
        )
    known = conn.execute(
        sa.text(
            "SELECT pg_catalog.string_agg(CASE WHEN n.nspname = 'pg_catalog' THEN c.cfgname "
            "ELSE n.nspname || '.' || c.cfgname END, ', ' ORDER BY n.nspname <> "
            "'pg_catalog', n.nspname, c.cfgname) FROM pg_catalog.pg_ts_config c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace"
        )
    ).scalar()
    raise ConfigError(
        f"unknown text search configuration {config!r} for the lexical kind (names are "
        f"case-sensitive); installed ones: {known}. Qualify a configuration outside "
        "pg_catalog with its schema ('myschema.myconfig')"
    )


def _stats_table(spec: CollectionSpec) -> sa.Table:
    return sa.Table(
        spec.lexical_stats_table,
        sa.MetaData(),
        sa.Column("lexeme", sa.Text(collation="C"), primary_key=True),
        sa.Column("docs", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        schema=spec.schema,
    )


def _lexical_stats(conn: Connection, spec: CollectionSpec, *, new_table: bool) -> None:
    """The statistics table, filled from the rows, and the triggers that keep it exact
    (pgembed.lexical_stats_update); idempotent for a collection that has them."""
    stats = _stats_table(spec)
    exists = sa.inspect(conn).has_table(stats.name, schema=spec.schema)
    if exists and new_table:
        raise CollectionError(
            f"table {names.qualified(spec.schema, stats.name)} exists, and the lexical kind of "
            f"collection {spec.name!r} keeps its statistics there; drop or rename it, or "
            "pass table='...' to name the collection's table otherwise"
        )
    if not exists:
        stats.create(conn)
        fresh = sa.func.pgembed.lexical_stats_recompute(spec.name).table_valued(
            "lexeme", "docs", "tokens"
        )
        conn.execute(
            stats.insert().from_select(
                ["lexeme", "docs", "tokens"],
                sa.select(fresh.c.lexeme, fresh.c.docs, fresh.c.tokens),
            )
        )
    table = names.qualified(spec.schema, spec.table_name)
    for suffix, event, referencing in _TRIGGERS:
        name = names.quote_ident(f"{sch.index_base(spec.table_name)}_lexical_{suffix}")
        names.run_ddl(
            conn,
            f"CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {table} {referencing} "
            "FOR EACH STATEMENT EXECUTE FUNCTION pgembed.lexical_stats_update()",
        )


def add_lexical(conn: Connection, name: str, config: str = "english") -> CollectionSpec:
    """Add the lexical kind to collection ``name`` inside an open transaction: the generated
    tsvector column (computed for every row as the table is rewritten), its GIN index, the
    statistics table filled from the stored texts, the triggers. Holds the table's ACCESS
    EXCLUSIVE lock until the transaction ends."""
    ownership.lock_name(conn, name)
    rec = catalog.get_collection(conn, name)
    ownership.lock(conn, rec.spec)
    if rec.spec.has("lexical"):
        if rec.spec.lexical_config == config:
            return rec.spec
        raise CollectionError(
            f"collection {name!r} already stores the lexical kind under text search "
            f"configuration {rec.spec.lexical_config!r}; drop it first (op.drop_lexical) "
            f"to use {config!r}"
        )
    spec = dataclasses.replace(rec.spec, kinds=(*rec.spec.kinds, "lexical"), lexical_config=config)
    check_ts_config(conn, config)
    ownership.check_writable(conn, rec)
    t = sch.table(spec, sa.MetaData())
    # compiled for text run as is: a dialect whose paramstyle doubles no % in the literal
    column = sa.schema.CreateColumn(t.c[sch.LEXICAL_COLUMN]).compile(dialect=_AS_IS)
    names.run_ddl(
        conn, f"ALTER TABLE {names.qualified(spec.schema, spec.table_name)} ADD COLUMN {column}"
    )
    for index in t.indexes:
        if index.name == f"{sch.index_base(spec.table_name)}_{sch.LEXICAL_COLUMN}_gin":
            index.create(conn)
    conn.execute(
        catalog.collections.update()
        .where(catalog.collections.c.name == name)
        .values(kinds=spec.kinds_json())
    )
    _lexical_stats(conn, spec, new_table=False)
    return spec


def drop_lexical(conn: Connection, name: str) -> CollectionSpec:
    """Remove the lexical kind of collection ``name``: triggers, statistics table, GIN index
    and column, and the kind from the catalog."""
    ownership.lock_name(conn, name)
    rec = catalog.get_collection(conn, name)
    ownership.lock(conn, rec.spec)
    if not rec.spec.has("lexical"):
        raise UnknownKindError(f"collection {name!r} stores no lexical kind to drop")
    ownership.check_writable(conn, rec)
    spec = dataclasses.replace(rec.spec, kinds=tuple(k for k in rec.spec.kinds if k != "lexical"))
    table = names.qualified(spec.schema, spec.table_name)
    for suffix, _, _ in _TRIGGERS:
        trigger = names.quote_ident(f"{sch.index_base(spec.table_name)}_lexical_{suffix}")
        names.run_ddl(conn, f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    stats = names.qualified(spec.schema, rec.spec.lexical_stats_table)
    names.run_ddl(conn, f"DROP TABLE IF EXISTS {stats}")
    # the GIN index goes with its column
    column = names.quote_ident(sch.LEXICAL_COLUMN)
    names.run_ddl(conn, f"ALTER TABLE {table} DROP COLUMN IF EXISTS {column}")
    conn.execute(
        catalog.collections.update()
        .where(catalog.collections.c.name == name)
        .values(kinds=spec.kinds_json())
    )
    return spec


def declare(
    conn: Connection,
    name: str,
    encoder: catalog.EncoderRecord,
    *,
    kinds: Sequence[str] = ("single",),
    fde: FDEConfig | dict[str, Any] | None = None,
    matryoshka_dims: Sequence[int] | None = None,
    **options: Any,
) -> CollectionSpec:
    """Create and record a collection inside an open transaction, without loading a model.

    ``options`` are those of :class:`pgembed.Collection`. Used by ``op.create_collection``
    in users' migrations. The rules of ``Collection.create()`` hold: no table is taken over,
    concurrent declarations wait for each other.
    """
    spec, fde_enc = spec_for(name, encoder, kinds, fde, matryoshka_dims, **options)
    declare_spec(conn, spec, encoder, fde_enc)
    return spec


def spec_for(
    name: str,
    enc: catalog.EncoderRecord,
    kinds: Sequence[str],
    fde: FDEConfig | dict[str, Any] | None,
    matryoshka_dims: Sequence[int] | None,
    **options: Any,
) -> tuple[CollectionSpec, FDEEncoder | None]:
    """The spec of a collection on encoder ``enc``, with its FDE matrices if it stores fde.

    ``fde`` and ``options["index"]`` may be given as dicts of FDEConfig's / IndexParams'
    fields, as autogenerated migrations write them.
    """
    fde_enc = None
    if "fde" in kinds:
        from pgembed.vectors.fde import FDEConfig, FDEEncoder

        cfg = (
            fde
            if isinstance(fde, FDEConfig)
            else FDEConfig(**{"dimension": enc.dim, **(fde or {})})
        )
        if cfg.dimension != enc.dim:
            raise DimensionError(
                f"the FDE config takes {cfg.dimension}-dim tokens, but encoder {enc.name!r} "
                f"makes {enc.dim}; use FDEConfig(dimension={enc.dim}, ...)"
            )
        fde_enc = FDEEncoder(cfg)
    if isinstance(options.get("index"), dict):  # e.g. from a rendered op.create_collection
        unknown = set(options["index"]) - set(IndexParams.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"index: unknown field(s) {sorted(unknown)}; IndexParams takes "
                f"{', '.join(IndexParams.__dataclass_fields__)}"
            )
        options["index"] = IndexParams(**options["index"])
    prefixes = enc.matryoshka_dims if matryoshka_dims is None else matryoshka_dims
    spec = CollectionSpec(
        name=name,
        dim=enc.dim,
        encoder=enc.name,
        kinds=tuple(kinds),
        matryoshka_dims=tuple(prefixes) if "matryoshka" in kinds else (),
        fde_dim=fde_enc.config.output_dim if fde_enc is not None else None,
        **options,
    )
    return spec, fde_enc


def undeclare(conn: Connection, name: str, *, force: bool = False) -> bool:
    """Drop a collection's table and catalog row; refuses a populated one unless forced.

    Drops only the table the collection created (by its recorded oid). Another table of
    that name, or one in a reserved schema, is left alone: the catalog row goes, and a
    warning says so. Returns whether a table was dropped.
    """
    ownership.lock_name(conn, name)
    rec = catalog.get_collection(conn, name)
    ownership.lock(conn, rec.spec)
    left_alone = ownership.drop_table(conn, rec, force=force)
    if rec.spec.has("lexical") and not left_alone:
        stats = names.qualified(rec.spec.schema, rec.spec.lexical_stats_table)
        names.run_ddl(conn, f"DROP TABLE IF EXISTS {stats}")
    catalog.unregister_collection(conn, name)
    if left_alone:
        warnings.warn(left_alone, TableLeftAloneWarning, stacklevel=3)
        return False
    return True
