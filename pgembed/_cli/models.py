"""`pgembed export` and `pgembed encode`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pgembed._cli.args import (
    check_writable,
    int_list,
    output_dir,
    output_file,
    positive_int,
    read_lines,
)
from pgembed.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (fp32, fused fp32, fp16, int8) with its manifest",
        description="Export SOURCE (a registered model name such as all-minilm-l6-v2, or a "
        "local Hugging Face / sentence-transformers directory) to <model dir>/NAME/.",
    )
    p.add_argument(
        "source",
        nargs="?",
        default="all-minilm-l6-v2",
        help="registered model name or model directory (default: all-minilm-l6-v2)",
    )
    p.add_argument("--name", help="directory name under the model dir (default: from SOURCE)")
    p.add_argument("--layers", type=int_list, default=[], help="extra depths, e.g. 2,4")
    p.add_argument("--matryoshka", type=int_list, help="prefix dims, e.g. 64,128,256")
    p.add_argument("--max-length", type=positive_int, help="token limit (default: the model's)")
    p.add_argument("--query-prefix", help="text prepended to queries")
    p.add_argument("--document-prefix", help="text prepended to documents")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 graph")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 graph")
    p.add_argument("--model-dir", type=output_dir, help="default: PGEMBED_MODEL_DIR")
    p.add_argument("--force", action="store_true", help="replace an existing export")
    p.set_defaults(func=_export)

    e = sub.add_parser(
        "encode",
        help="encode text lines to a .npy matrix",
        description="Read one text per line and write their vectors as float32 .npy.",
    )
    e.add_argument(
        "model", nargs="?", default="all-minilm-l6-v2", help="exported (or registered) model"
    )
    e.add_argument("--input", "-i", default="-", help="text file, one text per line; - = stdin")
    e.add_argument("--output", "-o", type=output_file, required=True, help="output .npy file")
    e.add_argument(
        "--role", "--kind", dest="role", choices=("document", "query"), default="document",
        help="which side of a search the texts are on: it picks the model's text prefix",
    )  # fmt: skip
    e.add_argument("--dims", type=positive_int, help="Matryoshka prefix length (renormalized)")
    e.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    e.add_argument("--precision", choices=("auto", "fp32", "fp16", "int8"), default="auto")
    e.add_argument("--layers", type=positive_int, help="elastic depth (an exported --layers graph)")
    e.add_argument("--model-dir", type=Path, help="default: PGEMBED_MODEL_DIR")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_encode)


def _export(args: argparse.Namespace) -> int:
    from pgembed.encoders.export import export_model
    from pgembed.encoders.manifest import Manifest

    if args.model_dir is not None:  # before the (slow) export
        check_writable(args.model_dir, "--model-dir", directory=True)
    path = export_model(
        args.source,
        args.name,
        model_dir=args.model_dir,
        layers=args.layers,
        matryoshka_dims=args.matryoshka,
        max_length=args.max_length,
        query_prefix=args.query_prefix,
        document_prefix=args.document_prefix,
        opset=args.opset,
        fp16=not args.no_fp16,
        int8=not args.no_int8,
        overwrite=args.force,
    )
    m = Manifest.load(path)
    print(f"exported {m.name} to {path}")
    print(f"  dim {m.dim}, max length {m.max_length}, depths {m.depths}")
    print(f"  fingerprint {m.fingerprint}")
    return 0


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    from pgembed.encoders.encoder import Encoder

    if args.output.suffix != ".npy":
        raise ConfigError(f"--output must end in .npy, got {args.output}")
    if not args.output.parent.is_dir():
        raise ConfigError(
            f"--output folder {args.output.parent} does not exist; create it first "
            f"(mkdir -p {args.output.parent})"
        )
    check_writable(args.output, "--output")  # before the (slow) encoding
    lines = read_lines(args.input, "--input")
    enc = Encoder.load(
        args.model,
        device=args.device,
        precision=args.precision,
        layers=args.layers,
        model_dir=args.model_dir,
    )
    vecs = enc.encode(lines, role=args.role, dims=args.dims, progress=not args.no_progress)
    try:
        np.save(args.output, vecs)
    except OSError as exc:
        raise ConfigError(f"cannot write --output {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {vecs.shape[0]} x {vecs.shape[1]} float32 to {args.output}")
    print(f"  model {enc.name} ({enc.device}, {enc.precision}), fingerprint {enc.fingerprint}")
    return 0
