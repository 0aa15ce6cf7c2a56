"""Alembic support for users' own migrations.

- ``op.create_collection(name, encoder=..., kinds=...)`` and ``op.drop_collection(name)``,
  registered with ``Operations.register_operation``: import this module in ``env.py`` (or in
  the migration) to make them available.
- ``include_object`` and ``render_item`` for ``context.configure(...)`` in ``env.py``, so
  autogenerate ignores pgembed's own schema and vector expression indexes, and renders
  pgvector and multi-vector column types with their imports.

```python
# env.py
from pgembed.alembic_ops import include_object, render_item
context.configure(..., include_object=include_object, render_item=render_item)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pgembed.storage.catalog import EncoderRecord

PGEMBED_SCHEMA = "pgembed"


@Operations.register_operation("create_collection")
class CreateCollectionOp(MigrateOperation):
    """Create a collection's table and indexes and record it in pgembed's catalog."""

    def __init__(self, name: str, encoder: str, **options: Any) -> None:
        self.name = name
        self.encoder = encoder
        self.options = options

    @classmethod
    def create_collection(
        cls, operations: Operations, name: str, encoder: str, **options: Any
    ) -> None:
        """``op.create_collection("docs", encoder="all-minilm-l6-v2", kinds=("single",))``.

        ``options`` are those of :class:`pgembed.Collection` (kinds, fde as an FDEConfig or
        a dict of its fields, matryoshka_dims, binary_bits, table, schema, text_column,
        precision, distance, index). The encoder must be exported or already in the catalog.
        As with ``Collection.create()``, an existing table the collection did not create,
        pgembed's or the system's schemas and a missing schema are refused (CollectionError).
        """
        operations.invoke(cls(name, encoder, **options))

    def reverse(self) -> DropCollectionOp:
        return DropCollectionOp(self.name, force=True)


@Operations.register_operation("drop_collection")
class DropCollectionOp(MigrateOperation):
    """Drop a collection's table and catalog entry; refuses a populated one unless forced."""

    def __init__(self, name: str, force: bool = False) -> None:
        self.name = name
        self.force = force

    @classmethod
    def drop_collection(cls, operations: Operations, name: str, force: bool = False) -> None:
        """``op.drop_collection("docs")``; ``force=True`` drops even when rows exist.

        Drops only the table the collection created; a table of that name made otherwise
        is left alone (the catalog entry goes, with a TableLeftAloneWarning).
        """
        operations.invoke(cls(name, force))


@Operations.implementation_for(CreateCollectionOp)
def _create(operations: Operations, op: CreateCollectionOp) -> None:
    from pgembed.storage import declare

    conn = operations.get_bind()
    declare.declare(conn, op.name, encoder_record(conn, op.encoder), **op.options)


@Operations.implementation_for(DropCollectionOp)
def _drop(operations: Operations, op: DropCollectionOp) -> None:
    from pgembed.storage import declare

    declare.undeclare(operations.get_bind(), op.name, force=op.force)


def encoder_record(conn: Connection, encoder: str) -> EncoderRecord:
    """The catalog's record of ``encoder``, else its exported manifest's (no model loaded)."""
    from pgembed import config
    from pgembed.encoders.manifest import Manifest
    from pgembed.errors import UnknownModelError
    from pgembed.storage import catalog

    rec = catalog.get_encoder(conn, encoder)
    if rec is not None:
        return rec
    directory = config.model_dir() / encoder
    if not directory.is_dir():
        raise UnknownModelError(
            f"encoder {encoder!r} is neither in pgembed.encoders nor exported; "
            f"run `pgembed export ... --name {encoder}` first"
        )
    return catalog.EncoderRecord.of(Manifest.load(directory))


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Skip pgembed's own schema and the vector indexes pgembed creates on collections."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    if table is not None and getattr(table, "schema", None) == PGEMBED_SCHEMA:
        return False
    return not (type_ == "index" and name is not None and name.endswith(("_hnsw", "_ivfflat")))


_PGVECTOR_TYPES = ("VECTOR", "HALFVEC", "BIT", "SPARSEVEC")


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render pgvector types and MultiVector with an import, e.g. ``HALFVEC(384)``."""
    if type_ != "type":
        return False
    from pgembed.storage.columns import MultiVector

    if isinstance(obj, MultiVector):
        autogen_context.imports.add("import pgembed.storage.columns")
        return f"pgembed.storage.columns.MultiVector({obj.dim!r})"
    cls = type(obj).__name__
    if type(obj).__module__.startswith("pgvector.") and cls in _PGVECTOR_TYPES:
        autogen_context.imports.add("import pgvector.sqlalchemy")
        dim = getattr(obj, "dim", getattr(obj, "length", None))
        return f"pgvector.sqlalchemy.{cls}({'' if dim is None else dim})"
    return False


def collection_tables(specs: Sequence[Any], metadata: Any) -> list[Any]:
    """Add collections' tables to a user's MetaData (for autogenerate or ORM mapping)."""
    from pgembed.storage.schema import table

    return [table(spec, metadata) for spec in specs]
