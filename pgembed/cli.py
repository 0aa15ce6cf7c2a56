"""pgembed: text embeddings in PostgreSQL, from the command line.

Ingest texts into a collection (one table) with any mix of vector kinds (single vectors,
Matryoshka prefixes, binary codes, multi-vector tokens and their FDEs), keep it in sync
with edited rows, and search it with every strategy; the database is your PostgreSQL
(PGEMBED_DATABASE_URL) or an embedded one that pgembed starts on demand.
"""

# For developers: this module parses arguments, calls public functions and prints. Each
# group of subcommands lives in ``pgembed/_cli/<group>.py`` and exposes
# ``register(subparsers)``, which adds its parsers with ``set_defaults(func=...)``.

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from pgembed.errors import PgembedError

_GROUPS = ("db", "models", "collections", "search", "shards", "report", "grant")

_EXAMPLES = """\
examples:
  pgembed quickstart                    build a sample collection and measure every strategy
  pgembed ingest docs texts.txt         embed one text per line into collection "docs"
  pgembed search docs "a query"         the 10 best rows of "docs", with their text
  pgembed search docs "a query" --json  the same as JSON lines, for scripts
  pgembed <command> --help              the options of one command
"""


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

    parser = ArgumentParser(
        prog="pgembed",
        description=__doc__,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=version(), help="print the versions and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        importlib.import_module(f"pgembed._cli.{group}").register(sub)
    return parser


def version() -> str:
    """The package's version and the version of the SQL functions it installs."""
    from importlib import metadata

    import pgembed

    try:
        package = metadata.version("pgembed")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        package = pgembed.__version__
    stale = ""
    if package != pgembed.__version__:  # an editable install made before a version bump
        stale = f"; the code is {pgembed.__version__}: reinstall pgembed to refresh its metadata"
    return f"pgembed {package} (SQL {sql_version()}{stale})"


def sql_version() -> str:
    """The newest full install script shipped, ``pgembed--X.Y.Z.sql``: what upgrade installs."""
    import re
    from importlib import resources

    found = [
        m.group(1)
        for f in resources.files("pgembed").joinpath("sql").iterdir()
        if (m := re.fullmatch(r"pgembed--(\d+(?:\.\d+)*)\.sql", f.name))
    ]
    return max(found, key=lambda v: tuple(int(x) for x in v.split("."))) if found else "unknown"


def _warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    print(f"pgembed: warning: {_one_line(str(message))}", file=sys.stderr)


def _database_error(exc: Exception) -> PgembedError | None:
    from pgembed.db import error_for

    return error_for(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: exit 0, 1 (a runtime error) or 2 (a usage error); the error is
    one ``pgembed: error: ...`` line on stderr, never a traceback (warnings: one line each)."""
    try:
        rc = _main(argv)
        if sys.stdout is not None:  # None when started with fd 1 closed
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:  # also from argparse's --help and --version
        return _stdout_closed()
    return rc


def _main(argv: Sequence[str] | None) -> int:
    warnings.showwarning = _warning
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        rc = args.func(args)
    except BrokenPipeError:
        raise
    except PgembedError as exc:
        # the database's own messages carry their source ("pgembed: ..."): once is enough
        text = _one_line(str(exc)).removeprefix("pgembed: ")
        print(f"pgembed: error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgembed: error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, with what to report
        if isinstance(exc.__context__, BrokenPipeError):  # raised while handling one
            raise exc.__context__ from None
        if hasattr(exc, "orig") and (known := _database_error(exc)) is not None:
            print(
                f"pgembed: error: {_one_line(str(known)).removeprefix('pgembed: ')}",
                file=sys.stderr,
            )
            return 1
        print(
            f"pgembed: error: internal error {type(exc).__name__}: {_one_line(str(exc))[:300]}; "
            "please report it with the command that caused it",
            file=sys.stderr,
        )
        return 1
    return int(rc or 0)


def _stdout_closed() -> int:
    """The reader of stdout went away (``pgembed ... | head -1``): stop quietly, as Python's
    documentation recommends: stdout goes to devnull so that the flush at exit cannot
    fail again, and the exit status is 1 (Python's own on EPIPE)."""
    if sys.stdout is not None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    sys.exit(main())
