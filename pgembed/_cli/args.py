"""Argument types and the input reader shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgembed import strategies
from pgembed.errors import ConfigError, InputError

MAX_INT = 2**31 - 1  # PostgreSQL's integer


def int_in(low: int, high: int = MAX_INT) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (refused as a usage error)."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {n}")
        return n

    return parse


positive_int = int_in(1)


def checked(check: Callable[[Any], Any], convert: Callable[[str], Any] = int) -> Any:
    """An argparse type from a pgembed check (``strategies.check_k``, ``Option.check``)."""

    def parse(value: str) -> Any:
        try:
            return check(convert(value))
        except ValueError as exc:  # ConfigError is a ValueError too
            msg = str(exc) if isinstance(exc, ConfigError) else f"invalid value {value!r}"
            raise argparse.ArgumentTypeError(msg) from None

    return parse


def add_search_args(parser: argparse.ArgumentParser) -> None:
    """COLLECTION, QUERY, -k, --strategy and one flag per search option, all checked by
    pgembed.strategies (`pgembed search` and `pgembed shards search`)."""
    parser.add_argument("collection")
    parser.add_argument("query")
    parser.add_argument("-k", type=checked(strategies.check_k), default=10, help="results")
    parser.add_argument("--strategy", choices=strategies.NAMES, default="knn")
    for opt in strategies.OPTIONS.values():
        used = ", ".join(strategies.accepting(opt.name))
        parser.add_argument(
            opt.flag, dest=opt.name, type=checked(opt.check, opt.type),
            help=f"{opt.help} ({used})",
        )  # fmt: skip


def vectors_path(value: str) -> Path:
    """A ``.npy`` or ``.npz`` file name (read later, with the other input)."""
    path = Path(value)
    if path.suffix not in (".npy", ".npz"):
        raise argparse.ArgumentTypeError(
            f"expected a .npy file (pooled vectors, e.g. from `pgembed encode`) or a .npz "
            f"file (pooled, tokens, token_counts), got {value!r}"
        )
    return path


def read_vectors(path: Path) -> dict[str, Any]:
    """Precomputed encoder outputs: ``pooled`` (n, d), and from a .npz optionally
    ``tokens`` (all token vectors stacked, (sum n_i, d)) with ``token_counts`` (n,), and
    ``fingerprint`` (the encoder's, checked against the collection's)."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise InputError(
            f"cannot read --vectors {path}: {why}; give a .npy or .npz file written by numpy"
        ) from None
    if path.suffix == ".npy":
        return {"pooled": data}
    with data:
        found = {k: data[k] for k in data.files}
    unknown = sorted(set(found) - {"pooled", "tokens", "token_counts", "fingerprint"})
    if unknown or ("tokens" in found) != ("token_counts" in found):
        raise InputError(
            f"--vectors {path} holds arrays {sorted(found)}; expected 'pooled' and/or "
            "'tokens' with 'token_counts', and optionally 'fingerprint'"
        )
    out: dict[str, Any] = {"pooled": found.get("pooled")}
    if "tokens" in found:
        counts = np.asarray(found["token_counts"])
        tokens = np.asarray(found["tokens"])
        if (
            counts.ndim != 1
            or not np.issubdtype(counts.dtype, np.integer)
            or (counts < 1).any()
            or tokens.ndim != 2
            or int(counts.sum()) != tokens.shape[0]
        ):
            raise InputError(
                f"--vectors {path}: 'token_counts' must be positive integers that sum to the "
                f"rows of 'tokens' ({tokens.shape[0] if tokens.ndim == 2 else tokens.shape})"
            )
        out["tokens"] = np.split(tokens, np.cumsum(counts)[:-1])
    if "fingerprint" in found:
        out["fingerprint"] = str(found["fingerprint"])
    return out


def int_list(value: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``64,128``."""
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {value!r}"
        )
    return out


def read_lines(path: str, what: str = "input") -> list[str]:
    """The lines of a UTF-8 text file, or of stdin for ``-``.

    Lines end at "\\n" only (a "\\r" before it is dropped), never at the other characters
    that ``str.splitlines`` treats as breaks (form feed, U+2028...): ``pgembed encode`` and
    ``pgembed ingest`` read through here, so line i of a file is row i and id i in both.
    """
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read {what} {path}: {exc.strerror or exc}; give a readable text file, "
            "or - for stdin"
        ) from None
    source = "stdin" if path == "-" else path
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{what} {source} is not UTF-8 text (invalid byte at line {line}); give a text "
            "file, converted to UTF-8 (iconv -t UTF-8)"
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines):
        if "\x00" in line:
            raise InputError(
                f"{what} {source} holds a NUL byte at line {i + 1}, so it is not a text file; "
                "give one text per line"
            )
    return [line.removesuffix("\r") for line in lines]


def output_file(value: str) -> Path:
    """An argparse type: a file the command writes (checked by :func:`check_writable`
    before the work; the bad-arguments tests find output options by this type)."""
    return Path(value)


def output_dir(value: str) -> Path:
    """An argparse type: a directory the command writes into (see :func:`output_file`)."""
    return Path(value)


def check_writable(path: Path, flag: str, *, directory: bool = False) -> Path:
    """Refuse an output path that cannot be written, before the work that fills it: an
    existing one of the wrong type, or one whose nearest existing ancestor is not a
    directory that takes a new file (tried for real: permissions, read-only file systems
    and root alike)."""
    if path.exists() and not (path.is_dir() if directory else path.is_file()):
        kind = "a directory" if directory else "a file"
        raise ConfigError(f"{flag} {path}: it exists and is not {kind}; give another path")
    ancestor = path if directory and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    why = None
    if not ancestor.is_dir():
        why = f"{ancestor} is not a directory"
    else:
        try:
            if path.is_file():
                with path.open("ab"):
                    pass
            else:
                tempfile.TemporaryFile(dir=ancestor).close()
        except OSError as exc:
            why = str(exc.strerror or exc)
    if why is not None:
        raise ConfigError(f"{flag} {path} cannot be written ({why}); give a writable path")
    return path
