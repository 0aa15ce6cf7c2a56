"""Declaring collections: the spec from an encoder's record, the table, the catalog row.

Storage only (no encoder runtime): ``pgembed.Collection`` and alembic's
``op.create_collection`` / ``op.drop_collection`` both declare through here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgembed.errors import DimensionError, TableLeftAloneWarning
from pgembed.storage import catalog, ownership
from pgembed.storage.schema import CollectionSpec

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
    catalog.register_encoder(conn, enc)
    fde_id = catalog.save_fde_config(conn, fde) if fde is not None else None
    _, recorded = catalog.register_collection(conn, spec, fde_id)
    ownership.create_table(conn, spec, recorded)
    return fde_id


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
    """The spec of a collection on encoder ``enc``, with its FDE matrices if it stores fde."""
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
    catalog.unregister_collection(conn, name)
    if left_alone:
        warnings.warn(left_alone, TableLeftAloneWarning, stacklevel=3)
        return False
    return True
