"""The ``pgembed`` command line: parses arguments, calls public functions, prints.

Each group of subcommands lives in ``pgembed/_cli/<group>.py`` and exposes
``register(subparsers)``, which adds its parsers with ``set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pgembed.errors import PgembedError

_GROUPS = ("db", "models", "collections", "report")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="pgembed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        importlib.import_module(f"pgembed._cli.{group}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        rc = args.func(args)
    except PgembedError as exc:
        print(f"pgembed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgembed: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
