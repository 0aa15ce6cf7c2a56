"""Shared fixtures: a real PostgreSQL + pgvector for the whole session.

With PGEMBED_DATABASE_URL set, tests create throw-away databases on that server. Otherwise
they start pgembed's embedded server in a fresh home directory of their own (under /tmp, so
the unprivileged server user can reach it when the tests run as root).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from pgembed import migrate
from pgembed.db import normalize_url

MakeDatabase = Callable[[], str]


@pytest.fixture(scope="session")
def pg_home() -> Iterator[Path | None]:
    if os.environ.get("PGEMBED_DATABASE_URL"):
        yield None
        return
    home = Path(tempfile.mkdtemp(prefix="pgembed-test-", dir="/tmp"))
    os.environ["PGEMBED_HOME"] = str(home)  # CLI subprocesses use the same server
    yield home
    from pgembed.server import EmbeddedServer

    EmbeddedServer(home).stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_url(pg_home: Path | None) -> str:
    """URL of the server's maintenance database."""
    if pg_home is None:
        return normalize_url(os.environ["PGEMBED_DATABASE_URL"])
    from pgembed.server import EmbeddedServer

    return EmbeddedServer(pg_home).start()


@pytest.fixture(scope="session")
def make_database(admin_url: str) -> Iterator[MakeDatabase]:
    """Factory of fresh, empty databases on the test server; all dropped at the end."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"pgembed_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def empty_engine(make_database: MakeDatabase) -> Iterator[Engine]:
    """A fresh database without pgembed's schema."""
    engine = sa.create_engine(make_database())
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def engine(make_database: MakeDatabase) -> Iterator[Engine]:
    """A database migrated to pgembed's head, shared by the session."""
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir with a tiny random BERT (32 dims) exported, fp32 only (seconds)."""
    from pgembed.encoders.testing import export_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    export_tiny(root, fp16=False, int8=False)
    return root


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Any:
    from pgembed.encoders import Encoder
    from pgembed.encoders.testing import TINY_NAME

    return Encoder.load(TINY_NAME, device="cpu", model_dir=tiny_model_dir)


@pytest.fixture(scope="session")
def minilm_encoder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real all-MiniLM-L6-v2, exported once per session (PGEMBED_TEST_MINILM_DIR reuses)."""
    from pgembed.encoders import DEFAULT_MODEL, Encoder

    reuse = os.environ.get("PGEMBED_TEST_MINILM_DIR")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("minilm-models")
    return Encoder.load(DEFAULT_MODEL, device="cpu", model_dir=root)


# --- the scoring extension (tests/test_scoring*.py) -----------------------------------------


@pytest.fixture(scope="module")
def built(pg_home: Path | None, admin_url: str) -> Path:
    """The scoring extension built from the current sources for the test server."""
    from pgembed import scoring

    if pg_home is None or scoring.compiler() is None:
        pytest.skip("builds the extension for the embedded server: needs it and a C compiler")
    return scoring.build(pg_home)


@pytest.fixture(scope="module")
def both(built: Path, make_database: MakeDatabase) -> Iterator[Engine]:
    """pgembed migrated with the SQL scoring functions, and the extension created beside them
    (pgembed.<f> is SQL, pgembed_scoring.<f> is C)."""
    from _scoring import scoring_mode

    from pgembed import scoring

    eng = sa.create_engine(make_database())
    with scoring_mode("sql"):
        migrate.upgrade(eng)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION pgembed_scoring"))
        assert not scoring.is_wired(conn)
    yield eng
    eng.dispose()
