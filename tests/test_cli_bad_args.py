"""Every `pgembed` subcommand, found by walking the parser, on a matrix of bad arguments.

Each run must exit 1 (a runtime error) or 2 (a usage error) with exactly one
`pgembed: error:` line on stderr (the last line; any other is a one-line warning) and no
traceback. The rows are derived from each subcommand's own arguments: an unknown option,
extra positionals, missing required arguments, and for every typed option the values its
type refuses. Runtime rows use one prepared database and collection (module fixture).
Most rows fail while parsing, before a model or the database is touched, so the matrix stays
fast; the runs of one subcommand go in parallel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, migrate
from pgembed._cli.args import output_dir, output_file
from pgembed.cli import build_parser

NAME = "cli bad args"
Row = tuple[str, list[str], dict[str, str], int | None]  # id, argv, env, expected exit code


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Any]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


LEAVES = dict(_leaves(build_parser()))


def test_the_parser_has_every_group() -> None:
    names = {" ".join(p) for p in LEAVES}
    assert {"ingest", "search", "sync", "stats", "encode", "export", "db upgrade"} <= names
    assert len(names) >= 15


@pytest.fixture(scope="module")
def prepared(make_database: Any, tiny_encoder: Any, tiny_model_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One database at pgembed's head with a small collection, and the env of every run."""
    url = make_database()
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    Collection(engine, NAME, tiny_encoder).create().add(["rain in spring", "snow in winter"])
    tmp = tmp_path_factory.mktemp("cli-bad-args")
    text = tmp / "in.txt"
    text.write_text("one text\n")
    env = {
        **os.environ,
        "PGEMBED_DATABASE_URL": url,
        "PGEMBED_MODEL_DIR": str(tiny_model_dir),
        "PGEMBED_HOME": str(tmp / "home"),  # a server of its own, should anything start one
    }
    yield {"engine": engine, "env": env, "text": str(text), "tmp": tmp}
    engine.dispose()


def _valid(dest: str, prepared: dict[str, Any]) -> str:
    """A good value for a positional, so that only the row's own defect is wrong."""
    return {"collection": NAME, "query": "rain", "input": prepared["text"],
            "model": "tiny-bert", "source": "tiny-bert", "revision": "head",
            "role": "pg_read_all_data"}[dest]  # fmt: skip


def _refused(action: argparse.Action, value: str) -> bool:
    try:
        if action.choices is not None:
            return value not in action.choices
        assert callable(action.type)
        action.type(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True
    return False


def _rows(
    path: tuple[str, ...], parser: argparse.ArgumentParser, prep: dict[str, Any]
) -> list[Row]:
    env = prep["env"]
    positionals = [a for a in parser._actions if not a.option_strings]
    required = [a for a in positionals if a.nargs is None]
    req_opts = [a for a in parser._actions if a.option_strings and a.required]
    base = [*path, *(_valid(a.dest, prep) for a in required)]
    for a in req_opts:
        base += [a.option_strings[0], str(prep["tmp"] / "out.npy")]
    rows: list[Row] = []
    if parser.get_default("passthrough"):  # its other arguments belong to the wrapped tool
        rows.append(("malformed database URL", list(path),
                     {**env, "PGEMBED_DATABASE_URL": "not a url"}, 1))  # fmt: skip
        return rows
    rows.append(("unknown option", [*base, "--no-such-option"], env, 2))
    rows.append(("extra positionals", [*base, "extra-1", "extra-2", "extra-3"], env, 2))
    if required or req_opts:
        rows.append(("missing required arguments", list(path), env, 2))
    for a in parser._actions:
        if not a.option_strings or a.nargs == 0 or (a.type is None and a.choices is None):
            continue
        assert a.type is not int, f"{' '.join(path)} {a.option_strings[0]}: use a checked type"
        flag = a.option_strings[-1]
        for value in ("abc", "-5", "0", "2147483648", "1.5"):
            if _refused(a, value):
                rows.append((f"{flag} {value}", [*base, flag, value], env, 2))
        rows.append((f"{flag} without a value", [*base, flag], env, 2))
    for a in positionals:  # a well-formed value that names nothing
        bad = {"collection": "no such collection", "input": "/nonexistent/texts.txt",
               "model": "no-such-model", "source": "/nonexistent/model-dir",
               "revision": "no-such-revision"}.get(a.dest)  # fmt: skip
        if bad is None or (path == ("ingest",) and a.dest == "collection"):
            continue  # ingest creates an unknown collection
        good = _valid(a.dest, prep)
        argv = [bad if x == good else x for x in base] if a in required else [*base, bad]
        rows.append((f"{a.dest} {bad!r}", argv, env, 1))
    for a in parser._actions:  # outputs: refused before any work when they cannot be written
        if a.type in (output_file, output_dir):
            flag = a.option_strings[-1]
            for why, target in _unwritable(prep, directory=a.type is output_dir):
                argv = [*base, flag, target]
                if a.required:  # in place of the good value that base holds
                    argv = list(base)
                    argv[base.index(a.option_strings[0]) + 1] = target
                rows.append((f"{flag} {why}", argv, env, 1))
    return rows


def _unwritable(prep: dict[str, Any], *, directory: bool) -> list[tuple[str, str]]:
    """Output paths no one can write, root included (the tests may run as root)."""
    text = prep["text"]
    rows = [
        ("under a file", f"{text}/out.npy"),
        ("a device", os.devnull),
        ("on /proc", "/proc/pgembed-test" if directory else "/proc/out.npy"),
    ]
    if directory:
        rows.append(("a file", text))
    if os.geteuid() != 0:  # permissions hold for others only
        locked = prep["tmp"] / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        rows.append(("in a read-only directory", str(locked / ("out" if directory else "out.npy"))))
    return rows


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgembed.cli", *argv], env=env, input="",
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("path", list(LEAVES), ids=[" ".join(p) for p in LEAVES])
def test_bad_arguments(path: tuple[str, ...], prepared: dict[str, Any]) -> None:
    rows = _rows(path, LEAVES[path], prepared)
    before = _catalog(prepared["engine"])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: _run(r[1], r[2]), rows))
    failures = []
    for (row, argv, _, rc), out in zip(rows, results, strict=True):
        lines = out.stderr.splitlines()
        ok = (
            out.returncode == rc
            and "Traceback" not in out.stderr
            and bool(lines)
            and lines[-1].startswith("pgembed: error: ")
            and "internal error" not in lines[-1]
            and sum(line.startswith("pgembed: error:") for line in lines) == 1
            and all(line.startswith("pgembed: warning: ") for line in lines[:-1])
        )
        if not ok:
            failures.append(f"{row}: pgembed {' '.join(argv)} -> {out.returncode}\n{out.stderr}")
    assert not failures, "\n".join(failures)
    assert _catalog(prepared["engine"]) == before  # nothing written
    assert not (prepared["tmp"] / "out.npy").exists()


