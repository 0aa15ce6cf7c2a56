"""Link roles: roles that may log in to an embedded server with a password.

The embedded server admits one OS user by peer authentication. A coordinator's postgres_fdw
connects to a shard from the coordinator server's own process, whose OS user is the server
user (``nobody`` when pgembed runs as root), so an embedded shard refuses it. A *link role*
logs in with a password instead: its name is recorded in ``PGEMBED_HOME/link-roles``
(pgembed's own file, written through :mod:`pgembed._fs`), and on every start the server's
``pg_hba.conf`` gets ``local all <role> scram-sha-256`` for each recorded role, before the
peer rule. The peer rule and ``pg_ident.conf`` stay as they are: no OS user gains anything.

Also here: the error for a coordinator whose postgres_fdw cannot reach or log in to a shard.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pgembed import _fs
from pgembed.errors import ConfigError, ServerError, ShardError

FILE = "link-roles"
DOCS = "docs/scale-out.md#embedded-shards"
# Lower case, so that the name is the same quoted or not, in SQL and in pg_hba.conf.
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# pg_hba.conf's user-column keywords, and names PostgreSQL reserves for roles.
HBA_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})
RESERVED = frozenset({"public", "none", "current_user", "session_user", "current_role"})


def check_role(role: Any, superuser: str) -> str:
    """``role`` if pg_hba.conf and SQL both take it literally and it is no one else's name;
    ConfigError otherwise."""
    if not isinstance(role, str) or not _NAME.fullmatch(role):
        raise ConfigError(
            f"link role name {role!r} is refused: use a plain lower-case identifier "
            "(letters a-z, digits and _, not starting with a digit, at most 63 characters), "
            "such as pgembed_link"
        )
    if role in HBA_KEYWORDS or role in RESERVED or role.startswith("pg_") or role == superuser:
        raise ConfigError(
            f"link role name {role!r} is refused: it is a keyword of pg_hba.conf, a name "
            f"PostgreSQL reserves, or the superuser {superuser!r}, whom only peer "
            "authentication admits; choose another name, such as pgembed_link"
        )
    return role


def check_password(password: Any) -> str:
    if not isinstance(password, str) or not password.strip():
        raise ConfigError(
            "a link role needs a non-empty password (from PGEMBED_LINK_PASSWORD or "
            "--password-file on the command line)"
        )
    if "\x00" in password:
        raise ConfigError("a link role's password cannot contain a NUL character")
    return password


def read(home: Path, uid: int, superuser: str) -> list[str]:
    """The recorded link roles (none when the file is missing); ServerError when the file
    is not pgembed's own plain file or holds a name pgembed would not write."""
    path = home / FILE
    text = _fs.read_owned(path, uid)
    roles: list[str] = []
    for line in (text or "").splitlines():
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        try:
            roles.append(check_role(name, superuser))
        except ConfigError:
            raise ServerError(
                f"{path} names {name!r}, which is not a link role pgembed writes; remove that "
                "line (or the file) and run `pgembed db link-role` again"
            ) from None
    return list(dict.fromkeys(roles))


def write(home: Path, roles: Sequence[str]) -> None:
    head = "# Written by pgembed db link-role: roles that may log in with a password.\n"
    _fs.replace_file(home / FILE, head + "".join(f"{r}\n" for r in roles), 0o600)


def hba_lines(roles: Sequence[str]) -> str:
    """pg_hba.conf rules for the link roles: a password over the unix socket, nothing else."""
    return "".join(f"local all {r} scram-sha-256\n" for r in roles)


def set_role(conn: Any, role: str, password: str, *, superuser: bool) -> None:
    """Create or update ``role`` (LOGIN, the password's SCRAM verifier) on the psycopg
    connection ``conn``; the password itself never reaches the server or its log."""
    from psycopg import sql

    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    exists = conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role]).fetchone()
    conn.execute(
        sql.SQL("{} ROLE {} LOGIN {} PASSWORD {}").format(
            sql.SQL("ALTER" if exists else "CREATE"),
            sql.Identifier(role),
            sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"),
            sql.Literal(verifier.decode()),
        )
    )


def own_database(conn: Any, role: str, database: str) -> bool:
    """Make sure ``database`` exists and belongs to ``role``; True when it was created."""
    from psycopg import sql

    if not isinstance(database, str) or not database or "\x00" in database:
        raise ConfigError(f"database name {database!r} is refused: give a non-empty name")
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = %s",
        [database],
    ).fetchone()
    if row is None:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(role)
            )
        )
        return True
    if row[0] != role:
        raise ConfigError(
            f"database {database!r} exists and belongs to {row[0]!r}, not to the link role "
            f"{role!r}; name a new database (pgembed creates it for the role), or leave "
            "--database out and grant the role what it needs yourself"
        )
    return False


