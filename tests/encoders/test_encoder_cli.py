"""`pgembed export` and `pgembed encode` through the real command line entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgembed.cli import main
from pgembed.encoders.encoder import Encoder
from pgembed.encoders.testing import SAMPLE_TEXTS as SAMPLE
from pgembed.encoders.testing import TINY_NAME


def test_cli_export(tiny_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "export", str(tiny_source), "--name", "cli-tiny", "--model-dir", str(tmp_path),
            "--layers", "1,3", "--matryoshka", "8,16", "--no-fp16", "--no-int8",
        ]
    )  # fmt: skip
    assert rc == 0
    manifest = json.loads((tmp_path / "cli-tiny" / "manifest.json").read_text())
    assert manifest["depths"] == [1, 3, 4] and manifest["matryoshka_dims"] == [8, 16]
    assert "fingerprint" in capsys.readouterr().out
    assert main(["export", str(tiny_source), "--name", "cli-tiny", "--model-dir", str(tmp_path)])
    assert "--force" in capsys.readouterr().err


def test_cli_encode(tiny_root: Path, tmp_path: Path, tiny: Encoder) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(SAMPLE) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    argv = ["encode", TINY_NAME, "--model-dir", str(tiny_root), "--input", str(src)]
    rc = main([*argv, "--output", str(out), "--device", "cpu", "--role", "query", "--dims", "8"])
    assert rc == 0
    np.testing.assert_allclose(np.load(out), tiny.encode(SAMPLE, role="query", dims=8), atol=1e-6)


def test_cli_errors(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\n\nthree\n", encoding="utf-8")
    base = ["--model-dir", str(tiny_root), "--input", str(src), "--output", str(tmp_path / "o.npy")]
    assert main(["encode", "nope", *base]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["encode", TINY_NAME, "--device", "cpu", *base]) == 1
    assert "index 1 is empty" in capsys.readouterr().err
