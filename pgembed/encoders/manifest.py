"""``manifest.json``: what an exported model directory holds and how to use it.

Written by :func:`pgembed.encoders.export.export_model`, read by the runtime. The sha256 of
every graph is recorded so a tampered or half-copied file is refused on load; the sha256 of
the full-depth fp32 graph is the *fingerprint*, the identity of the vector space.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgembed.errors import FingerprintMismatchError, ModelError

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
TOKENS_OUTPUT = "token_embeddings"
POOLED_OUTPUT = "sentence_embedding"


def graph_filename(precision: str, layers: int | None = None, *, optimized: bool = False) -> str:
    """File name of a graph: model.onnx, model.opt.onnx, model.fp16.onnx, model.L2.int8.onnx..."""
    stem = "model" if layers is None else f"model.L{layers}"
    if precision == "fp32":
        return f"{stem}.opt.onnx" if optimized else f"{stem}.onnx"
    return f"{stem}.{precision}.onnx"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class GraphInfo:
    file: str
    sha256: str
    precision: str  # fp32 | fp16 | int8
    layers: int  # transformer layers the graph runs
    optimized: bool  # fused by onnxruntime.transformers (Attention, SkipLayerNorm...)
    min_cosine_pooled: float | None = None  # validation against torch at export time
    min_cosine_tokens: float | None = None


@dataclass
class Manifest:
    name: str
    source: str
    architecture: str
    num_layers: int
    dim: int
    pooling: str
    normalization: str
    max_length: int
    query_prefix: str
    document_prefix: str
    matryoshka_dims: list[int]
    depths: list[int]
    opset: int
    inputs: list[str]
    pad_token_id: int
    tokenizer_sha256: str
    graphs: dict[str, GraphInfo] = field(default_factory=dict)
    outputs: dict[str, str] = field(
        default_factory=lambda: {"tokens": TOKENS_OUTPUT, "pooled": POOLED_OUTPUT}
    )
    versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    @property
    def fingerprint(self) -> str:
        """sha256 of the full-depth fp32 graph."""
        return self.graphs[graph_filename("fp32")].sha256

    def find_graph(self, precision: str, layers: int, *, optimized: bool) -> GraphInfo | None:
        depth = None if layers == self.num_layers else layers
        info = self.graphs.get(graph_filename(precision, depth, optimized=optimized))
        return info

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: Path) -> Path:
        path = directory / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{path} is missing: not an exported pgembed model") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        if raw.get("format") != FORMAT_VERSION:
            raise ModelError(
                f"{path} has manifest format {raw.get('format')!r}, expected {FORMAT_VERSION}; "
                "re-export the model with `pgembed export`"
            )
        try:
            graphs = {k: GraphInfo(**v) for k, v in raw.pop("graphs").items()}
            return cls(graphs=graphs, **raw)
        except (TypeError, KeyError) as exc:
            raise ModelError(f"{path} is malformed: {exc}") from exc


def verify_file(path: Path, expected: str) -> None:
    """Raise FingerprintMismatchError unless ``path`` hashes to ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise FingerprintMismatchError(
            f"{path.name} in {path.parent} has sha256 {actual[:16]}..., the manifest records "
            f"{expected[:16]}...: the file was modified or is incomplete. "
            f"Re-export it with `pgembed export`."
        )
