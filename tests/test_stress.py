"""The short form of benchmarks/stress.py: 4 writers and 8 searchers for a few seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "stress.py"


def _stress() -> Any:
    spec = importlib.util.spec_from_file_location("pgembed_stress", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_stress_run(engine: Engine, tiny_model_dir: Path, capsys: Any) -> None:
    url = engine.url.render_as_string(hide_password=False)
    result = _stress().main(
        ["--seconds", "4", "--url", url, "--model-dir", str(tiny_model_dir), "--shared-every", "2"]
    )
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith('{"benchmark": "stress"')
    assert result["writers"] == 4 and result["searchers"] == 8
    assert result["errors"] == 0, capsys.readouterr().err
    assert result["write_ops"] >= 4 and result["search_ops"] >= 8
    assert result["lost_rows"] == 0 and result["extra_rows"] == 0 and result["torn_rows"] == 0
    assert result["rows"] == result["rows_acknowledged"] > 64
    assert result["ok"] is True


def test_binary_search_on_one_bit_codes(engine: Engine, tiny_encoder: Any) -> None:
    """Regression: search_binary failed on 1-bit collections (record "lv" not assigned)."""
    from pgembed import Collection

    c = Collection(engine, "stress one bit", tiny_encoder, kinds=("binary",)).create()
    try:
        c.add(["a sentence about rain", "another about the sun", "one on snow"])
        hits = c.search("weather", k=2, strategy="binary")
        assert len(hits) == 2
    finally:
        c.drop(force=True)
