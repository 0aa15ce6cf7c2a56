"""Exporting: a sentence-transformers directory (pooling, prompts, length), re-exports."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pgembed.encoders import export
from pgembed.encoders.encoder import Encoder
from pgembed.encoders.export import export_model
from pgembed.encoders.testing import SAMPLE_TEXTS
from pgembed.encoders.tokenize import TruncationWarning
from pgembed.errors import ExportError


def test_sentence_transformers_dir_with_cls_pooling(
    tiny_source: Path, tiny_torch: Any, tmp_path: Path
) -> None:
    import torch

    src = tmp_path / "st-model"
    shutil.copytree(tiny_source, src)
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
    ]
    (src / "modules.json").write_text(json.dumps(modules))
    (src / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    (src / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "q: ", "document": "d: "}})
    )
    root = tmp_path / "models"
    out = export_model(src, model_dir=root, matryoshka_dims=[8], fp16=False, progress=False)
    assert out == root / "st-model"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pooling"] == "cls" and manifest["max_length"] == 16
    assert (manifest["query_prefix"], manifest["document_prefix"]) == ("q: ", "d: ")
    assert manifest["matryoshka_dims"] == [8]
    assert "model.fp16.onnx" not in manifest["graphs"]

    enc = Encoder.load("st-model", device="cpu", model_dir=root)
    texts = list(SAMPLE_TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        got = enc.encode(texts)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    for text, vec in zip(texts, got, strict=True):
        ids = torch.tensor([tok.encode("d: " + text).ids])
        assert ids.shape[1] <= 16
        with torch.no_grad():
            cls = tiny_torch(input_ids=ids).last_hidden_state[0, 0].numpy()
        np.testing.assert_allclose(vec, cls / np.linalg.norm(cls), atol=1e-5)


def test_truncation_warning_points_at_the_caller(tiny: Encoder) -> None:
    with pytest.warns(TruncationWarning) as record:
        tiny.encode(["word " * 100])
    assert record[0].filename == __file__
    with pytest.warns(TruncationWarning) as record:
        tiny.encode_both(["word " * 100])
    assert record[0].filename == __file__
    with pytest.warns(TruncationWarning) as record:
        list(tiny.iter_encode(["word " * 100]))
    assert record[0].filename == __file__


def test_reexport_swaps_in_place_and_a_failed_one_leaves_no_trace(
    tiny_source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "models"

    def run(name: str, prefix: str, progress: bool = False) -> Path:
        return export_model(
            tiny_source, name, model_dir=root, query_prefix=prefix,
            fp16=False, int8=False, progress=progress,
        )  # fmt: skip

    def prefix(name: str) -> str:
        return str(json.loads((root / name / "manifest.json").read_text())["query_prefix"])

    run("t", "a: ")
    capsys.readouterr()
    assert run("t", "b: ", progress=True) == root / "t"  # replaces the first export
    assert prefix("t") == "b: "
    err = capsys.readouterr().err
    assert "export t" in err and "3/3" in err and "manifest" in err  # one bar, one per step
    assert [p.name for p in root.iterdir()] == ["t"]  # neither temp nor old dir is left

    # Fail validation after the first graph is written: nothing changes on disk.
    monkeypatch.setitem(export.THRESHOLDS, "fp32", 1.5)
    for name in ("t", "u"):
        with pytest.raises(ExportError, match=r"model\.onnx disagrees with torch"):
            run(name, "c: ")
    assert prefix("t") == "b: "
    assert [p.name for p in root.iterdir()] == ["t"]
