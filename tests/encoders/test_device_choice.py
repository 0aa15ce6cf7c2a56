"""device="auto" / "cuda": silent on CPU-only machines, one warning when a visible GPU fails.

Real onnxruntime sessions throughout; only the GPU-visibility probe is replaced where a test
needs a machine that sees a GPU (or none) regardless of the one it runs on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pgembed.encoders import runtime
from pgembed.encoders.encoder import Encoder
from pgembed.encoders.testing import TINY_NAME
from pgembed.errors import DeviceUnavailableError

has_cuda_ep = runtime.CUDA_EP in runtime.available_providers()
no_gpu = pytest.mark.skipif(runtime.cuda_device_count() > 0, reason="a CUDA GPU is present")
gpu_build_without_gpu = pytest.mark.skipif(
    runtime.cuda_device_count() > 0 or not has_cuda_ep,
    reason="needs onnxruntime-gpu on a machine where CUDA finds no GPU",
)


def _fallback_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, runtime.DeviceFallbackWarning)]


@pytest.fixture(autouse=True)
def _fresh_warning_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_warned_fallback", False)  # the warning is once per process


@pytest.mark.parametrize(
    ("nodes", "cuda_visible_devices", "visible"),
    [
        ([], None, False),
        (["nvidiactl", "nvidia-uvm"], None, False),  # driver nodes, no GPU
        (["nvidia0"], None, True),
        (["nvidiactl", "nvidia3"], None, True),
        (["dxg"], None, True),  # WSL
        (["nvidia0"], "", False),
        (["nvidia0"], "-1", False),
        (["nvidia0"], "NoDevFiles", False),
        (["nvidia0"], "0", True),
        (["nvidia0"], "GPU-5c3f", True),
        ([], "0", False),
    ],
)
def test_gpu_visible_probe(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nodes: list[str],
    cuda_visible_devices: str | None,
    visible: bool,
) -> None:
    for name in nodes:
        (tmp_path / name).touch()
    if cuda_visible_devices is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cuda_visible_devices)
    assert runtime.gpu_visible(tmp_path) is visible


def test_auto_is_silent_when_no_gpu_is_visible(
    tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert runtime.select_device("auto") == "cpu"
        enc = Encoder.load(TINY_NAME, model_dir=tiny_root)
        enc.encode(["a quiet start"])
    assert enc.device == "cpu"
    assert _fallback_warnings(caught) == []


@pytest.mark.skipif(runtime.gpu_visible(), reason="this machine sees a GPU")
def test_auto_is_silent_on_this_cpu_only_machine(tiny_root: Path) -> None:
    """The default install (onnxruntime-gpu where installed) on a machine with no GPU."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = Encoder.load(TINY_NAME, model_dir=tiny_root)
    assert enc.device == "cpu" and enc.precision == "fp32"
    assert _fallback_warnings(caught) == []


def test_cuda_visible_devices_hides_the_gpu_silently(
    tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = Encoder.load(TINY_NAME, model_dir=tiny_root)
    assert enc.device == "cpu"
    assert _fallback_warnings(caught) == []


@gpu_build_without_gpu
def test_visible_gpu_that_cuda_cannot_start_warns_once(
    tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "gpu_visible", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = Encoder.load(TINY_NAME, model_dir=tiny_root)
        b = Encoder.load(TINY_NAME, model_dir=tiny_root)
    assert a.device == b.device == "cpu" and a.precision == "fp32"
    messages = _fallback_warnings(caught)
    assert len(messages) == 1, messages
    assert "GPU is visible but CUDA cannot start" in messages[0]
    assert "device='cpu'" in messages[0]  # says how to silence it


@gpu_build_without_gpu
def test_cuda_provider_that_fails_to_start(tiny_root: Path) -> None:
    """onnxruntime asked for its CUDA provider on a machine where it cannot start."""
    model = tiny_root / TINY_NAME / "model.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess, got = runtime.open_session(model, "cuda", demanded=False)
        runtime.open_session(model, "cuda", demanded=False)
    assert got == "cpu" and runtime.CUDA_EP not in sess.get_providers()
    messages = _fallback_warnings(caught)
    assert len(messages) == 1 and "could not start its CUDA provider" in messages[0]
    with pytest.raises(DeviceUnavailableError, match="could not start its CUDA provider"):
        runtime.open_session(model, "cuda", demanded=True)


@no_gpu
@pytest.mark.parametrize("visible", [False, True])
def test_cuda_demanded_without_gpu_raises(
    tiny_root: Path, monkeypatch: pytest.MonkeyPatch, visible: bool
) -> None:
    monkeypatch.setattr(runtime, "gpu_visible", lambda: visible)
    with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
        runtime.select_device("cuda")
    with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
        Encoder.load(TINY_NAME, device="cuda", model_dir=tiny_root)
