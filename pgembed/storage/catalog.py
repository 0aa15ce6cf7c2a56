"""pgembed's catalog: encoders, FDE configs (with their matrices) and collections.

The tables are created by pgembed's migrations; these definitions are for reading and
writing rows at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql as pg

from pgembed.errors import (
    CollectionError,
    FingerprintMismatchError,
    MigrationError,
    UnknownCollectionError,
)
from pgembed.storage import SCHEMA
from pgembed.storage.schema import CollectionSpec

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.vectors.fde import FDEEncoder

metadata = sa.MetaData(schema=SCHEMA)

encoders = sa.Table(
    "encoders",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("pooling", sa.Text, nullable=False),
    sa.Column("normalized", sa.Boolean, nullable=False),
    sa.Column("max_length", sa.Integer, nullable=False),
    sa.Column("query_prefix", sa.Text, nullable=False),
    sa.Column("document_prefix", sa.Text, nullable=False),
    sa.Column("matryoshka_dims", pg.ARRAY(sa.Integer), nullable=False),
)

fde_configs = sa.Table(
    "fde_configs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("dimension", sa.Integer, nullable=False),
    sa.Column("num_repetitions", sa.Integer, nullable=False),
    sa.Column("num_simhash_projections", sa.Integer, nullable=False),
    sa.Column("projection", sa.Text, nullable=False),
    sa.Column("projection_dimension", sa.Integer, nullable=False),
    sa.Column("fill_empty_partitions", sa.Boolean, nullable=False),
    sa.Column("final_projection_dimension", sa.Integer),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("output_dimension", sa.Integer, nullable=False),
    sa.Column("matrices", sa.LargeBinary, nullable=False),
    sa.Column("simhash", pg.ARRAY(sa.REAL), nullable=False),
    sa.Column("ams_index", pg.ARRAY(sa.Integer)),
    sa.Column("ams_sign", pg.ARRAY(sa.REAL)),
    sa.Column("final_index", pg.ARRAY(sa.Integer)),
    sa.Column("final_sign", pg.ARRAY(sa.REAL)),
    # added by migration 0002: simhash[r, :, b] as vector(d), at index r*k + b (0-based)
    sa.Column("simhash_vectors", pg.ARRAY(VECTOR)),
)

collections = sa.Table(
    "collections",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("table_schema", sa.Text, nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("id_column", sa.Text, nullable=False),
    sa.Column("text_column", sa.Text),
    sa.Column("encoder", sa.Text, nullable=False),
    sa.Column("fde_config", sa.Integer),
    sa.Column("kinds", pg.JSONB, nullable=False),
    # added by migration 0005: the oid of the table the collection created (owns)
    sa.Column("table_oid", pg.OID),
)


@dataclass(frozen=True)
class EncoderRecord:
    """What the catalog keeps about an encoder: the identity of a vector space."""

    name: str
    fingerprint: str
    dim: int
    max_length: int
    pooling: str = "mean"
    normalized: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    matryoshka_dims: tuple[int, ...] = ()

    @classmethod
    def of(cls, manifest: Any) -> EncoderRecord:
        """The record of an exported model's manifest (``pgembed.encoders.manifest``)."""
        m = manifest
        return cls(
            name=m.name,
            fingerprint=m.fingerprint,
            dim=m.dim,
            max_length=m.max_length,
            pooling=m.pooling,
            normalized=m.normalization != "none",
            query_prefix=m.query_prefix,
            document_prefix=m.document_prefix,
            matryoshka_dims=tuple(m.matryoshka_dims),
        )


def _require_schema(conn: Connection) -> None:
    installed, current = conn.execute(
        sa.text(
            "SELECT to_regclass('pgembed.collections') IS NOT NULL, EXISTS (SELECT FROM "
            "pg_catalog.pg_attribute WHERE attrelid = to_regclass('pgembed.collections') "
            "AND attname = 'table_oid' AND NOT attisdropped)"
        )
    ).one()
    if not installed:
        raise MigrationError(
            "pgembed's schema is not installed in this database; run `pgembed db upgrade`"
        )
    if not current:
        raise MigrationError(
            "pgembed's schema in this database is older than this pgembed (no "
            "pgembed.collections.table_oid); run `pgembed db upgrade`"
        )


