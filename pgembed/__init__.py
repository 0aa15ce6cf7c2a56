"""pgembed: PostgreSQL + pgvector as an embedding search engine.

Nothing heavy is imported here: onnxruntime, torch and SQLAlchemy load on first use of the
names below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pgembed.errors import PgembedError

__version__ = "0.5.0"

# public name -> module that defines it
_LAZY = {
    "Encoder": "pgembed.encoders",
    "Collection": "pgembed.pipeline",
    "ShardedCollection": "pgembed.shards",
    "FDEConfig": "pgembed.vectors.fde",
    "FDEEncoder": "pgembed.vectors.fde",
    "CollectionSpec": "pgembed.storage.schema",
    "IndexParams": "pgembed.storage.schema",
    "create_engine": "pgembed.db",
    "grant": "pgembed.storage.grants",
    "revoke": "pgembed.storage.grants",
}
_MODULES = (
    "query", "sqlfuncs", "migrate", "db", "errors", "vectors", "stats", "corpus", "quickstart",
)  # fmt: skip

__all__ = [
    "Collection",
    "CollectionSpec",
    "Encoder",
    "FDEConfig",
    "FDEEncoder",
    "IndexParams",
    "PgembedError",
    "ShardedCollection",
    "__version__",
    "create_engine",
    "db",
    "errors",
    "grant",
    "migrate",
    "query",
    "revoke",
    "sqlfuncs",
    "stats",
    "vectors",
]

if TYPE_CHECKING:
    from pgembed import db, errors, migrate, query, sqlfuncs, stats, vectors
    from pgembed.db import create_engine
    from pgembed.encoders import Encoder
    from pgembed.pipeline import Collection
    from pgembed.shards import ShardedCollection
    from pgembed.storage.grants import grant, revoke
    from pgembed.storage.schema import CollectionSpec, IndexParams
    from pgembed.vectors.fde import FDEConfig, FDEEncoder


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"pgembed.{name}")
    raise AttributeError(f"module 'pgembed' has no attribute {name!r}")
