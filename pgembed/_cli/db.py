"""`pgembed db ...`: the embedded server and pgembed's own migrations."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pgembed import config

PASSWORD_ENV = "PGEMBED_LINK_PASSWORD"


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database: embedded server and pgembed's migrations")
    dsub = db.add_subparsers(dest="db_command", required=True)
    dsub.add_parser("start", help="start the embedded server").set_defaults(func=_start)
    dsub.add_parser("stop", help="stop the embedded server").set_defaults(func=_stop)
    dsub.add_parser("status", help="show the embedded server's state").set_defaults(func=_status)
    url = dsub.add_parser(
        "url",
        help="print the database URL in use",
        description="Print the database URL in use, as a SQLAlchemy URL (psycopg 3 driver); "
        "--libpq prints the libpq URI that psql and other libpq programs take.",
    )
    url.add_argument("--libpq", action="store_true", help="print the libpq URI (for psql)")
    url.set_defaults(func=_url)
    psql = dsub.add_parser("psql", help="open psql on the database in use")
    psql.set_defaults(func=_psql, passthrough=True)  # other arguments go to psql
    up = dsub.add_parser("upgrade", help="migrate pgembed's schema up")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_upgrade)
    down = dsub.add_parser(
        "downgrade",
        help="migrate pgembed's schema down ('base' removes it)",
        description="Migrate pgembed's schema down. Before any change it refuses, naming "
        "what would be lost, a downgrade that loses what upgrading again does not bring "
        "back (calibrations, query depths, the catalog of shards; at 'base', which removes "
        "pgembed's catalog, functions and schema, the registered collections) unless "
        "--force. Statistics triggers it drops come back with `pgembed db upgrade`, which "
        "recomputes the statistics. On a coordinator of sharded collections, every shard "
        "it records goes down first.",
    )
    down.add_argument("revision")
    down.add_argument(
        "--force",
        action="store_true",
        help="downgrade even though it loses what the refusal named (calibrations, "
        "query depths, sharded collections' records; at base, collections' catalog "
        "entries, whose tables stay as ordinary tables with their rows)",
    )
    down.set_defaults(func=_downgrade)
    link = dsub.add_parser(
        "link-role",
        help="let a role log in to the embedded server with a password (for shards)",
        allow_abbrev=False,  # --password would be taken for --password-file
        description="Let ROLE log in to the embedded server (of PGEMBED_HOME) with a "
        "password over its unix socket, now and after every restart: what a coordinator's "
        "postgres_fdw needs to reach an embedded shard, since peer authentication admits "
        "only the OS user who runs pgembed. Creates the role (LOGIN, not a superuser "
        "unless --superuser) or sets its password. The password comes from "
        f"{PASSWORD_ENV} or --password-file, never from the command line.",
    )
    link.add_argument("role", help="a plain lower-case name, such as pgembed_link")
    link.add_argument(
        "--password-file", metavar="PATH",
        help=f"read the password from this file (its first line) instead of {PASSWORD_ENV}",
    )  # fmt: skip
    link.add_argument(
        "--database", metavar="NAME",
        help="create this database for the role (its owner) if missing, with the vector "
        "extension and pgembed's schema installed as the role: a shard database",
    )  # fmt: skip
    link.add_argument(
        "--superuser", action="store_true",
        help="make the role a superuser (not needed for a shard made with --database)",
    )  # fmt: skip
    link.add_argument(
        "--remove", action="store_true",
        help="take the password rule away again; the role may no longer log in",
    )  # fmt: skip
    link.set_defaults(func=_link_role)
    dsub.add_parser("current", help="print the current revision").set_defaults(func=_current)
    dsub.add_parser("history", help="list the revisions").set_defaults(func=_history)


def _start(args: argparse.Namespace) -> int:
    from pgembed.server import default_server

    print(default_server().start())
    return 0


def _stop(args: argparse.Namespace) -> int:
    from pgembed.server import default_server

    print("stopped" if default_server().stop() else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from pgembed import scoring
    from pgembed.server import default_server

    st = default_server().status()
    state = f"running (pid {st.pid})" if st.running else "stopped"
    print(f"embedded server: {state}\nhome: {st.home}\nurl: {st.url}")
    print(scoring.status_line(config.database_url() or (st.url if st.running else None)))
    if config.database_url():
        print("note: PGEMBED_DATABASE_URL is set, so pgembed uses that database instead")
    return 0 if st.running else 3


def _url(args: argparse.Namespace) -> int:
    from pgembed import conninfo
    from pgembed.db import resolve_url

    resolved = resolve_url()
    print(conninfo.to_libpq(conninfo.params(resolved)) if args.libpq else resolved)
    return 0


def _psql(args: argparse.Namespace) -> int:
    from pgembed import conninfo
    from pgembed.db import resolve_url
    from pgembed.server import default_server

    params = conninfo.params(resolve_url())
    env = dict(os.environ)
    if "password" in params:  # in the environment, not in the command line others can read
        env["PGPASSWORD"] = params.pop("password")
    psql = str(default_server().binary("psql"))
    os.execve(psql, [psql, conninfo.to_libpq(params), *args.extra], env)


def _password(args: argparse.Namespace) -> str:
    from pgembed.errors import ConfigError

    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the password file {args.password_file}: {exc}; give a readable "
                f"file whose first line is the password, or set {PASSWORD_ENV}"
            ) from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        raise ConfigError(
            f"no password for link role {args.role!r}: set {PASSWORD_ENV} or pass "
            "--password-file PATH (never on the command line, where other users can read it)"
        )
    return password


def _link_role(args: argparse.Namespace) -> int:
    from pgembed.server import default_server

    server = default_server()
    if args.remove:
        done = server.forbid_password_login(args.role)
        print(f"link role {args.role} removed" if done else f"{args.role} is not a link role")
        return 0
    server.allow_password_login(
        args.role, _password(args), superuser=args.superuser, database=args.database
    )
    where = f"; database {args.database} is ready for a shard" if args.database else ""
    print(f"link role {args.role} may log in with its password{where}")
    return 0


def _engine() -> Any:
    from pgembed.db import create_engine

    return create_engine()


def _upgrade(args: argparse.Namespace) -> int:
    from pgembed import migrate

    engine = _engine()
    migrate.upgrade(engine, args.revision)
    print(f"pgembed schema at {migrate.current(engine)}")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    from pgembed import migrate

    engine = _engine()
    migrate.downgrade(engine, args.revision, force=args.force)
    print(f"pgembed schema at {migrate.current(engine) or 'base (removed)'}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from pgembed import migrate

    rev = migrate.current(_engine())
    print(rev or "base (not installed)")
    return 0


def _history(args: argparse.Namespace) -> int:
    from pgembed import migrate

    for script in migrate.history():
        print(f"{script.down_revision or 'base'} -> {script.revision}: {script.doc}")
    return 0
