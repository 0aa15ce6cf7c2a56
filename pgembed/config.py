"""Settings read from PGEMBED_* environment variables.

- ``PGEMBED_DATABASE_URL``: a SQLAlchemy/libpq URL of a PostgreSQL >= 14 with pgvector >= 0.8.
  Unset: pgembed starts its embedded server.
- ``PGEMBED_HOME``: pgembed's own directory (embedded server binaries, data, socket).
  Default: ``$XDG_DATA_HOME/pgembed`` (``~/.local/share/pgembed``); as root ``/var/lib/pgembed``,
  because the unprivileged server user cannot traverse root's home.
- ``PGEMBED_MODEL_DIR``: where exported ONNX models live. Default: ``onnx_models/`` of a
  source checkout, else ``PGEMBED_HOME/onnx_models``.
"""

from __future__ import annotations

import os
from pathlib import Path


def database_url() -> str | None:
    """The configured database URL, or None for the embedded server."""
    url = os.environ.get("PGEMBED_DATABASE_URL", "").strip()
    return url or None


def home() -> Path:
    env = os.environ.get("PGEMBED_HOME")
    if env:
        return Path(env).expanduser().absolute()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/pgembed")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "pgembed"


def _checkout_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "onnx_models").is_dir():
        return root
    return None


def model_dir() -> Path:
    env = os.environ.get("PGEMBED_MODEL_DIR")
    if env:
        return Path(env).expanduser().absolute()
    root = _checkout_root()
    if root is not None:
        return root / "onnx_models"
    return home() / "onnx_models"
