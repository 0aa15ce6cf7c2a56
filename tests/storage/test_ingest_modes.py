"""Ingest modes: bulk (indexes deferred, COPY, CREATE INDEX) and incremental (upserts) store
the same rows and answer the same; a bulk load reports its index builds; concurrent searches
never fail; incremental adds run no DDL per batch; precomputed vectors; one truncation
warning per call. (SIGKILL during a bulk load: tests/test_crash.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, FDEConfig, strategies
from pgembed.corpus import lee_background
from pgembed.encoders.tokenize import TruncationWarning
from pgembed.errors import (
    ConfigError,
    DimensionError,
    FingerprintMismatchError,
    InputError,
    NonFiniteError,
)
from pgembed.storage import bulk
from pgembed.storage.schema import IndexParams

ALL = ("single", "matryoshka", "binary", "fde", "multivector")
FDE = FDEConfig(dimension=32, num_repetitions=8, num_simhash_projections=3,
                projection_dimension=8, final_projection_dimension=None)  # fmt: skip
N = 120
QUERIES = ("economic growth and interest rates", "bushfires near Sydney", "a cricket match")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    sentences = [s for doc in lee_background() for s in doc.split(". ") if len(s.split()) > 4]
    return sentences[:N]


def _new(engine: Engine, enc: Any, name: str, **kw: Any) -> Collection:
    opts: dict[str, Any] = {"kinds": ALL, "fde": FDE, "binary_bits": 2}
    return Collection(engine, name, enc, **{**opts, **kw}).create()


@pytest.fixture
def make(engine: Engine, tiny_encoder: Any) -> Iterator[Any]:
    made: list[Collection] = []

    def new(name: str, **kw: Any) -> Collection:
        c = _new(engine, tiny_encoder, name, **kw)
        made.append(c)
        return c

    yield new
    for c in made:
        c.drop(force=True)


def _rows(coll: Collection) -> list[tuple[Any, ...]]:
    """Every column of every row, as PostgreSQL prints it (exact halfvec/bit text)."""
    t = coll.table()
    cols = [sa.cast(c, sa.Text) for c in t.c]
    with coll.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(t.c.id)).all()]


def _indexes(coll: Collection) -> dict[str, bool]:
    with coll.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c "
                "ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(:t) "
                "AND NOT i.indisprimary"
            ),
            {"t": f'"{coll.spec.table_name}"'},
        ).all()
    return {str(n): bool(v) for n, v in rows}


def _all_indexes_valid(coll: Collection) -> None:
    got = _indexes(coll)
    assert set(got) == {str(i.name) for i in coll.table().indexes}
    assert all(got.values()), got


def _wide(strategy: str, n: int, ivfflat: bool) -> dict[str, Any]:
    """Options under which every strategy scans enough to be exact: same input, same answer
    whichever way the index was built."""
    accepts = strategies.get(strategy).options
    opts: dict[str, Any] = {"ef_search": 1000}
    if strategy == "binary" and ivfflat:
        opts = {"probes": 4}  # every list
    if "oversample" in accepts:
        opts["oversample"] = 1000
    if "candidates" in accepts:
        opts["candidates"] = n
    return opts


def _answers(coll: Collection, n: int) -> dict[tuple[str, str], list[tuple[int, float]]]:
    ivf = coll.spec.index.binary == "ivfflat"
    out = {}
    stored = [name for name, kind in strategies.KIND.items() if coll.spec.has(kind)]
    assert {"knn", "funnel", "binary", "multivector"} <= set(stored)
    for strategy in stored:
        for q in QUERIES:
            out[strategy, q] = coll.search(q, k=10, strategy=strategy, **_wide(strategy, n, ivf))
    return out


@pytest.mark.parametrize("binary_index", ["hnsw", "ivfflat"])
def test_bulk_and_incremental_store_and_answer_the_same(
    make: Any, texts: list[str], binary_index: str
) -> None:
    index = IndexParams(binary=binary_index, lists=4)  # type: ignore[arg-type]
    ids = list(range(1000, 1000 + N))
    b = make(f"modes bulk {binary_index}", index=index)
    i = make(f"modes incr {binary_index}", index=index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        assert b.add(texts, ids, mode="bulk", batch_size=32) == N
        assert i.add(texts, ids, mode="incremental", batch_size=32) == N
    assert (b.last_mode, i.last_mode) == ("bulk", "incremental")
    rows_b, rows_i = _rows(b), _rows(i)
    assert len(rows_b) == N and [r[0] for r in rows_b] == [str(x) for x in ids]
    assert rows_b == rows_i  # every column, to the last bit
    _all_indexes_valid(b)
    _all_indexes_valid(i)
    got_b, got_i = _answers(b, N), _answers(i, N)
    assert got_b == got_i
    assert all(len(v) == 10 for v in got_b.values())
    # a re-run writes nothing in either mode; an update goes through both the same way
    assert b.add(texts, ids, mode="bulk") == 0 and i.add(texts, ids, mode="incremental") == 0
    changed = ["a new text about rain", *texts[1:3]]
    assert b.add(changed, ids[:3], mode="bulk") == 1
    assert i.add(changed, ids[:3], mode="incremental") == 1
    assert _rows(b) == _rows(i)
    _all_indexes_valid(b)


def test_auto_mode_chooses_by_share_and_missing_indexes(make: Any, tiny_encoder: Any) -> None:
    c = make("modes auto", kinds=("single",))
    rng = np.random.default_rng(3)
    n = bulk.BULK_MIN_ROWS
    vecs = rng.standard_normal((n + 400, tiny_encoder.dim)).astype(np.float32)
    texts = [f"text {k}" for k in range(n + 400)]
    c.add(texts[:10], range(10), vectors=vecs[:10])
    assert c.last_mode == "incremental"  # too few rows to be worth a rebuild
    c.add(texts[10 : n + 10], range(10, n + 10), vectors=vecs[10 : n + 10])
    assert c.last_mode == "bulk"  # n >= BULK_MIN_ROWS and >= BULK_SHARE of 10 rows
    c.add(texts[n + 10 :], range(n + 10, n + 400), vectors=vecs[n + 10 :])
    assert c.last_mode == "incremental"  # 390 new rows < BULK_MIN_ROWS
    _all_indexes_valid(c)
    with c.engine.begin() as conn:  # as an interrupted bulk load leaves it
        conn.execute(sa.text('DROP INDEX "modes auto_embedding_hnsw"'))
    assert c.search("text 5", k=3)  # a missing index: a sequential scan, no error
    c.add(["one more"], [10**6], vectors=vecs[:1])
    assert c.last_mode == "bulk"  # finishes the interrupted load
    _all_indexes_valid(c)
    assert c.count() == n + 401
    with pytest.raises(ConfigError, match="mode 'fast'"):
        c.add(["x"], [1], mode="fast")


def test_missing_and_invalid_indexes_are_rebuilt(make: Any, texts: list[str]) -> None:
    c = make("modes rebuild", kinds=("single", "binary"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        c.add(texts[:40], range(40), mode="incremental")
    name = "modes rebuild_embedding_hnsw"
    with c.engine.begin() as conn:
        conn.execute(sa.text(f'DROP INDEX "{name}"'))
        # an invalid index of that name, as a failed CREATE INDEX CONCURRENTLY leaves one
        conn.execute(sa.text(f'CREATE INDEX "{name}" ON "modes rebuild" (id)'))
        conn.execute(
            sa.text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(:n)"),
            {"n": f'"{name}"'},
        )
    assert _indexes(c)[name] is False
    assert c.finish_bulk(progress=False) == [name]
    _all_indexes_valid(c)
    assert c.finish_bulk(progress=False) == []  # nothing left to do
    with c.engine.begin() as conn:
        conn.execute(sa.text(f'DROP INDEX "{name}"'))
    assert c.reindex() == [name]
    c.create()  # idempotent, and it too builds what is missing
    _all_indexes_valid(c)


def test_index_builds_report_progress(make: Any, tiny_encoder: Any, capsys: Any) -> None:
    c = make("modes progress", kinds=("single", "fde", "multivector"))
    n = 3000
    rng = np.random.default_rng(5)
    pooled = rng.standard_normal((n, tiny_encoder.dim)).astype(np.float32)
    tokens = [rng.standard_normal((4, tiny_encoder.dim)).astype(np.float32) for _ in range(n)]
    events: list[bulk.Progress] = []
    c.add([f"t{k}" for k in range(n)], range(n), vectors=(pooled, tokens), mode="bulk",
          progress=True, on_progress=events.append)  # fmt: skip
    names = sorted(str(i.name) for i in c.table().indexes)
    writes = [e for e in events if e.stage == "write"]
    assert writes and writes[-1].done == n and writes[-1].total == n
    assert [e.done for e in writes] == sorted(e.done for e in writes)
    builds = [e for e in events if e.stage == "index"]
    assert sorted(e.name for e in builds if e.phase == "start") == names
    assert sorted(e.name for e in builds if e.phase == "done") == names
    err = capsys.readouterr().err
    for name in names:
        assert f"index {name}" in err  # a tqdm bar per index
    # polled from pg_stat_progress_create_index while the build runs
    polled: list[bulk.Progress] = []
    with c.engine.begin() as conn:
        conn.execute(sa.text('DROP INDEX "modes progress_fde_bq_hnsw"'))
    built = bulk.finish(c.engine, c.spec, check=lambda conn: None, on_progress=polled.append,
                        poll=0.005)  # fmt: skip
    assert built == ["modes progress_fde_bq_hnsw"]
    phases = [e for e in polled if e.phase not in ("start", "done")]
    assert phases, polled
    assert all(e.phase.startswith(("building index", "initializing", "waiting")) for e in phases)
    assert all(e.total for e in phases), phases  # tuples (or blocks) to do, as PostgreSQL says
    assert [e.done for e in phases] == sorted(e.done for e in phases)
    assert polled[-1].phase == "done"


def test_build_settings_follow_the_server(engine: Engine) -> None:
    with engine.connect() as conn:
        server = {
            k: conn.execute(sa.text(f"SELECT current_setting('{k}')")).scalar_one()
            for k in ("maintenance_work_mem", "max_parallel_maintenance_workers",
                      "max_parallel_workers", "max_worker_processes")
        }  # fmt: skip
        got = bulk.build_settings(conn)
        assert got == {
            "maintenance_work_mem": server["maintenance_work_mem"],
            "max_parallel_maintenance_workers": str(
                min(int(server["max_parallel_maintenance_workers"]),
                    int(server["max_parallel_workers"]))
            ),
        }  # fmt: skip
        limit = min(int(server["max_parallel_workers"]), int(server["max_worker_processes"]))
        assert bulk.build_settings(conn, workers=10_000)["max_parallel_maintenance_workers"] == (
            str(limit)
        )
        assert bulk.build_settings(conn, "256MB", 0) == {
            "maintenance_work_mem": "256MB",
            "max_parallel_maintenance_workers": "0",
        }


def test_searches_during_a_bulk_load_answer_or_wait(make: Any, tiny_encoder: Any) -> None:
    c = make("modes concurrent", kinds=("single", "binary", "fde", "multivector"))
    n = 2400
    rng = np.random.default_rng(11)
    pooled = rng.standard_normal((n, tiny_encoder.dim)).astype(np.float32)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    tokens = [rng.standard_normal((3, tiny_encoder.dim)).astype(np.float32) for _ in range(n)]
    stage = {"now": "before"}
    failures: list[BaseException] = []
    seen: dict[str, int] = {}

    def on_progress(p: bulk.Progress) -> None:
        stage["now"] = p.stage
        if p.stage == "write":
            time.sleep(0.05)  # a slow writer: searches interleave with the COPY phase

    def load() -> None:
        try:
            c.add([f"t{k}" for k in range(n)], range(n), vectors=(pooled, tokens),
                  mode="bulk", batch_size=200, on_progress=on_progress)  # fmt: skip
        except BaseException as exc:  # checked below
            failures.append(exc)
        finally:
            stage["now"] = "after"

    th = threading.Thread(target=load)
    th.start()
    q = pooled[7]
    while stage["now"] != "after":
        now = stage["now"]
        for strategy in ("knn", "binary", "multivector"):
            query: Any = q if strategy != "multivector" else tokens[7]
            got = c.search(query, k=5, strategy=strategy)
            assert len(got) <= 5
            assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
            assert all(0 <= i < n for i, _ in got)
        seen[now] = seen.get(now, 0) + 1
    th.join()
    assert not failures, failures
    assert seen.get("write", 0) >= 2, seen  # searched while rows were being copied
    _all_indexes_valid(c)
    assert c.search(q, k=1)[0][0] == 7


_COUNT_DDL = (
    "CREATE SEQUENCE ddl_seen",
    "CREATE FUNCTION count_ddl() RETURNS event_trigger LANGUAGE plpgsql "
    "AS $$ BEGIN PERFORM nextval('ddl_seen'); END $$",
    "CREATE EVENT TRIGGER count_ddl ON ddl_command_end EXECUTE FUNCTION count_ddl()",
)


def test_incremental_adds_run_no_ddl_per_batch(make: Any, texts: list[str]) -> None:
    """An event trigger counts every DDL command (temp tables too) in a sequence, which
    rollbacks do not undo; a staging table per batch would count 2 or 3 per batch."""
    c = make("modes no ddl", kinds=("single",))
    with c.engine.begin() as conn:
        for stmt in _COUNT_DDL:
            conn.execute(sa.text(stmt))
    try:
        c.add(texts[:2], [0, 1], mode="incremental")  # the first on a connection may make one
        with c.engine.connect() as conn:
            before = conn.execute(sa.text("SELECT nextval('ddl_seen')")).scalar_one()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            for start in range(4, 84, 20):  # 4 calls of 5 batches each
                c.add(texts[start : start + 20], range(start, start + 20), mode="incremental",
                      batch_size=4)  # fmt: skip
        with c.engine.connect() as conn:
            after = conn.execute(sa.text("SELECT nextval('ddl_seen')")).scalar_one()
        # at most a staging table made once per pooled connection, never one per batch
        assert after - before - 1 <= 3, after - before - 1
    finally:
        with c.engine.begin() as conn:
            conn.execute(sa.text("DROP EVENT TRIGGER count_ddl"))
            conn.execute(sa.text("DROP FUNCTION count_ddl()"))
            conn.execute(sa.text("DROP SEQUENCE ddl_seen"))
    assert c.count() == 82


def test_precomputed_vectors_store_what_encoding_stores(
    make: Any, tiny_encoder: Any, texts: list[str]
) -> None:
    enc = make("modes encoded")
    pre = make("modes precomputed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        enc.add(texts, range(N), mode="incremental")
        pooled, tokens = tiny_encoder.encode_both(texts, "document")
    assert pre.add(texts, range(N), vectors=(pooled, tokens), fingerprint=tiny_encoder.fingerprint,
                   mode="incremental") == N  # fmt: skip
    assert _rows(pre) == _rows(enc)
    assert pre.add(texts, range(N), vectors=(pooled, tokens)) == 0  # resumable alike

    single = make("modes precomputed single", kinds=("single",))
    with pytest.raises(DimensionError, match=r"makes 32-dim vectors, so \(3, 32\) is expected"):
        single.add(texts[:3], vectors=pooled[:3, :16])
    with pytest.raises(DimensionError, match=r"shape \(2, 32\).*\(3, 32\)"):
        single.add(texts[:3], vectors=pooled[:2])
    with pytest.raises(FingerprintMismatchError, match="made by an encoder with fingerprint"):
        single.add(texts[:3], vectors=pooled[:3], fingerprint="0" * 64)
    bad = pooled[:3].copy()
    bad[1, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"rows \[1\]"):
        single.add(texts[:3], vectors=bad)
    with pytest.raises(InputError, match="give vectors=\\(pooled, tokens\\)"):
        pre.add(texts[:3], vectors=pooled[:3])
    with pytest.raises(DimensionError, match="token array 1 has shape"):
        pre.add(texts[:3], vectors=(pooled[:3], [tokens[0], tokens[1][:, :5], tokens[2]]))
    assert single.count() == 0


def test_ingest_vectors_from_the_command_line(
    engine: Engine, tiny_encoder: Any, tiny_model_dir: Path, tmp_path: Path, texts: list[str]
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "PGEMBED_DATABASE_URL": url, "PGEMBED_MODEL_DIR": str(tiny_model_dir)}
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts[:20]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        pooled, tokens = tiny_encoder.encode_both(texts[:20], "document")
    flat, counts = np.concatenate(tokens), [len(t) for t in tokens]
    fp = tiny_encoder.fingerprint
    np.savez(tmp_path / "v.npz", pooled=pooled, tokens=flat, token_counts=counts, fingerprint=fp)
    np.savez(tmp_path / "wrong.npz", pooled=pooled, tokens=flat, token_counts=counts,
             fingerprint="f" * 64)  # fmt: skip

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgembed.cli", "ingest", *argv], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    name = "modes cli vectors"
    out = cli(name, str(src), "--model", "tiny-bert", "--kinds", "single,multivector",
              "--vectors", str(tmp_path / "v.npz"), "--no-progress")  # fmt: skip
    try:
        assert out.returncode == 0, out.stderr
        assert "20 rows written" in out.stdout
        coll = Collection.open(engine, name, tiny_encoder)
        ref = Collection(engine, "modes cli encoded", tiny_encoder,
                         kinds=("single", "multivector")).create()  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                ref.add(texts[:20])
            assert [r[1:] for r in _rows(coll)] == [r[1:] for r in _rows(ref)]
        finally:
            ref.drop(force=True)
        bad = cli(name, str(src), "--vectors", str(tmp_path / "wrong.npz"))
        assert bad.returncode == 1
        assert bad.stderr.strip().splitlines()[-1].startswith("pgembed: error: the vectors were")
        np.save(tmp_path / "short.npy", pooled[:5])
        bad = cli(name, str(src), "--vectors", str(tmp_path / "short.npy"))
        assert bad.returncode == 1 and "has 5 rows for 20 texts" in bad.stderr
        bad = cli(name, str(src), "--vectors", str(tmp_path / "v.txt"))
        assert bad.returncode == 2 and "expected a .npy file" in bad.stderr
    finally:
        Collection.open(engine, name, tiny_encoder).drop(force=True)


def test_one_truncation_warning_per_add(make: Any, texts: list[str]) -> None:
    c = make("modes truncation", kinds=("single",))
    long_text = " ".join(["words upon words"] * 40)  # beyond the tiny model's 64 tokens
    batch = [*texts[:10], long_text + " one", *texts[10:20], long_text + " two", long_text]
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        c.add(batch, batch_size=4)
    trunc = [w for w in got if issubclass(w.category, TruncationWarning)]
    assert len(trunc) == 1, [str(w.message) for w in trunc]
    m = re.match(rf"(\d+) of {len(batch)} texts were longer", str(trunc[0].message))
    assert m is not None and int(m.group(1)) >= 3, trunc[0].message
    assert trunc[0].filename == __file__  # points at the caller's add()