def _catalog(engine: Engine) -> tuple[Any, ...]:
    queries = (
        "SELECT name FROM pgembed.collections ORDER BY 1",
        f'SELECT id, content FROM "{NAME}" ORDER BY 1',
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        "SELECT collection, strategy FROM pgembed.calibrations ORDER BY 1, 2",
    )
    with engine.connect() as conn:
        return tuple(tuple(conn.execute(sa.text(q)).all()) for q in queries)


# --- a closed stdout: `pgembed ... | head -1` ------------------------------------------------


@pytest.fixture(scope="module")
def piped(make_database: Any, tiny_encoder: Any, tiny_model_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # fmt: skip
    """A database of its own (the runs below write: ingest, calibrate...), set up alike."""
    url = make_database()
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    Collection(engine, NAME, tiny_encoder).create().add(["rain in spring", "snow in winter"])
    tmp = tmp_path_factory.mktemp("cli-piped")
    text = tmp / "in.txt"
    text.write_text("one text\n")
    models = tmp / "models"  # a copy: nothing here may write into the session's models
    shutil.copytree(tiny_model_dir, models)
    env = {**os.environ, "PGEMBED_DATABASE_URL": url, "PGEMBED_MODEL_DIR": str(models),
           "PGEMBED_HOME": str(tmp / "home")}  # fmt: skip
    yield {"engine": engine, "env": env, "text": str(text), "tmp": tmp}
    engine.dispose()


def _run_closed(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is gone before the command starts."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "pgembed.cli", *argv], env=env, input="",
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
                              check=False)  # fmt: skip
    finally:
        os.close(write)


# Not run with good arguments (their parsers still run, with --help): quickstart reads a
# corpus from the network, export converts a model for a minute before it prints.
_NO_RUN = {("quickstart",), ("export",)}


@pytest.mark.parametrize("path", list(LEAVES), ids=[" ".join(p) for p in LEAVES])
def test_closed_stdout(path: tuple[str, ...], piped: dict[str, Any]) -> None:
    """Every subcommand, run with good arguments, once with a reader and once into a closed
    pipe: what printed now stops quietly at its first line (exit 1, no error line; argparse's
    --help exits 0); what printed nothing ends alike; never a traceback or an internal
    error."""
    parser = LEAVES[path]
    rows = [("--help", [*path, "--help"])]
    if path not in _NO_RUN and not parser.get_default("passthrough"):
        positionals = [a for a in parser._actions if not a.option_strings]  # "?" ones too
        argv = [*path, *(_valid(a.dest, piped) for a in positionals)]
        for a in parser._actions:
            if a.option_strings and a.required:
                argv += [a.option_strings[0], str(piped["tmp"] / "out.npy")]
        rows.append(("run", argv))
    failures = []
    for row, argv in rows:
        with ThreadPoolExecutor(2) as pool:
            normal_run = pool.submit(_run, argv, piped["env"])
            closed = _run_closed(argv, piped["env"])
            normal = normal_run.result()
        printed = bool(normal.stdout.strip())
        bad = [m for m in ("Traceback", "internal error", "Exception ignored", "Broken pipe")
               if m in closed.stderr]  # fmt: skip
        if printed:
            want = closed.returncode in (0, 1) and "pgembed: error" not in closed.stderr
            want = want and (row == "--help" or closed.returncode == 1)
        else:
            want = closed.returncode == normal.returncode
        if bad or not want:
            failures.append(f"{row}: pgembed {' '.join(argv)}: reader -> {normal.returncode}, "
                            f"closed -> {closed.returncode}\n{closed.stderr}")  # fmt: skip
    assert not failures, "\n".join(failures)


def test_plot_into_a_directory(piped: dict[str, Any], tmp_path: Path) -> None:
    """--plot DIR writes <collection>-calibration.png inside DIR and prints that path."""
    out = _run(["calibrate", NAME, "--sample", "2", "-k", "1", "--plot", str(tmp_path)],
               piped["env"])  # fmt: skip
    assert out.returncode == 0, out.stderr
    png = tmp_path / "cli_bad_args-calibration.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in out.stdout.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == [png.name]
