"""Settings read from PGEMBED_* environment variables.

- ``PGEMBED_DATABASE_URL``: a libpq URI or ``key=value`` string (or a SQLAlchemy
  ``postgresql+psycopg://`` URL) of a PostgreSQL >= 14 with pgvector >= 0.8.
  Unset: pgembed starts its embedded server.
- ``PGEMBED_HOME``: pgembed's own directory (embedded server binaries, data, socket).
  Default: ``$XDG_DATA_HOME/pgembed`` (``~/.local/share/pgembed``); as root ``/var/lib/pgembed``,
  because the unprivileged server user cannot traverse root's home.
- ``PGEMBED_MODEL_DIR``: where exported ONNX models live. Default: ``onnx_models/`` of a
  source checkout, else ``PGEMBED_HOME/onnx_models``. As root, a directory that another OS
  user owns or can write (or can redirect, by a directory or link on its path) is refused.
- ``PGEMBED_PG_SETTINGS``: PostgreSQL settings for the embedded server that win over the
  ones pgembed sizes to the machine (see :func:`pgembed.server.sized_settings`), as
  comma-separated ``name=value`` pairs, for example
  ``PGEMBED_PG_SETTINGS="shared_buffers=2GB,work_mem=64MB"``. Quote a value that holds a
  comma in single quotes (``search_path='a, b'``; ``''`` is a literal quote). The server
  checks every name and value before it uses them; a bad entry is a :class:`ConfigError`
  that names it. The connection settings pgembed manages (``listen_addresses``, ``port``,
  ``unix_socket_*``, ``hba_file``, ``ident_file``, ``data_directory``, ``config_file``...)
  cannot be overridden. Applied at the embedded server's next start; settings PostgreSQL
  can reload (``work_mem``, ``maintenance_work_mem``, ...) also reach a running server the
  next time pgembed starts up against it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pgembed.errors import ConfigError


def database_url() -> str | None:
    """The configured database URL, or None for the embedded server; a malformed one (not
    parsed by libpq, or a port that is not a number) is a ConfigError."""
    from pgembed import conninfo

    url = os.environ.get("PGEMBED_DATABASE_URL", "").strip()
    if url:
        conninfo.params(url, "database URL (PGEMBED_DATABASE_URL)")
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
    """The model directory. As root, one that another OS user could change is refused
    (:func:`pgembed._fs.untrusted`): whoever writes it decides what every embedding is."""
    env = os.environ.get("PGEMBED_MODEL_DIR")
    if env:
        path = Path(env).expanduser().absolute()
    else:
        root = _checkout_root()
        path = root / "onnx_models" if root is not None else home() / "onnx_models"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        from pgembed._fs import untrusted

        why = untrusted(path)
        if why is not None:
            raise ConfigError(
                f"pgembed runs as root and will not load models from {path}: {why}. Point "
                "PGEMBED_MODEL_DIR at a directory that only root can change"
            )
    return path


# Settings that decide who can reach the embedded server and where its files are: pgembed's.
MANAGED_PG_SETTINGS = frozenset(
    {
        "listen_addresses", "port", "unix_socket_directories", "unix_socket_group",
        "unix_socket_permissions", "hba_file", "ident_file", "data_directory",
        "config_file", "external_pid_file", "ssl", "bonjour", "bonjour_name",
    }
)  # fmt: skip
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_SETTINGS_EXAMPLE = 'PGEMBED_PG_SETTINGS="shared_buffers=2GB,work_mem=64MB"'


def _split_entries(text: str) -> list[str]:
    """Split at commas outside single quotes."""
    entries: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted  # '' inside a quoted value toggles twice: still quoted
        if ch == "," and not quoted:
            entries.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise ConfigError(
            f"PGEMBED_PG_SETTINGS has an unclosed single quote in {text!r}; "
            f"close it, as in {_SETTINGS_EXAMPLE}"
        )
    entries.append("".join(current))
    return entries


def pg_settings() -> dict[str, str]:
    """PGEMBED_PG_SETTINGS as {name: value} (names lower-cased, quotes removed).

    Only the form is checked here; the embedded server checks names and values against
    PostgreSQL itself. Raises ConfigError for a malformed entry or a managed setting.
    """
    text = os.environ.get("PGEMBED_PG_SETTINGS", "")
    settings: dict[str, str] = {}
    if not text.strip():
        return settings
    for entry in _split_entries(text):
        if not entry.strip():
            continue  # a trailing comma
        name, eq, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not _SETTING_NAME.fullmatch(name) or not value:
            raise ConfigError(
                f"PGEMBED_PG_SETTINGS entry {entry.strip()!r} is not name=value; write "
                f"comma-separated PostgreSQL settings, as in {_SETTINGS_EXAMPLE}"
            )
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("''", "'")
        elif "=" in value:
            raise ConfigError(
                f"PGEMBED_PG_SETTINGS entry {entry.strip()!r} holds two settings; separate "
                f"entries with commas, as in {_SETTINGS_EXAMPLE}"
            )
        elif "'" in value:
            raise ConfigError(
                f"PGEMBED_PG_SETTINGS entry {entry.strip()!r}: quote the whole value in "
                "single quotes (a quote inside it is written '')"
            )
        name = name.lower()
        if name in MANAGED_PG_SETTINGS:
            raise ConfigError(
                f"PGEMBED_PG_SETTINGS sets {name}, which pgembed manages (the embedded server "
                "listens on its private socket only and admits only its owner); remove it, or "
                "point PGEMBED_DATABASE_URL at a server you configure yourself"
            )
        settings[name] = value
    return settings
