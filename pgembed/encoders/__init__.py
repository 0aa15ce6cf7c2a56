"""pgembed.encoders: text to vectors with exported ONNX models (no database here).

``Encoder.load(name)`` opens an exported model (exporting the default one on first use);
``export_model(source)`` writes one (needs the ``export`` extra: torch, transformers, onnx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgembed.encoders.registry import (
    DEFAULT_MODEL,
    REGISTRY,
    ModelSpec,
    available_models,
    exported_models,
    get_spec,
)

if TYPE_CHECKING:
    from pgembed.encoders.encoder import Encoder
    from pgembed.encoders.export import export_model

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "Encoder",
    "ModelSpec",
    "available_models",
    "export_model",
    "exported_models",
    "get_spec",
]


def __getattr__(name: str) -> Any:
    # Lazy: Encoder pulls tokenizers/tqdm, export_model pulls nothing until called, but
    # keep `import pgembed.encoders` cheap either way.
    if name == "Encoder":
        from pgembed.encoders.encoder import Encoder

        return Encoder
    if name == "export_model":
        from pgembed.encoders.export import export_model

        return export_model
    raise AttributeError(f"module 'pgembed.encoders' has no attribute {name!r}")
