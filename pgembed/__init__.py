"""pgembed: PostgreSQL + pgvector as an embedding search engine.

Nothing heavy is imported here: onnxruntime, torch and SQLAlchemy load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgembed.errors import PgembedError

__version__ = "0.1.0"

__all__ = ["PgembedError", "__version__"]

if TYPE_CHECKING:
    pass


def __getattr__(name: str) -> Any:
    raise AttributeError(f"module 'pgembed' has no attribute {name!r}")
