"""`pgembed db ...`: the embedded server and pgembed's own migrations."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pgembed import config


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