def register_encoder(conn: Connection, enc: EncoderRecord) -> None:
    """Record an encoder; refuse one whose fingerprint differs from the recorded one."""
    _require_schema(conn)
    stmt = pg.insert(encoders).values(
        name=enc.name,
        fingerprint=enc.fingerprint,
        dim=enc.dim,
        pooling=enc.pooling,
        normalized=enc.normalized,
        max_length=enc.max_length,
        query_prefix=enc.query_prefix,
        document_prefix=enc.document_prefix,
        matryoshka_dims=list(enc.matryoshka_dims),
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
    check_fingerprint(conn, enc.name, enc.fingerprint)


def get_encoder(conn: Connection, name: str) -> EncoderRecord | None:
    _require_schema(conn)
    row = conn.execute(sa.select(encoders).where(encoders.c.name == name)).mappings().first()
    if row is None:
        return None
    return EncoderRecord(**{**row, "matryoshka_dims": tuple(row["matryoshka_dims"])})


def check_fingerprint(conn: Connection, name: str, fingerprint: str) -> None:
    recorded = conn.execute(
        sa.select(encoders.c.fingerprint).where(encoders.c.name == name)
    ).scalar()
    if recorded is not None and recorded != fingerprint:
        raise FingerprintMismatchError(
            f"encoder {name!r} has fingerprint {fingerprint[:12]}…, but the catalog recorded "
            f"{recorded[:12]}…: its vectors live in another space. Load the original model, "
            "or create a new collection for this one"
        )


def save_fde_config(conn: Connection, fde: FDEEncoder) -> int:
    """Store an FDE config with its random matrices; return its id (reused if present)."""
    import numpy as np

    _require_schema(conn)
    cfg = fde.config
    params = {
        "dimension": cfg.dimension,
        "num_repetitions": cfg.num_repetitions,
        "num_simhash_projections": cfg.num_simhash_projections,
        "projection": cfg.projection,
        "projection_dimension": cfg.block_dim,
        "fill_empty_partitions": cfg.fill_empty_partitions,
        "final_projection_dimension": cfg.final_projection_dimension,
        "seed": cfg.seed,
    }
    where = [fde_configs.c[k].is_not_distinct_from(v) for k, v in params.items()]
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.fde_configs'))"))
    found = conn.execute(sa.select(fde_configs.c.id).where(*where)).scalar()
    if found is not None:
        return int(found)

    def floats(a: Any) -> list[float] | None:
        return None if a is None else np.asarray(a, dtype=np.float32).ravel().tolist()

    def ints(a: Any) -> list[int] | None:
        return None if a is None else np.asarray(a, dtype=np.int64).ravel().tolist()

    row = conn.execute(
        fde_configs.insert()
        .values(
            **params,
            output_dimension=cfg.output_dim,
            matrices=fde.to_bytes(),
            simhash=floats(fde.simhash),
            ams_index=ints(fde.ams_index),
            ams_sign=floats(fde.ams_sign),
            final_index=ints(fde.final_index),
            final_sign=floats(fde.final_sign),
            simhash_vectors=[
                col for rep in np.asarray(fde.simhash, dtype=np.float32) for col in rep.T
            ],
        )
        .returning(fde_configs.c.id)
    ).scalar_one()
    return int(row)


def load_fde_config(conn: Connection, config_id: int) -> FDEEncoder:
    from pgembed.vectors.fde import FDEEncoder

    blob = conn.execute(
        sa.select(fde_configs.c.matrices).where(fde_configs.c.id == config_id)
    ).scalar()
    if blob is None:
        raise CollectionError(f"FDE config {config_id} is not in pgembed.fde_configs")
    return FDEEncoder.from_bytes(bytes(blob))


@dataclass(frozen=True)
class CollectionRecord:
    spec: CollectionSpec
    fde_config: int | None
    fingerprint: str
    table_oid: int | None = None
    """The table the collection created; None when it owns none (see storage/ownership)."""


def register_collection(
    conn: Connection, spec: CollectionSpec, fde_config: int | None
) -> tuple[bool, int | None]:
    """Record the collection unless recorded alike; (whether it is new, its table oid).

    Refuses a name already recorded with another declaration.
    """
    _require_schema(conn)
    if spec.has("fde") and fde_config is None:
        raise CollectionError(f"collection {spec.name!r} stores fde but names no FDE config")
    existing = (
        conn.execute(sa.select(collections).where(collections.c.name == spec.name))
        .mappings()
        .first()
    )
    values = {**spec.to_catalog(), "fde_config": fde_config}
    if existing is not None:
        differ = [k for k, v in values.items() if existing[k] != v]
        if differ:
            raise CollectionError(
                f"collection {spec.name!r} already exists with another declaration "
                f"({', '.join(differ)} differ); open it as recorded with "
                f"Collection.open(engine, {spec.name!r}), or drop it first, or choose "
                "another name"
            )
        oid = existing["table_oid"]
        return False, None if oid is None else int(oid)
    holder = conn.execute(
        sa.select(collections.c.name).where(
            collections.c.table_schema == spec.schema,
            collections.c.table_name == spec.table_name,
        )
    ).scalar()
    if holder is not None:
        raise CollectionError(
            f"table {spec.schema}.{spec.table_name} already belongs to collection "
            f"{holder!r}; pgembed does not take over tables. Pass table='...' (or "
            "schema='...') to create the collection's own table"
        )
    conn.execute(collections.insert().values(**values))
    return True, None


def set_table_oid(conn: Connection, name: str, oid: int) -> None:
    conn.execute(collections.update().where(collections.c.name == name).values(table_oid=oid))


def owner_of(conn: Connection, oid: int) -> str | None:
    """The collection that created the table ``oid``, if any."""
    found = conn.execute(
        sa.select(collections.c.name).where(collections.c.table_oid == oid).order_by("name")
    ).scalar()
    return None if found is None else str(found)


def _is_sharded(conn: Connection, name: str) -> bool:
    """Whether ``name`` is a sharded collection this database coordinates (False where the
    role may not read the coordinator's catalog, which is its owner's)."""
    readable = conn.execute(
        sa.text(
            "SELECT CASE WHEN to_regclass('pgembed.sharded_collections') IS NULL THEN false "
            "ELSE has_table_privilege(to_regclass('pgembed.sharded_collections'), 'SELECT') END"
        )
    ).scalar()
    if not readable:
        return False
    found = conn.execute(
        sa.text("SELECT 1 FROM pgembed.sharded_collections WHERE name = :n"), {"n": name}
    ).scalar()
    return found is not None


def get_collection(conn: Connection, name: str) -> CollectionRecord:
    _require_schema(conn)
    row = (
        conn.execute(
            sa.select(collections, encoders.c.fingerprint)
            .join(encoders, encoders.c.name == collections.c.encoder)
            .where(collections.c.name == name)
        )
        .mappings()
        .first()
    )
    if row is None:
        if _is_sharded(conn, name):
            raise UnknownCollectionError(
                f"collection {name!r} is sharded (this database coordinates it): use "
                f"`pgembed shards search {name}` or ShardedCollection.open(engine, {name!r})"
            )
        known = list(conn.execute(sa.select(collections.c.name).order_by("name")).scalars())
        raise UnknownCollectionError(
            f"no collection named {name!r}; known collections: {known or 'none'}"
        )
    oid = row["table_oid"]
    return CollectionRecord(
        CollectionSpec.from_catalog(row),
        row["fde_config"],
        row["fingerprint"],
        None if oid is None else int(oid),
    )


def list_collections(conn: Connection) -> list[CollectionRecord]:
    """Every recorded collection, by name."""
    _require_schema(conn)
    names = conn.execute(sa.select(collections.c.name).order_by("name")).scalars().all()
    return [get_collection(conn, str(n)) for n in names]


def unregister_collection(conn: Connection, name: str) -> None:
    conn.execute(collections.delete().where(collections.c.name == name))
