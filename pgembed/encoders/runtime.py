"""onnxruntime sessions: the one place that picks execution providers, and batch runs.

``select_device`` decides CUDA or CPU; ``open_session`` creates the session and reports the
device it really got (onnxruntime silently falls back to CPU when the CUDA provider cannot
start). CUDA runs use IO binding so outputs are fetched once per batch.

``device="auto"`` is silent on a machine where no GPU is visible (:func:`gpu_visible`), even
with onnxruntime-gpu installed: running on the CPU there is what was asked for. It warns
once per process (:class:`DeviceFallbackWarning`) only when a GPU is visible but CUDA cannot
start: the driver library is missing or finds no device, or onnxruntime's CUDA provider
fails to load. ``device="cuda"`` raises :class:`DeviceUnavailableError` in all those cases.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgembed.errors import ConfigError, DeviceUnavailableError, ModelError

DEVICES = ("auto", "cuda", "cpu")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


class DeviceFallbackWarning(RuntimeWarning):
    """device="auto" wanted CUDA but runs on CPU (warned once per process)."""


_warned_fallback = False


def _warn_fallback(reason: str) -> None:
    global _warned_fallback
    if _warned_fallback:
        return
    _warned_fallback = True
    warnings.warn(
        f"device='auto': {reason}; running on CPU. Pass device='cpu' to silence this.",
        DeviceFallbackWarning,
        stacklevel=4,
    )


def gpu_visible(dev: Path = Path("/dev")) -> bool:
    """Whether this process can see an NVIDIA GPU at all, asked without loading CUDA.

    False when ``CUDA_VISIBLE_DEVICES`` hides every device (set to ``""``, ``-1`` or
    ``NoDevFiles``). On Linux, True when a GPU device node exists (``/dev/nvidia0``...,
    or ``/dev/dxg`` under WSL); elsewhere, when the NVIDIA driver library loads.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None:
        first = hidden.split(",")[0].strip()
        if first in ("", "NoDevFiles") or first.startswith("-"):
            return False
    if dev.is_dir():
        return (dev / "dxg").exists() or any(
            p.name[len("nvidia") :].isdigit() for p in dev.glob("nvidia[0-9]*")
        )
    return _driver_library() is not None


def _driver_library() -> Any:
    import ctypes

    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(lib)
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Visible CUDA GPUs, asked of the driver directly (cheap; no CUDA EP load needed)."""
    import ctypes

    cuda = _driver_library()
    if cuda is None:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def select_device(device: str) -> str:
    """ "cuda" or "cpu" for a requested device; DeviceUnavailableError if CUDA is demanded."""
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    has_ep = CUDA_EP in available_providers()
    if device == "auto" and not (has_ep and gpu_visible()):
        return "cpu"  # no GPU, or a CPU-only onnxruntime: the CPU is the right device
    gpus = cuda_device_count() if has_ep else 0
    if device == "cuda":
        if not has_ep:
            raise DeviceUnavailableError(
                "device='cuda' but this onnxruntime has no CUDA provider: "
                "install onnxruntime-gpu (pip install 'pgembed[gpu]')"
            )
        if gpus == 0:
            raise DeviceUnavailableError(
                "device='cuda' but no CUDA GPU is visible (driver missing, or "
                "CUDA_VISIBLE_DEVICES hides them); use device='cpu' or 'auto'"
            )
        return "cuda"
    if gpus > 0:
        return "cuda"
    # A GPU is visible, yet the driver cannot be loaded or finds no device: say so.
    _warn_fallback(
        "a GPU is visible but CUDA cannot start (the NVIDIA driver library is missing or "
        "reports no device)"
    )
    return "cpu"


def default_threads() -> int:
    """Cores this process may use (intra-op threads = cores is fastest for one session)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def open_session(
    path: Path, device: str, *, demanded: bool, threads: int | None = None
) -> tuple[Any, str]:
    """(InferenceSession, device it runs on). ``device`` comes from :func:`select_device`.

    If CUDA was chosen but onnxruntime fell back to CPU: DeviceUnavailableError when the
    caller demanded CUDA, otherwise a one-time DeviceFallbackWarning.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    providers: list[Any] = [CPU_EP]
    if device == "cuda":
        providers = [(CUDA_EP, {"device_id": 0}), CPU_EP]
    try:
        sess = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # onnxruntime raises untyped errors for bad graphs
        raise ModelError(f"onnxruntime cannot load {path.name}: {exc}") from exc
    got = "cuda" if CUDA_EP in sess.get_providers() else "cpu"
    if device == "cuda" and got == "cpu":
        if demanded:
            raise DeviceUnavailableError(
                "device='cuda' but onnxruntime could not start its CUDA provider (check the "
                "CUDA and cuDNN libraries onnxruntime-gpu needs)"
            )
        _warn_fallback("onnxruntime could not start its CUDA provider")
    return sess, got


def run(
    sess: Any, feeds: dict[str, np.ndarray[Any, Any]], outputs: Sequence[str], device: str
) -> list[np.ndarray[Any, Any]]:
    """Run one batch. On CUDA through IO binding: inputs copied once, outputs fetched once."""
    if device != "cuda":
        result: list[np.ndarray[Any, Any]] = sess.run(list(outputs), feeds)
        return result
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name in outputs:
        binding.bind_output(name, "cuda")
    sess.run_with_iobinding(binding)
    fetched: list[np.ndarray[Any, Any]] = binding.copy_outputs_to_cpu()
    return fetched
