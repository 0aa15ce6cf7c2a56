"""Every benchmark runs at its ``--smoke`` size and ends with its JSON line, so that none rots
unnoticed (a renamed index, a changed signature, a summary printed before a note).

One case per ``benchmarks/*.py`` (helper modules named ``_*.py`` aside), found by glob: a new
benchmark is picked up without touching this file. Each runs as a subprocess on a fresh
database of the test server (PGEMBED_DATABASE_URL); those that start servers of their own
(ingest, scale_out, server_settings) do so in temporary homes. The real MiniLM is exported
once into a model folder the runs share (PGEMBED_TEST_MINILM_DIR reuses one). Marked
``bench``: together the runs take minutes, so CI runs them on their own (.ci/run).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
# What a smoke run must leave alone: the published figures and plots.
PUBLISHED = [ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.png"))]


def _stamps() -> dict[Path, tuple[int, int] | None]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in PUBLISHED}


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reuse = os.environ.get("PGEMBED_TEST_MINILM_DIR")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("bench-models")


def test_every_benchmark_is_found() -> None:
    names = {p.stem for p in SCRIPTS}
    assert {"search", "scale_out", "stress"} <= names, names


@pytest.mark.bench
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_smoke(script: Path, make_database: Any, bench_models: Path) -> None:
    env = dict(os.environ)
    env["PGEMBED_DATABASE_URL"] = make_database()
    env["PGEMBED_MODEL_DIR"] = str(bench_models)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    env["MPLBACKEND"] = "Agg"
    before = _stamps()
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"{script.name} --smoke exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script.name} printed nothing"
    last = json.loads(lines[-1])
    assert isinstance(last, dict), lines[-1]
    assert last.get("smoke") is True, last
    ratio = last.get("ratio")
    assert isinstance(ratio, int | float) and not isinstance(ratio, bool), last
    assert math.isfinite(ratio) and ratio >= 0, last
    assert isinstance(last.get("ratio_of"), str) and last["ratio_of"], last
    assert _stamps() == before, "a smoke run wrote to docs/ or RESULTS.md"
