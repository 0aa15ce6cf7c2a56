"""Crash safety: an ingest killed with SIGKILL, or whose server stops, loses nothing on re-run.

The ingest runs in a subprocess (``tests/_crash_ingest.py``) with the tiny encoder over real
sentences. After the crashes a re-run completes, and the table holds each id exactly once
with the vectors that encoding the texts directly gives.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, migrate
from pgembed.encoders.tokenize import TruncationWarning
from pgembed.server import EmbeddedServer

HELPER = Path(__file__).with_name("_crash_ingest.py")
N = 320
BATCH = 8
KINDS = ("single", "binary", "multivector")


def _sentences(n: int) -> list[str]:
    sys.path.insert(0, str(HELPER.parent))
    try:
        from _crash_ingest import sentences
    finally:
        sys.path.pop(0)
    return sentences(n)


def _start(
    url: str, model_dir: Path, name: str, hold: Path | None = None, *bulk: str
) -> subprocess.Popen[str]:
    """The helper; ``bulk``: its MODE [STOP] arguments (one add() of all N texts)."""
    args = [sys.executable, str(HELPER), url, str(model_dir), name, str(N), str(BATCH)]
    if hold is not None or bulk:
        args.append(str(hold) if hold is not None else "-")
    args += bulk
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = proc.stdout.readline()
        if not got:
            raise AssertionError(f"ingest ended before {line!r}: {proc.stderr.read()}")  # type: ignore[union-attr]
        if got.strip() == line:
            return
    raise AssertionError(f"no {line!r} within 60 s")


def _finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    out, err = proc.communicate(timeout=120)
    last = [line for line in out.splitlines() if line.startswith("{")]
    assert last, f"no result line; stderr: {err[-3000:]}"
    return proc.returncode, json.loads(last[-1])


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())


def _check_complete(engine: Engine, coll: Collection, texts: list[str]) -> None:
    """Each id exactly once, its own text, and the vectors of encoding that text directly."""
    t = coll.table()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.id, t.c.content, t.c.embedded_hash, t.c.embedding, t.c.embedding_bits,
                      t.c.tokens, sa.func.md5(t.c.content)).order_by(t.c.id)
        ).all()  # fmt: skip
    assert [r[0] for r in rows] == list(range(N))
    assert [r[1] for r in rows] == texts
    assert all(r[2] == r[6] for r in rows)  # embedded_hash = md5(content): nothing stale
    with warnings.catch_warnings():  # a few sentences exceed the tiny max_length
        warnings.simplefilter("ignore", TruncationWarning)
        want = coll.encoder.encode(texts, "document")
        tokens = coll.encoder.encode_tokens(texts, "document")
    got = np.array([np.asarray(r[3]) for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3)  # halfvec storage
    from pgembed.vectors.binary import pack_residual

    # 2-bit residual codes: equal up to sign flips of coordinates within float noise of 0
    want_bits = np.unpackbits(pack_residual(want, 2), axis=1)[:, : 2 * want.shape[1]]
    got_bits = np.array([[c == "1" for c in str(r[4])] for r in rows], dtype=np.uint8)
    assert got_bits.shape == want_bits.shape
    assert (got_bits == want_bits).mean() > 0.995
    for r, tok in zip(rows, tokens, strict=True):
        np.testing.assert_allclose(r[5], tok, atol=2e-3)


@pytest.fixture
def crash_db(make_database: Any, tiny_encoder: Any) -> Iterator[tuple[Engine, Collection]]:
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    coll = Collection(eng, "crash docs", tiny_encoder, kinds=KINDS, binary_bits=2).create()
    yield eng, coll
    eng.dispose()


def test_sigkill_at_random_points_then_rerun(
    crash_db: tuple[Engine, Collection], tiny_model_dir: Path
) -> None:
    engine, coll = crash_db
    url = engine.url.render_as_string(hide_password=False)
    rng = random.Random(20261128)
    texts = _sentences(N)
    n_batches = N // BATCH
    partial = [0]
    for chosen in sorted(rng.sample(range(n_batches - 4), 4)):
        b = max(chosen, partial[-1] // BATCH)  # past what earlier runs wrote: fresh work
        assert b < n_batches - 1
        proc = _start(url, tiny_model_dir, coll.spec.name)
        _wait_for(proc, f"batch {b}")
        time.sleep(rng.uniform(0.0, 0.03))  # mid-batch or just after a commit
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        partial.append(_count(engine, coll.spec.name))
        assert partial[-1] >= (b + 1) * BATCH
    partial = partial[1:]
    # every kill left whole batches only (one transaction each), and each run made progress
    assert all(BATCH <= n < N and n % BATCH == 0 for n in partial), partial
    assert partial == sorted(set(partial)), partial
    with engine.connect() as conn:  # no staging table leaked into the database
        assert conn.execute(sa.text("SELECT to_regclass('pgembed_stage')")).scalar() is None
    proc = _start(url, tiny_model_dir, coll.spec.name)
    rc, result = _finish(proc)
    assert rc == 0, result
    assert result == {"written": N - max(partial)}
    _check_complete(engine, coll, texts)


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """A separate embedded server to stop and restart, leaving the session's alone."""
    if os.environ.get("PGEMBED_DATABASE_URL"):
        pytest.skip("stopping the server needs the embedded one")
    home = Path(tempfile.mkdtemp(prefix="pgembed-crash-", dir="/tmp"))
    server = EmbeddedServer(home)
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def test_server_stopped_mid_ingest_then_restarted(
    own_server: EmbeddedServer, tiny_encoder: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    url = own_server.start()
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    coll = Collection(engine, "crash docs", tiny_encoder, kinds=KINDS, binary_bits=2).create()
    texts = _sentences(N)
    engine.dispose()

    # 1. stopped between two calls: the next call reports DatabaseUnavailableError
    hold = tmp_path / "hold"
    hold.touch()
    proc = _start(url, tiny_model_dir, coll.spec.name, hold)
    _wait_for(proc, "batch 0")
    assert own_server.stop() is True
    hold.unlink()
    rc, result = _finish(proc)
    assert rc == 3
    assert result["error"] == "DatabaseUnavailableError"
    assert result["message"].startswith("cannot reach PostgreSQL")
    assert "check that the server runs" in result["message"]

    # 2. stopped while an upsert waits on a row lock (mid-transaction): the ingest fails
    own_server.start()
    assert _count(engine, coll.spec.name) == BATCH
    with engine.begin() as conn:  # a changed text: the re-run must rewrite id 0
        conn.execute(sa.text("""UPDATE "crash docs" SET content = 'stale' WHERE id = 0"""))
    locker = engine.connect()
    locker.begin()
    locker.execute(sa.text('SELECT 1 FROM "crash docs" WHERE id = 0 FOR UPDATE'))
    proc = _start(url, tiny_model_dir, coll.spec.name)
    _stop_when_blocked(engine, own_server)
    locker.invalidate()
    locker.close()
    engine.dispose()
    rc, result = _finish(proc)
    assert rc == 3, result
    assert result["error"] == "DatabaseUnavailableError", result
    assert result["message"].startswith("the database went away while writing to 'crash docs'")
    assert "re-run the same ingest" in result["message"]

    # 3. restarted: a re-run completes with every row right
    own_server.start()
    engine.dispose()
    proc = _start(url, tiny_model_dir, coll.spec.name)
    rc, result = _finish(proc)
    assert rc == 0, result
    _check_complete(engine, coll, texts)
    engine.dispose()


def _stop_when_blocked(engine: Engine, server: EmbeddedServer) -> None:
    deadline = time.monotonic() + 60
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
            if waiting:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the ingest never blocked on the row lock")
    assert server.stop() is True


def _indexes(engine: Engine, coll: Collection) -> dict[str, bool]:
    """The collection's indexes (the primary key aside): name -> pg_index.indisvalid."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = to_regclass(:t) AND NOT i.indisprimary"
            ),
            {"t": f'"{coll.spec.table_name}"'},
        ).all()
    return {str(name): bool(valid) for name, valid in rows}


def _expected_indexes(coll: Collection) -> set[str]:
    return {str(i.name) for i in coll.table().indexes}


def _check_indexes(engine: Engine, coll: Collection) -> None:
    got = _indexes(engine, coll)
    assert set(got) == _expected_indexes(coll), got
    assert all(got.values()), got  # every one valid
    assert len(got) == 2  # HNSW on the embedding and on its binary code


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def test_bulk_load_killed_in_its_copy_phase_resumes(
    crash_db: tuple[Engine, Collection], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL while a bulk load COPYs (once at a known batch, once at a random moment):
    committed batches stay, searches answer meanwhile, a re-run completes the rows and
    builds every index."""
    engine, coll = crash_db
    url = engine.url.render_as_string(hide_password=False)
    texts = _sentences(N)
    hold = tmp_path / "hold"
    hold.touch()
    proc = _start(url, tiny_model_dir, coll.spec.name, hold, "bulk", f"write:{12 * BATCH}")
    _wait_for(proc, "holding")
    _kill(proc)
    assert _count(engine, coll.spec.name) == 12 * BATCH  # whole committed batches
    assert _indexes(engine, coll) == {}  # deferred by the load
    # the interrupted load leaves a searchable collection (sequential scan, exact)
    hits = coll.search("a storm hit the coast", k=5)
    assert len(hits) == 5 and all(0 <= i < 12 * BATCH for i, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)

    proc = _start(url, tiny_model_dir, coll.spec.name, None, "bulk")  # killed mid-COPY
    _wait_for(proc, f"written {20 * BATCH}")
    time.sleep(random.Random(7).uniform(0.0, 0.03))
    _kill(proc)
    partial = _count(engine, coll.spec.name)
    assert 20 * BATCH <= partial < N and partial % BATCH == 0

    proc = _start(url, tiny_model_dir, coll.spec.name, None, "auto")
    rc, result = _finish(proc)
    assert rc == 0, result
    assert result == {"written": N - partial, "mode": "bulk"}  # missing indexes: bulk again
    _check_complete(engine, coll, texts)
    _check_indexes(engine, coll)


def test_bulk_load_killed_in_its_index_build_resumes(
    crash_db: tuple[Engine, Collection], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL while CREATE INDEX runs (held on a table lock, so the server goes on
    building for the dead client), then a re-run: it waits for that build and makes the
    rest; every index present and valid, each row once."""
    engine, coll = crash_db
    url = engine.url.render_as_string(hide_password=False)
    texts = _sentences(N)
    hold = tmp_path / "hold"
    hold.touch()
    proc = _start(url, tiny_model_dir, coll.spec.name, hold, "bulk", f"write:{N}")
    _wait_for(proc, "holding")
    assert _count(engine, coll.spec.name) == N
    blocker = engine.connect()
    blocker.begin()  # ROW EXCLUSIVE: CREATE INDEX (SHARE) waits for it
    blocker.execute(sa.text(f'LOCK TABLE "{coll.spec.table_name}" IN ROW EXCLUSIVE MODE'))
    try:
        hold.unlink()
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("index ")
        with engine.connect() as conn:
            for _ in range(600):
                waiting = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'CREATE INDEX%' AND datname = current_database()"
                    )
                ).scalar_one()
                if waiting:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the index build never waited on the table lock")
        _kill(proc)
        rerun = _start(url, tiny_model_dir, coll.spec.name, None, "auto")
        time.sleep(0.3)  # the re-run waits for the orphaned build, which waits for us
    finally:
        blocker.commit()
        blocker.close()
    rc, result = _finish(rerun)
    assert rc == 0, result
    assert result == {"written": 0, "mode": "bulk"}  # every row was there: indexes only
    _check_complete(engine, coll, texts)
    _check_indexes(engine, coll)
