"""The ``pgembed`` command line: parses arguments, calls public functions, prints.

Each group of subcommands lives in ``pgembed/_cli/<group>.py`` and exposes
``register(subparsers)``, which adds its parsers with ``set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from pgembed.errors import PgembedError

_GROUPS = ("db", "models", "collections", "report")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one ``pgembed: error:`` line (exit 2), not argparse's usage block.

    Subcommand parsers are made of this class too (``add_subparsers`` uses the parent's).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pgembed: error: {_one_line(message)}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = ArgumentParser(prog="pgembed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        importlib.import_module(f"pgembed._cli.{group}").register(sub)
    return parser


def _warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    print(f"pgembed: warning: {_one_line(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: exit 0, 1 (a runtime error) or 2 (a usage error); the error is
    one ``pgembed: error: ...`` line on stderr, never a traceback (warnings: one line each)."""
    warnings.showwarning = _warning
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        rc = args.func(args)
    except PgembedError as exc:
        print(f"pgembed: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgembed: error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, with what to report
        print(
            f"pgembed: error: internal error {type(exc).__name__}: {_one_line(str(exc))[:300]}; "
            "please report it with the command that caused it",
            file=sys.stderr,
        )
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