def no_login(conn: Any, role: str) -> None:
    """``role`` (if it exists) may no longer log in, and has no password."""
    from psycopg import sql

    if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role]).fetchone():
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(role)))


def install_for(server_url: str, role: str, database: str) -> None:
    """In ``database`` of the server at ``server_url`` (its superuser's URL): the vector
    extension (a superuser's step), then pgembed's schema, installed as ``role``."""
    import sqlalchemy as sa

    from pgembed import migrate

    url = sa.engine.make_url(server_url).set(database=database)
    with sa.create_engine(url, poolclass=sa.pool.NullPool).connect() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        conn.commit()
    engine = sa.create_engine(
        url, connect_args={"options": f"-c role={role}"}, poolclass=sa.pool.NullPool
    )
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


# --- a coordinator whose postgres_fdw cannot reach a shard -----------------------------------

_FDW_CONNECT = re.compile(r'could not connect to server "(?P<server>[^"]+)"')
_LOGIN = re.compile(
    r"authentication failed|password|no pg_hba\.conf entry|role \S+ does not exist", re.I
)
_LOGIN_STATES = ("28000", "28P01")


class ShardLinkError(ShardError):
    """The coordinator's postgres_fdw could not connect to, or log in to, a shard."""

    def __init__(self, server: str, reason: str, login: bool, where: str) -> None:
        self.server, self.reason, self.login = server, reason, login
        if login:
            text = (
                f"the coordinator cannot log in to {where}: {reason}; postgres_fdw connects "
                "from the coordinator server's own process, which an embedded shard's peer "
                "rule does not admit: give each shard a password role (`pgembed db "
                "link-role ROLE --database DB` with PGEMBED_HOME set to the shard's home) "
                f"and name that role and its password in the shard URL, see {DOCS}"
            )
        else:
            text = (
                f"the coordinator cannot reach {where}: {reason}; check that the shard's "
                "server runs and that the coordinator's server can reach it (a socket "
                "directory must be on the coordinator's host)"
            )
        super().__init__(text)


def fdw_error(e: Any, collection: str | None = None) -> ShardLinkError | None:
    """The error for a postgres_fdw connection failure behind ``e`` (a driver error, or
    a SQLAlchemy one around it), None for anything else."""
    orig = getattr(e, "orig", None) or e
    state = str(getattr(orig, "sqlstate", None) or "")
    if not (state.startswith("08") or state in _LOGIN_STATES):
        return None
    first = (str(orig).strip().splitlines() or [""])[0]
    m = _FDW_CONNECT.search(first)
    if m is None:
        return None
    detail = getattr(getattr(orig, "diag", None), "message_detail", None) or ""
    reason = " ".join(detail.split()) or first
    login = state in _LOGIN_STATES or bool(_LOGIN.search(reason))
    server = m["server"]
    return ShardLinkError(server, reason, login, _where(server, collection))


def login_refused(e: Any) -> str | None:
    """What to say when ``e`` is this process's own connection to a shard being refused at
    login (wrong password, no rule for its role); None for anything else."""
    orig = getattr(e, "orig", None) or e
    text = " ".join(str(orig).split())
    if getattr(orig, "sqlstate", None) or "FATAL" not in text or not _LOGIN.search(text):
        return None
    return (
        f"cannot log in: {text.removeprefix('connection failed: ')}; check the role and "
        "password in the shard URL (an embedded shard admits a password only for a role "
        f"made with `pgembed db link-role`, see {DOCS})"
    )


def _where(server: str, collection: str | None) -> str:
    m = re.fullmatch(r"pgembed_(?P<tag>.+)_(?P<pos>\d+)", server)
    if collection is not None and m is not None:
        from pgembed.shards import _short

        if m["tag"] == _short(collection):
            return f"shard {m['pos']} of {collection!r} (foreign server {server})"
    return f"the shard of foreign server {server}"


@contextlib.contextmanager
def naming_shards(collection: str, shards: Sequence[Any]) -> Iterator[None]:
    """A :class:`ShardLinkError` raised inside names the shard by its label (URL masked)."""
    from pgembed.shards import _short

    try:
        yield
    except ShardLinkError as exc:
        for s in shards:
            if exc.server == f"pgembed_{_short(collection)}_{s.position}":
                raise ShardLinkError(exc.server, exc.reason, exc.login, s.label) from None
        raise
