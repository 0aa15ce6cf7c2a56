"""Bad input: every case is a clear PgembedError subclass or a documented warning."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from pgembed.encoders.encoder import Encoder
from pgembed.encoders.export import export_model
from pgembed.encoders.registry import default_matryoshka_dims, get_spec
from pgembed.encoders.testing import TINY_NAME
from pgembed.encoders.tokenize import TruncationWarning
from pgembed.errors import (
    ConfigError,
    DimensionError,
    EmptyInputError,
    ExportError,
    FingerprintMismatchError,
    InputError,
    ModelError,
    UnknownModelError,
)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        (["fine", ""], EmptyInputError, "index 1"),
        (["fine", "ok", "   \n"], EmptyInputError, "index 2"),
        (["fine", 3], InputError, "index 1"),
        ([None], InputError, "index 0"),
        (["fine", "\x00\x01"], EmptyInputError, "index 1.*no tokens"),
        ("a bare string", InputError, "wrap it in a list"),
    ],
)
def test_bad_texts(tiny: Encoder, texts: object, error: type[Exception], match: str) -> None:
    for call in (tiny.encode, tiny.encode_tokens, tiny.encode_both):
        with pytest.raises(error, match=match):
            call(texts)  # type: ignore[operator]


def test_streamed_errors_name_the_global_index(tiny: Encoder) -> None:
    texts = ["a", "b", "c", "d", ""]
    with pytest.raises(EmptyInputError, match="index 4"):
        list(tiny.iter_encode(iter(texts), chunk_size=2))


def test_long_texts_truncated_with_one_warning(tiny: Encoder) -> None:
    long = "word " * 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tiny.encode([long, "short", long + "x", "fine"], token_budget=64)
    assert out.shape == (4, 32)
    msgs = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
    assert msgs == ["2 of 4 texts were longer than max_length=64 tokens and were truncated"]
    with pytest.warns(TruncationWarning, match="1 of 1"):
        tokens = tiny.encode_tokens([long], drop_special=False)
    assert tokens[0].shape[0] == 64


def test_dims_out_of_range(tiny: Encoder) -> None:
    for dims in (33, 0, -1):
        with pytest.raises(DimensionError, match=r"outside 1\.\.32"):
            tiny.encode(["x"], dims=dims)
    with pytest.raises(DimensionError):
        tiny.encode_both(["x"], dims=64)
    with pytest.raises(DimensionError):
        tiny.iter_encode(["x"], dims=64)  # at the call, not at the first next()


def test_bad_role_and_options(tiny: Encoder, tiny_root: Path) -> None:
    with pytest.raises(ConfigError, match="role must be 'document' or 'query'"):
        tiny.encode(["x"], role="passage")
    with pytest.raises(ConfigError, match="device"):
        Encoder.load(TINY_NAME, device="tpu", model_dir=tiny_root)
    with pytest.raises(ConfigError, match="precision"):
        Encoder.load(TINY_NAME, precision="bf16", model_dir=tiny_root)
    with pytest.raises(ModelError, match="no 3-layer graph"):
        Encoder.load(TINY_NAME, device="cpu", layers=3, model_dir=tiny_root)


def test_registry() -> None:
    assert default_matryoshka_dims(384) == (64, 128, 256)
    assert default_matryoshka_dims(768) == (128, 256, 512)
    assert default_matryoshka_dims(32) == (4, 8, 16)
    spec = get_spec("all-minilm-l6-v2")
    assert spec.dim == 384 and spec.matryoshka_dims == (64, 128, 256)
    with pytest.raises(UnknownModelError, match=r"available: .*all-minilm-l6-v2"):
        get_spec("bert-huge")
    with pytest.raises(AttributeError):
        spec.dim = 3  # type: ignore[misc]  # frozen


def test_unknown_model_lists_available(tiny_root: Path) -> None:
    with pytest.raises(UnknownModelError, match=r"available: all-minilm-l6-v2, tiny-bert"):
        Encoder.load("no-such-model", device="cpu", model_dir=tiny_root)
    with pytest.raises(UnknownModelError, match="no-such-dir"):
        export_model("no-such-dir", model_dir=tiny_root, progress=False)


@pytest.mark.parametrize("victim", ["model.onnx", "model.int8.onnx", "tokenizer.json"])
def test_tampered_files_are_refused(tiny_root: Path, tmp_path: Path, victim: str) -> None:
    shutil.copytree(tiny_root / TINY_NAME, tmp_path / TINY_NAME)
    with (tmp_path / TINY_NAME / victim).open("ab") as f:
        f.write(b" ")
    precision = "int8" if "int8" in victim else "fp32"
    with pytest.raises(FingerprintMismatchError, match=victim.replace(".", r"\.")):
        Encoder.load(TINY_NAME, device="cpu", precision=precision, model_dir=tmp_path)


# The device choice (auto, cuda, the fallback warning): tests/encoders/test_device_choice.py


def test_export_refuses_to_overwrite_and_bad_depths(tiny_root: Path, tiny_source: Path) -> None:
    with pytest.raises(ExportError, match="exists"):
        export_model(tiny_source, TINY_NAME, model_dir=tiny_root, overwrite=False)
    with pytest.raises(ExportError, match=r"layers must be in 1\.\.4"):
        export_model(tiny_source, "bad", model_dir=tiny_root, layers=[9], progress=False)
    assert not (tiny_root / "bad").exists()
    assert not [p for p in tiny_root.iterdir() if p.name.startswith(".bad")]
