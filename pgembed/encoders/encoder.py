"""The :class:`Encoder`: an exported model's ONNX session plus its tokenizer.

One graph pass yields both the pooled sentence vector and the token vectors, so
``encode_both`` costs the same as ``encode``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pgembed import config
from pgembed._types import Float32Array, Int64Array
from pgembed.encoders import manifest as mf
from pgembed.encoders import runtime
from pgembed.encoders.dense import l2_normalize, matryoshka
from pgembed.encoders.registry import DEFAULT_MODEL, REGISTRY, available_models
from pgembed.encoders.tokenize import (
    TextTokenizer,
    Tokenized,
    check_texts,
    pad_batch,
    plan_batches,
    warn_truncated,
)
from pgembed.encoders.tokens import split_tokens
from pgembed.errors import ConfigError, ModelError, UnknownModelError
from pgembed.vectors.matryoshka import check_prefix

ROLES = ("document", "query")  # which side of a search a text is on (its prefix)
PRECISIONS = ("auto", *mf.PRECISIONS)
CHUNK = 8192  # texts tokenized and length-sorted together when streaming
# Padded tokens per batch: CPU gains little past a few thousand; a GPU wants many more.
# (Measured on 2 cores: 2048 beats 8192 by about 20%, small batches stay in cache.)
TOKEN_BUDGET = {"cpu": 2048, "cuda": 131072}
MAX_BATCH = {"cpu": 256, "cuda": 2048}
PROGRESS_MIN = 1000  # progress=None shows a bar from this many texts on

_Chunk = tuple[Float32Array | None, list[Float32Array] | None]


@dataclass(frozen=True)
class _Want:
    """What one pass over the graph returns, and how it batches."""

    pooled: bool
    tokens: bool
    drop_special: bool = True
    batch_size: int | None = None  # texts per graph run (default: per device)
    token_budget: int | None = None  # padded tokens per graph run (default: per device)
    progress: bool | None = None  # None: a bar from PROGRESS_MIN texts on
    chunk_size: int = CHUNK  # texts tokenized ahead while the previous chunk runs


class Encoder:
    """Text to vectors with an exported model. Build it with :meth:`Encoder.load`."""

    def __init__(
        self,
        directory: Path,
        manifest: mf.Manifest,
        graph: mf.GraphInfo,
        session: Any,
        device: str,
    ) -> None:
        self.path = directory
        self.manifest = manifest
        self.graph = graph
        self.device = device
        self._session = session
        self._tokenizer = TextTokenizer(
            directory / mf.TOKENIZER, manifest.max_length, manifest.pad_token_id
        )
        self._inputs = [i.name for i in session.get_inputs()]

    # --- construction ----------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name: str = DEFAULT_MODEL,
        device: str = "auto",
        precision: str = "auto",
        layers: int | None = None,
        *,
        model_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> Encoder:
        """Load the exported model ``name`` from ``model_dir`` (default config.model_dir()).

        device: "auto" (CUDA if usable, else CPU with a one-time warning when
        onnxruntime-gpu is installed), "cuda" (DeviceUnavailableError without a GPU) or
        "cpu". precision: "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16" or "int8".
        layers: run an elastic-depth graph (exported with ``--layers``).
        A registered model that has not been exported yet is exported first (needs the
        ``export`` extra). Every graph's sha256 is checked against the manifest.
        """
        if precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        root = Path(model_dir) if model_dir is not None else config.model_dir()
        directory = root / name
        if not (directory / mf.MANIFEST).is_file():
            if name not in REGISTRY:
                raise UnknownModelError(
                    f"unknown model {name!r}; available: {', '.join(available_models(root))}. "
                    f"Export a local model with `pgembed export DIR --name {name}`"
                )
            from pgembed.encoders.export import export_model

            export_model(name, model_dir=root, layers=(layers,) if layers else ())
        manifest = mf.Manifest.load(directory)
        depth = manifest.num_layers if layers is None else int(layers)
        if depth not in manifest.depths:
            raise ModelError(
                f"model {name!r} has no {depth}-layer graph (exported depths: "
                f"{manifest.depths}); re-export with `pgembed export ... --layers {depth}`"
            )
        mf.verify_file(directory / mf.TOKENIZER, manifest.tokenizer_sha256)

        dev = runtime.select_device(device)
        graph = _pick_graph(manifest, precision, dev, depth)
        mf.verify_file(directory / graph.file, graph.sha256)
        session, got = runtime.open_session(
            directory / graph.file, dev, demanded=device == "cuda", threads=threads
        )
        if got != dev and precision == "auto":
            # Fell back to CPU after choosing the CUDA graph: use the CPU one instead.
            graph = _pick_graph(manifest, precision, got, depth)
            mf.verify_file(directory / graph.file, graph.sha256)
            session, got = runtime.open_session(
                directory / graph.file, got, demanded=False, threads=threads
            )
        return cls(directory, manifest, graph, session, got)

    # --- identity ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        return tuple(self.manifest.matryoshka_dims)

    @property
    def layers(self) -> int:
        return self.graph.layers

    @property
    def precision(self) -> str:
        return self.graph.precision

    @property
    def fingerprint(self) -> str:
        """sha256 of the fp32 graph of this depth: the identity of the vector space.

        fp16/int8 graphs approximate that space and share its fingerprint.
        """
        tag = None if self.layers == self.manifest.num_layers else self.layers
        return self.manifest.graphs[mf.graph_filename("fp32", tag)].sha256

    def count_tokens(self, texts: Iterable[str], role: str = "document") -> Int64Array:
        """Tokens per text as the model sees them (prefix and [CLS]/[SEP] in, truncated)."""
        checked = check_texts(texts)
        prefix = self.prefix(role)
        return self._tokenizer.tokenize([prefix + t for t in checked]).lengths

    def prefix(self, role: str) -> str:
        if role not in ROLES:
            raise ConfigError(f"role must be 'document' or 'query', got {role!r}")
        return self.manifest.query_prefix if role == "query" else self.manifest.document_prefix

    def __repr__(self) -> str:
        return (
            f"Encoder(name={self.name!r}, dim={self.dim}, layers={self.layers}, "
            f"device={self.device!r}, precision={self.precision!r}, "
            f"fingerprint={self.fingerprint[:12]!r})"
        )

    # --- encoding ------------------------------------------------------------------------

    def encode(
        self,
        texts: Iterable[str],
        role: str = "document",
        dims: int | None = None,
        *,
        batch_size: int | None = None,
        token_budget: int | None = None,
        progress: bool | None = None,
    ) -> Float32Array:
        """Pooled vectors, float32 (n, dims or dim), each of unit L2 norm, in input order.

        ``dims`` keeps the first ``dims`` coordinates (a Matryoshka prefix), renormalized.
        ``batch_size`` caps texts per batch and ``token_budget`` padded tokens per batch.
        """
        self._check_dims(dims)
        parts: list[Float32Array] = []
        # A plain loop, not a comprehension: the truncation warning's stacklevel counts frames.
        want = _Want(True, False, True, batch_size, token_budget, progress)
        for p, _ in self._chunks(texts, role, want):
            if p is not None:
                parts.append(p)
        if not parts:
            return np.zeros((0, dims or self.dim), dtype=np.float32)
        return matryoshka(np.concatenate(parts), dims)

    def encode_tokens(
        self,
        texts: Iterable[str],
        role: str = "document",
        *,
        drop_special: bool = True,
        batch_size: int | None = None,
        token_budget: int | None = None,
        progress: bool | None = None,
    ) -> list[Float32Array]:
        """Token vectors per text, float32 (n_i, dim), unit norm per token, no padding.

        ``drop_special`` removes [CLS]/[SEP] (ready for MaxSim).
        """
        out: list[Float32Array] = []
        want = _Want(False, True, drop_special, batch_size, token_budget, progress)
        for _, t in self._chunks(texts, role, want):
            out.extend(t or [])
        return out

    def encode_both(
        self,
        texts: Iterable[str],
        role: str = "document",
        dims: int | None = None,
        *,
        drop_special: bool = True,
        batch_size: int | None = None,
        token_budget: int | None = None,
        progress: bool | None = None,
    ) -> tuple[Float32Array, list[Float32Array]]:
        """``(encode(...), encode_tokens(...))`` from a single pass over the graph."""
        self._check_dims(dims)
        pooled: list[Float32Array] = []
        tokens: list[Float32Array] = []
        want = _Want(True, True, drop_special, batch_size, token_budget, progress)
        for p, t in self._chunks(texts, role, want):
            if p is not None:
                pooled.append(p)
            tokens.extend(t or [])
        if not pooled:
            return np.zeros((0, dims or self.dim), dtype=np.float32), tokens
        return matryoshka(np.concatenate(pooled), dims), tokens

    def iter_encode(
        self,
        texts: Iterable[str],
        role: str = "document",
        dims: int | None = None,
        *,
        chunk_size: int = CHUNK,
        batch_size: int | None = None,
        token_budget: int | None = None,
        progress: bool | None = None,
    ) -> Iterator[Float32Array]:
        """Stream pooled vectors for a large iterable: one (k, dims) array per chunk.

        Arguments are checked now; texts are read, checked and encoded as you iterate.
        """
        self._check_dims(dims)
        self.prefix(role)
        want = _Want(True, False, True, batch_size, token_budget, progress, chunk_size)
        chunks = self._chunks(texts, role, want)
        return (matryoshka(p, dims) for p, _ in chunks if p is not None)

    def iter_encode_both(
        self,
        texts: Iterable[str],
        role: str = "document",
        dims: int | None = None,
        *,
        drop_special: bool = True,
        chunk_size: int = CHUNK,
        batch_size: int | None = None,
        token_budget: int | None = None,
        progress: bool | None = None,
    ) -> Iterator[tuple[Float32Array, list[Float32Array]]]:
        """Stream ``(pooled, tokens)`` per chunk of ``chunk_size`` texts (see iter_encode)."""
        self._check_dims(dims)
        self.prefix(role)
        want = _Want(True, True, drop_special, batch_size, token_budget, progress, chunk_size)
        chunks = self._chunks(texts, role, want)
        return ((matryoshka(p, dims), t) for p, t in chunks if p is not None and t is not None)

    # --- internals -----------------------------------------------------------------------

    def _check_dims(self, dims: int | None) -> None:
        if dims is not None:
            check_prefix(dims, self.dim)

    def _chunks(self, texts: Iterable[str], role: str, want: _Want) -> Iterator[_Chunk]:
        prefix = self.prefix(role)
        if isinstance(texts, str | bytes):
            check_texts(texts)  # raises: a bare string is a common mistake
        total = len(texts) if isinstance(texts, Sized) else None
        show = want.progress if want.progress is not None else (total or 0) >= PROGRESS_MIN
        budget = want.token_budget or TOKEN_BUDGET[self.device]
        cap = want.batch_size or MAX_BATCH[self.device]
        if budget < 1 or cap < 1:
            raise ConfigError("batch_size and token_budget must be positive")

        def prepare(chunk: list[str], offset: int) -> Tokenized:
            checked = check_texts(chunk, offset=offset)
            if prefix:
                checked = [prefix + t for t in checked]
            return self._tokenizer.tokenize(checked, offset=offset)

        truncated = seen = 0
        bar = tqdm(total=total, desc=f"encode {self.name}", unit="text", disable=not show)
        # Tokenize chunk k+1 in a thread while chunk k runs: both tokenizers and
        # onnxruntime release the GIL, so a GPU does not wait for the CPU-bound tokenizer.
        with bar, ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future[Tokenized] | None = None
            for chunk in _batched(texts, want.chunk_size):
                ahead = pool.submit(prepare, chunk, seen)
                seen += len(chunk)
                if pending is not None:
                    tok = pending.result()
                    truncated += tok.truncated
                    yield self._run_chunk(tok, want, budget, cap, bar)
                pending = ahead
            if pending is not None:
                tok = pending.result()
                truncated += tok.truncated
                yield self._run_chunk(tok, want, budget, cap, bar)
        warn_truncated(truncated, seen, self.max_length, stacklevel=4)

    def _run_chunk(self, tok: Tokenized, want: _Want, budget: int, cap: int, bar: Any) -> _Chunk:
        n = len(tok.ids)
        outputs = ([mf.POOLED_OUTPUT] if want.pooled else []) + (
            [mf.TOKENS_OUTPUT] if want.tokens else []
        )
        pooled = np.empty((n, self.dim), dtype=np.float32) if want.pooled else None
        tokens: list[Float32Array | None] = [None] * n if want.tokens else []
        for rows in plan_batches(tok.lengths, budget, cap):
            ids, mask = pad_batch(tok.ids, rows, self._tokenizer.pad_id)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            result = runtime.run(self._session, feeds, outputs, self.device)
            k = 0
            if pooled is not None:
                pooled[rows] = result[k]
                k += 1
            if want.tokens:
                lengths = [len(tok.ids[r]) for r in rows]
                special = [tok.special[r] for r in rows] if want.drop_special else None
                hidden = np.asarray(result[k], dtype=np.float32)
                for r, vecs in zip(rows, split_tokens(hidden, lengths, special), strict=True):
                    tokens[r] = vecs
            bar.update(len(rows))
        # The graph normalizes already; renormalizing in fp32 makes fp16/int8 exact too.
        out_pooled = l2_normalize(pooled) if pooled is not None else None
        out_tokens = [t for t in tokens if t is not None] if want.tokens else None
        return out_pooled, out_tokens


def _batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    if size < 1:
        raise ConfigError(f"chunk_size must be positive, got {size}")
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pick_graph(manifest: mf.Manifest, precision: str, device: str, depth: int) -> mf.GraphInfo:
    want = precision if precision != "auto" else ("fp16" if device == "cuda" else "fp32")
    # CUDA: the graph fused by onnxruntime.transformers (fused Attention, fp16-friendly).
    # CPU: the plain graph; onnxruntime's own load-time fusions run it about 15% faster than
    # the offline-fused one on the benchmark (benchmarks/RESULTS.md). Both were validated.
    order = (True, False) if device == "cuda" else (False, True)
    for optimized in order:
        info = manifest.find_graph(want, depth, optimized=optimized)
        if info is not None:
            return info
    have = sorted({g.precision for g in manifest.graphs.values() if g.layers == depth})
    raise ModelError(
        f"model {manifest.name!r} has no {want} graph with {depth} layers (it has: "
        f"{', '.join(have)}); re-export it with `pgembed export`"
    )
