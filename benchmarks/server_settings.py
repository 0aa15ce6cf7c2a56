"""Benchmark: the embedded server on PostgreSQL's default settings vs sized to the machine.

One embedded server in a fresh home under /tmp. Two tables of seeded, clustered unit
vectors: ``--rows`` 384-dim halfvec rows (MiniLM-sized) and ``--fde-rows`` 3,936-dim
halfvec rows (the size of pgembed's FDE vectors; 0 skips them). Then:

- **HNSW builds** (``vector_cosine_ops``, m=16, ef_construction=64, pgembed's defaults),
  each index built twice on the same server: once with PostgreSQL's defaults for the build
  (``SET maintenance_work_mem = '64MB'``, ``max_parallel_maintenance_workers = 2``) and
  once with the sized values (:func:`pgembed.server.machine_settings`). pgvector's notice
  "hnsw graph no longer fits into maintenance_work_mem after N tuples" is reported.
- **Query latency** (top 10, ``hnsw.ef_search`` 40, ``--queries`` queries, second pass of
  two), with the server restarted on PostgreSQL's default ``shared_buffers`` (128 MB) and
  then on the sized one. It only differs once the index outgrows the smaller cache.

Ends with one JSON line: ``default_build_s``, ``sized_build_s`` and ``ratio`` (default /
sized) for all the builds together, plus per-index figures and query latencies. Default run
(50,000 + 20,000 rows): about 3 minutes on 2 shared cores.

    python benchmarks/server_settings.py [--rows 50000] [--fde-rows 20000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from _smoke import add_flag, final, shrink  # type: ignore[import-not-found]
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from tqdm import tqdm

from pgembed.server import EmbeddedServer, machine_cores, machine_memory, machine_settings

# PostgreSQL 18's own defaults for the settings pgembed sizes.
PG_DEFAULTS = {
    "shared_buffers": "128MB",
    "effective_cache_size": "4GB",
    "maintenance_work_mem": "64MB",
    "work_mem": "4MB",
    "max_wal_size": "1GB",
    "max_worker_processes": "8",
    "max_parallel_workers": "8",
    "max_parallel_maintenance_workers": "2",
    "max_parallel_workers_per_gather": "2",
}
BUILD_SETTINGS = ("maintenance_work_mem", "max_parallel_maintenance_workers")


def hardware() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {machine_cores()} cores, {machine_memory() / 2**30:.1f} GiB"


def clustered(n: int, dim: int, seed: int, clusters: int = 100) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def connect(server: EmbeddedServer) -> psycopg.Connection[Any]:
    conn = psycopg.connect(server.libpq_url, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    return conn


def load(conn: psycopg.Connection[Any], table: str, vectors: np.ndarray[Any, Any]) -> None:
    dim = vectors.shape[1]
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, emb halfvec({dim}))")
    sql = f"COPY {table} (id, emb) FROM STDIN WITH (FORMAT BINARY)"
    with conn.cursor() as cur, cur.copy(sql) as copy:
        copy.set_types(["int8", "halfvec"])
        for i, v in enumerate(tqdm(vectors, desc=f"load {table}", unit="row", leave=False)):
            copy.write_row((i, HalfVector(v)))
    conn.execute(f"VACUUM ANALYZE {table}")


def build(
    server: EmbeddedServer, table: str, rows: int, settings: dict[str, str], label: str
) -> tuple[float, str | None]:
    """Seconds for CREATE INDEX ... USING hnsw, and pgvector's spill notice if any."""
    conn = connect(server)
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
    for name in BUILD_SETTINGS:
        conn.execute(f"SET {name} = '{settings[name]}'")
    pid = conn.info.backend_pid
    done = threading.Event()

    def progress() -> None:
        watcher = psycopg.connect(server.libpq_url, autocommit=True)
        with tqdm(total=rows, desc=f"{label} build {table}", unit="row", leave=False) as bar:
            while not done.wait(0.5):
                row = watcher.execute(
                    "SELECT tuples_done FROM pg_stat_progress_create_index WHERE pid = %s",
                    (pid,),
                ).fetchone()
                if row and row[0]:
                    bar.update(int(row[0]) - bar.n)
        watcher.close()

    thread = threading.Thread(target=progress, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    conn.execute(
        f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (emb halfvec_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)"
    )
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    conn.close()
    spill = next((n for n in notices if "no longer fits" in n), None)
    return seconds, spill


def query_ms(
    server: EmbeddedServer, table: str, queries: np.ndarray[Any, Any], label: str
) -> float:
    """Mean ms per top-10 query, second of two passes (the first warms what fits)."""
    conn = connect(server)
    conn.execute("SET hnsw.ef_search = 40")
    sql = f"SELECT id FROM {table} ORDER BY emb <=> %s LIMIT 10"
    per_pass = []
    for p in range(2):
        t0 = time.perf_counter()
        for q in tqdm(queries, desc=f"{label} queries {table} pass {p + 1}", leave=False):
            conn.execute(sql, (HalfVector(q),)).fetchall()
        per_pass.append((time.perf_counter() - t0) / len(queries) * 1000)
    size = conn.execute(f"SELECT pg_relation_size('{table}_hnsw')").fetchone()
    conn.close()
    print(f"  {label}: {table} index {size[0] / 2**20 if size else 0:.0f} MB, "
          f"{per_pass[0]:.2f} ms cold, {per_pass[1]:.2f} ms warm")  # fmt: skip
    return per_pass[1]


def restart(server: EmbeddedServer, overrides: dict[str, str]) -> None:
    server.stop()
    if overrides:
        os.environ["PGEMBED_PG_SETTINGS"] = ",".join(f"{k}={v}" for k, v in overrides.items())
    else:
        os.environ.pop("PGEMBED_PG_SETTINGS", None)
    server.start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000, help="384-dim rows")
    ap.add_argument("--fde-rows", type=int, default=20_000, help="3,936-dim rows (0: skip)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--keep-home", action="store_true", help="leave the server's home in /tmp")
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, rows=500, fde_rows=50, queries=10)

    sized = machine_settings()
    hw = hardware()
    print(f"hardware: {hw}")
    print("sized settings: " + ", ".join(f"{k}={v}" for k, v in sized.items()))
    os.environ.pop("PGEMBED_PG_SETTINGS", None)
    home = Path(tempfile.mkdtemp(prefix="pgembed-bench-settings-", dir="/tmp"))
    server = EmbeddedServer(home)
    tables = [("minilm", args.rows, 384, 1)]
    if args.fde_rows:
        tables.append(("fde", args.fde_rows, 3936, 2))
    result: dict[str, Any] = {"benchmark": "server_settings", "hardware": hw}
    try:
        server.start()
        conn = connect(server)
        queries = {}
        for table, n, dim, seed in tables:
            data = clustered(n + args.queries, dim, seed)
            load(conn, table, data[:n])
            queries[table] = data[n:]
        conn.close()

        totals = {"default": 0.0, "sized": 0.0}
        for table, n, dim, _ in tables:
            for label, settings in (("default", PG_DEFAULTS), ("sized", sized)):
                seconds, spill = build(server, table, n, settings, label)
                totals[label] += seconds
                result[f"{table}_{label}_build_s"] = round(seconds, 2)
                print(f"  {label}: {table} ({n} x {dim}) built in {seconds:.1f}s"
                      + (f"; pgvector: {spill}" if spill else ""))  # fmt: skip
                if spill:
                    result[f"{table}_{label}_spill"] = spill
            result[f"{table}_ratio"] = round(
                result[f"{table}_default_build_s"] / result[f"{table}_sized_build_s"], 2
            )

        for label, overrides in (("default", PG_DEFAULTS), ("sized", {})):
            restart(server, overrides)
            for table, _, _, _ in tables:
                result[f"{table}_{label}_query_ms"] = round(
                    query_ms(server, table, queries[table], label), 3
                )
    finally:
        os.environ.pop("PGEMBED_PG_SETTINGS", None)
        server.stop()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)

    result.update(
        rows=args.rows,
        fde_rows=args.fde_rows,
        default_build_s=round(totals["default"], 2),
        sized_build_s=round(totals["sized"], 2),
        ratio=round(totals["default"] / totals["sized"], 2),
        sized_settings=sized,
    )
    final(args, result, result["ratio"], "default_build_s / sized_build_s")


if __name__ == "__main__":
    main()
