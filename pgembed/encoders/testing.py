"""Tiny random models for tests (needs the ``export`` extra: torch, transformers).

A seeded 4-layer, 32-dim BERT with the real MiniLM vocabulary (so the real tokenizer.json
works), exported in a few seconds::

    from pgembed.encoders.testing import export_tiny
    root = export_tiny(tmp_path)                      # -> tmp_path/"tiny-bert"/ exported
    enc = Encoder.load("tiny-bert", device="cpu", model_dir=tmp_path)
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from pgembed.encoders import manifest as mf
from pgembed.encoders.registry import DEFAULT_MODEL, get_spec

TINY_NAME = "tiny-bert"

# Short and mid-length texts with punctuation, digits and accents.
SAMPLE_TEXTS = [
    "Hello world.",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "hi",
    "PostgreSQL with pgvector stores embeddings next to the rows they describe, "
    "so a search is a plain SQL query with an ORDER BY on a distance operator.",
    "Naïve café owners in Zürich paid 3.50 CHF for 12 croissants!",
]


def build_tiny_bert(
    directory: str | Path,
    *,
    layers: int = 4,
    hidden: int = 32,
    heads: int = 4,
    intermediate: int = 64,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a seeded random BertModel plus MiniLM's tokenizer.json into ``directory``."""
    import torch
    from transformers import BertConfig, BertModel

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = get_spec(DEFAULT_MODEL).source_dir() / mf.TOKENIZER
    cfg = BertConfig(
        vocab_size=30522,  # the MiniLM / bert-base-uncased vocabulary
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = BertModel(cfg, add_pooling_layer=False)
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(str(out))
    shutil.copyfile(tokenizer, out / mf.TOKENIZER)
    return out


def export_tiny(
    model_dir: str | Path,
    name: str = TINY_NAME,
    *,
    depths: Sequence[int] = (2,),
    max_length: int = 64,
    source_dir: str | Path | None = None,
    query_prefix: str = "query: ",
    document_prefix: str = "",
    fp16: bool = True,
    int8: bool = True,
) -> Path:
    """Build (unless ``source_dir`` holds one) and export a tiny BERT to ``model_dir/name``.

    The source is kept in ``model_dir/.tiny-src`` (ignored by the model listing) for torch
    comparisons; returns the exported directory.
    """
    from pgembed.encoders.export import export_model

    root = Path(model_dir)
    src = Path(source_dir) if source_dir is not None else root / ".tiny-src"
    if not (src / "config.json").is_file():
        build_tiny_bert(src)
    return export_model(
        src,
        name,
        model_dir=root,
        layers=depths,
        max_length=max_length,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        fp16=fp16,
        int8=int8,
        progress=False,
    )


def gensim_sentences(limit: int) -> list[str]:
    """Real sentences of varied length from gensim's Lee background corpus."""
    import gensim

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    out: list[str] = []
    for doc in path.read_text(encoding="utf-8", errors="replace").splitlines():
        out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", doc) if len(s.strip()) > 3)
    return out[:limit]
