"""Benchmark: ingest throughput, pgembed's bulk and incremental paths against what a pgvector
user writes by hand, and ``Collection.add`` against the encoder alone (issue 11, item 6).

One embedded server in a fresh home under /tmp (sized to the machine by pgembed), one
process, pgembed and the baseline side by side. Kind sets: ``single``; ``smb`` =
``single`` + ``matryoshka`` (MiniLM's prefixes 64, 128, 256: one HNSW index each) +
``binary`` (HNSW hamming on ``binary_quantize``); ``all`` = those + ``fde`` (pgembed's
default FDE, 3,936 dims, and the collection's FDE index: HNSW on the halfvec or on its
``binary_quantize``, the baseline builds the same) + ``multivector`` (``tokens halfvec[]``, no
index). Every table also stores a short text and its md5 (``content``, ``embedded_hash``),
on both sides.

Modes (``--modes``), one JSON line each:

- ``db``: **DB only**, precomputed synthetic vectors (seeded clusters, 384 dims, unit
  norm; for ``all`` also 16 to 32 token vectors per row, each near its row's pooled
  vector). pgembed: ``Collection.add(texts, ids, vectors=..., mode="bulk")`` into a new
  collection (indexes deferred, binary COPY, ANALYZE, one ``CREATE INDEX`` per index with
  the server's maintenance settings; FDE vectors computed by pgembed from the tokens, in
  the timed region). Baseline: the same table created by hand, ``COPY ... FROM STDIN
  (FORMAT binary)`` with psycopg and pgvector-python's dumpers (``copy.write_row`` per
  row, as pgvector-python's README shows), then ``CREATE INDEX ... USING hnsw`` for the
  same indexes with the same ``maintenance_work_mem`` and
  ``max_parallel_maintenance_workers`` (read from the server, as pgembed does); the
  baseline's FDE vectors are computed with ``pgembed.vectors.fde.FDEEncoder`` before its
  timer starts. Keys: ``pgembed_rows_per_s``, ``baseline_rows_per_s``, ``ratio``, and
  where the time goes (``pgembed_s`` / ``baseline_s``: COPY, ANALYZE, each index build;
  ``pgembed_fde_s``: FDE computation inside ``add``). ``all`` uses ``--all-rows`` rows
  (default 20,000: with its token sets and FDE a row takes about 41 KB, so 100,000 rows
  would be 4 GB of table, as much again of synthetic tokens in memory, and several times
  the run time on 2 shared cores).
- ``incremental``: after each ``db`` load of ``--rows`` rows, ``--incremental`` new rows
  (default 1,000) added with ``mode="incremental"`` (upsert through the staging table into
  the indexed table); baseline: one binary COPY of the same rows into the baseline's
  indexed table.
- ``e2e``: **end to end**, text in: ``--texts`` sentences (default 20,000) of gensim's
  Wikipedia sample and ``lee_background.cor`` (``pgembed.corpus``), repeated in a seeded
  shuffle if there are too few, encoded with all-MiniLM-L6-v2 on the CPU. Baseline:
  ``Encoder.encode_both`` on the same texts, timed before and after each ``add`` (one
  run between two adds serves both; the faster of the two is the baseline);
  ``Collection.add(texts, ids)`` into a new collection (``auto`` mode: bulk into an empty
  collection, index builds included). Key: ``ingest_over_encode`` (add rows/s over
  encode_both rows/s), and ``pgembed_s``: encoding, FDE and index builds inside ``add``.

Ends with a summary line (every ratio, the targets of issue 11 and whether each is met)
and writes ``benchmarks/out/ingest.png`` (rows/s per mode and kind set, pgembed against
the baseline), copied to ``docs/ingest.png``. The default run (100,000 rows, 20,000 for
``all``, 20,000 texts) takes about half an hour on 2 shared cores.

    python benchmarks/ingest.py [--rows 100000] [--all-rows 20000] [--texts 20000]
        [--kinds single,smb,all] [--modes db,incremental,e2e] [--no-baseline]
    python benchmarks/ingest.py --rows 1000000 --kinds single --modes db   # the 1M load
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from _smoke import SMOKE_OUT, add_flag, final, shrink  # type: ignore[import-not-found]
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from tqdm import tqdm

from pgembed import Encoder, migrate
from pgembed.errors import UnknownCollectionError
from pgembed.pipeline import Collection
from pgembed.server import EmbeddedServer, machine_cores, machine_memory
from pgembed.storage import bulk
from pgembed.vectors.fde import FDEConfig, FDEEncoder

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
DOCS = ROOT.parent / "docs"
MODEL = "all-minilm-l6-v2"
DIM = 384
KIND_SETS: dict[str, tuple[str, ...]] = {
    "single": ("single",),
    "smb": ("single", "matryoshka", "binary"),
    "all": ("single", "matryoshka", "binary", "fde", "multivector"),
}
TARGETS = {
    "db_single_ratio": 0.9,
    "e2e_smb_ingest_over_encode": 0.6,
    "e2e_all_ingest_over_encode": 0.4,
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def hardware() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {machine_cores()} cores, {machine_memory() / 2**30:.1f} GiB"


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


# --- data --------------------------------------------------------------------------------


class Data:
    """Seeded synthetic rows: texts, pooled unit vectors, token sets (when asked for)."""

    def __init__(self, n: int, seed: int, tokens: bool, id_base: int = 0) -> None:
        rng = np.random.default_rng(seed)
        clusters = 100
        centers = rng.standard_normal((clusters, DIM)).astype(np.float32)
        x = centers[rng.integers(0, clusters, n)]
        x += 0.6 * rng.standard_normal((n, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        self.pooled = x
        self.ids = np.arange(id_base, id_base + n, dtype=np.int64)
        words = ("vector", "index", "graph", "table", "query", "token", "search", "build")
        picks = rng.integers(0, len(words), (n, 6))
        self.texts = [
            f"document {i}: " + " ".join(words[j] for j in row)
            for i, row in zip(self.ids.tolist(), picks.tolist(), strict=True)
        ]
        self.tokens: list[np.ndarray[Any, Any]] | None = None
        if tokens:
            counts = rng.integers(16, 33, n)
            flat = np.repeat(x, counts, axis=0)
            flat += 0.15 * rng.standard_normal(flat.shape, dtype=np.float32)
            flat /= np.linalg.norm(flat, axis=1, keepdims=True)
            self.tokens = np.split(flat, np.cumsum(counts)[:-1])

    def __len__(self) -> int:
        return len(self.ids)

    def vectors(self) -> Any:
        return self.pooled if self.tokens is None else (self.pooled, self.tokens)


def sentences(n: int, seed: int) -> list[str]:
    """``n`` sentences of gensim's Wikipedia sample and Lee corpus (seeded shuffle)."""
    from pgembed.corpus import lee_background, wikipedia

    pool: list[str] = []
    for text in [p.text for p in wikipedia().passages] + lee_background():
        pool += [s for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]
    pool = list(dict.fromkeys(pool))
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        rng.shuffle(pool)
        out += pool[: n - len(out)]
    return out


# --- the baseline: what a pgvector user writes by hand ----------------------------------


def base_indexes(
    table: str, kinds: tuple[str, ...], fde_dim: int, fde_index: str = "halfvec"
) -> list[tuple[str, str]]:
    """(name, CREATE INDEX) for the indexes pgembed builds for ``kinds`` (same parameters)."""
    w = "WITH (m = 16, ef_construction = 64)"
    out = [
        (
            f"{table}_emb",
            f"CREATE INDEX {table}_emb ON {table} USING hnsw (embedding halfvec_cosine_ops) {w}",
        )
    ]
    if "matryoshka" in kinds:
        for m in (64, 128, 256):
            out.append(
                (
                    f"{table}_emb{m}",
                    f"CREATE INDEX {table}_emb{m} ON {table} USING hnsw "
                    f"((subvector(embedding, 1, {m})::halfvec({m})) halfvec_cosine_ops) {w}",
                )
            )
    if "binary" in kinds:
        out.append(
            (
                f"{table}_bq",
                f"CREATE INDEX {table}_bq ON {table} USING hnsw "
                f"((binary_quantize(embedding)::bit({DIM})) bit_hamming_ops) {w}",
            )
        )
    if "fde" in kinds and fde_index == "halfvec":
        out.append(
            (
                f"{table}_fde",
                f"CREATE INDEX {table}_fde ON {table} USING hnsw (fde halfvec_ip_ops) {w}",
            )
        )
    elif "fde" in kinds:
        expr = f"(binary_quantize(fde)::bit({fde_dim}))"
        out.append(
            (
                f"{table}_fde_bq",
                f"CREATE INDEX {table}_fde_bq ON {table} USING hnsw ({expr} bit_hamming_ops) {w}",
            )
        )
    return out


def connect(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    register_vector(conn)
    return conn


def base_copy(
    conn: psycopg.Connection[Any],
    table: str,
    data: Data,
    fde: np.ndarray[Any, Any] | None,
    cols: list[str],
    label: str,
) -> None:
    """One binary COPY, pgvector-python style: ``copy.write_row`` per row."""
    types = {
        "id": "int8",
        "content": "text",
        "embedded_hash": "text",
        "embedding": "halfvec",
        "fde": "halfvec",
        "tokens": "halfvec[]",
    }
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT binary)") as copy,
    ):
        copy.set_types([types[c] for c in cols])
        for i in tqdm(range(len(data)), desc=f"{label} COPY", unit="row", leave=False):
            text = data.texts[i]
            row: list[Any] = [
                int(data.ids[i]),
                text,
                hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(),
                HalfVector(data.pooled[i]),
            ]
            if fde is not None:
                row.append(HalfVector(fde[i]))
            if data.tokens is not None:
                row.append([HalfVector(t) for t in data.tokens[i]])
            copy.write_row(row)


def timed_build(url: str, conn: psycopg.Connection[Any], name: str, ddl: str, rows: int) -> float:
    """Seconds for one CREATE INDEX on ``conn``, its progress polled from another session."""
    pid = conn.info.backend_pid
    done = threading.Event()

    def watch() -> None:
        with (
            psycopg.connect(url, autocommit=True) as mon,
            tqdm(total=rows, desc=f"baseline index {name}", unit="tuple", leave=False) as bar,
        ):
            while not done.wait(0.5):
                row = mon.execute(
                    "SELECT tuples_done FROM pg_stat_progress_create_index WHERE pid = %s",
                    (pid,),
                ).fetchone()
                if row and row[0]:
                    bar.update(int(row[0]) - bar.n)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    conn.execute(ddl)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return seconds


def baseline_load(
    url: str,
    table: str,
    kinds: tuple[str, ...],
    data: Data,
    fde: np.ndarray[Any, Any] | None,
    settings: dict[str, str],
    fde_index: str = "halfvec",
) -> tuple[float, dict[str, float], dict[str, int]]:
    """COPY then CREATE INDEX; (seconds in all, seconds per stage, bytes per relation)."""
    conn = connect(url)
    cols = ["id", "content", "embedded_hash", "embedding"]
    ddl = [f"id bigint PRIMARY KEY, content text, embedded_hash text, embedding halfvec({DIM})"]
    if fde is not None:
        cols.append("fde")
        ddl.append(f"fde halfvec({fde.shape[1]})")
    if data.tokens is not None:
        cols.append("tokens")
        ddl.append(f"tokens halfvec({DIM})[]")
    conn.execute(f"DROP TABLE IF EXISTS {table}")  # type: ignore[arg-type]
    conn.execute(f"CREATE TABLE {table} ({', '.join(ddl)})")  # type: ignore[arg-type]
    for name, value in settings.items():
        conn.execute(f"SET {name} = '{value}'")  # type: ignore[arg-type]
    conn.execute("CHECKPOINT")
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    base_copy(conn, table, data, fde, cols, "baseline")
    stages["copy"] = time.perf_counter() - t0
    fde_dim = 0 if fde is None else fde.shape[1]
    for name, sql in base_indexes(table, kinds, fde_dim, fde_index):
        stages[f"index {name.removeprefix(table + '_')}"] = timed_build(
            url, conn, name, sql, len(data)
        )
    total = time.perf_counter() - t0
    sizes = relation_sizes(conn, table)
    conn.close()
    return total, stages, sizes


def relation_sizes(
    conn: psycopg.Connection[Any], table: str, schema: str = "public"
) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass ORDER BY 1",
        (f'"{schema}"."{table}"',),
    ).fetchall()
    out = {str(name): int(size) for name, size in rows}
    total = conn.execute(
        "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass)",
        (f'"{schema}"."{table}"',) * 2,
    ).fetchone()
    assert total is not None
    out["table_total"], out["table_heap"] = int(total[0]), int(total[1])
    return out


# --- pgembed -------------------------------------------------------------------------------


class Timeline:
    """on_progress events with their times: where ``add`` spends its time."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[float, bulk.Progress]] = []

    def __call__(self, p: bulk.Progress) -> None:
        self.events.append((time.perf_counter() - self.t0, p))

    def stages(self, total: float, strip: str) -> dict[str, float]:
        writes = [t for t, p in self.events if p.stage == "write"]
        starts = {p.name: t for t, p in self.events if p.stage == "index" and p.phase == "start"}
        dones = {p.name: t for t, p in self.events if p.stage == "index" and p.phase == "done"}
        out = {"write": writes[-1] if writes else 0.0}
        if starts:
            out["analyze and setup"] = min(starts.values()) - out["write"]
        for name, t in starts.items():
            out[f"index {name.removeprefix(strip)}"] = dones.get(name, total) - t
        return out


@contextlib.contextmanager
def timing(obj: Any, attr: str, acc: list[float]) -> Iterator[None]:
    """Add the seconds spent in ``obj.attr(...)`` to ``acc[0]`` while the block runs."""
    inner: Callable[..., Any] = getattr(obj, attr)

    def wrapped(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            acc[0] += time.perf_counter() - t

    setattr(obj, attr, wrapped)
    try:
        yield
    finally:
        if attr in vars(obj):
            delattr(obj, attr)


def pgembed_add(
    coll: Collection, texts: list[str], ids: np.ndarray[Any, Any], vectors: Any, mode: bulk.Mode
) -> tuple[float, dict[str, float]]:
    """Seconds of one ``add`` and where they went (write, index builds, encoder, FDE)."""
    timeline = Timeline()
    enc_s, fde_s = [0.0], [0.0]
    with contextlib.ExitStack() as stack:
        for attr in ("encode", "encode_both", "encode_tokens"):
            stack.enter_context(timing(coll.encoder, attr, enc_s))
        if coll.spec.has("fde"):
            stack.enter_context(timing(coll.fde, "encode_document", fde_s))
        t0 = time.perf_counter()
        timeline.t0 = t0
        coll.add(texts, ids, vectors=vectors, mode=mode, progress=True, on_progress=timeline)
        total = time.perf_counter() - t0
    from pgembed.storage.schema import index_base

    stages = timeline.stages(total, index_base(coll.spec.table_name) + "_")
    if vectors is None:
        stages["encode (main thread)"] = enc_s[0]
    if coll.spec.has("fde"):
        stages["fde (main thread)"] = fde_s[0]
    return total, stages


def r(x: float, nd: int = 1) -> float:
    return round(float(x), nd)


def rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: r(v, 2) for k, v in d.items()}


# --- modes --------------------------------------------------------------------------------


def run_db(
    engine: sa.Engine,
    url: str,
    enc: Encoder,
    name: str,
    n: int,
    seed: int,
    baseline: bool,
    incremental: int,
    first: str,
) -> list[dict[str, Any]]:
    kinds = KIND_SETS[name]
    data = Data(n, seed, tokens="fde" in kinds)
    coll = Collection(engine, f"bench_db_{name}", enc, kinds=kinds)
    with contextlib.suppress(UnknownCollectionError):
        coll.drop(force=True)
    coll.create()
    fde_dim = coll.spec.fde_dim or 0
    line: dict[str, Any] = {
        "mode": "db",
        "kinds": name,
        "kind_list": list(kinds),
        "rows": n,
        "dim": DIM,
        "load_avg_start": load_avg(),
    }
    if "fde" in kinds:
        line["tokens_per_row"] = r(np.mean([len(t) for t in data.tokens or []]), 1)
    with engine.connect() as conn:
        settings = bulk.build_settings(conn)
    line["build_settings"] = settings
    fde = None
    if baseline and "fde" in kinds:
        t = time.perf_counter()
        fde = FDEEncoder(FDEConfig(dimension=DIM)).encode_document(data.tokens or [])
        line["baseline_fde_precompute_s"] = r(time.perf_counter() - t, 2)

    def ours() -> None:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CHECKPOINT")
        total, stages = pgembed_add(coll, data.texts, data.ids, data.vectors(), "bulk")
        line["pgembed_s"] = rounded({"total": total, **stages})
        line["pgembed_rows_per_s"] = r(n / total)
        if "fde" in kinds:
            line["pgembed_fde_s"] = r(stages["fde (main thread)"], 2)
            line["pgembed_fde_share"] = round(stages["fde (main thread)"] / total, 3)
        with psycopg.connect(url, autocommit=True) as c:
            line["pgembed_bytes"] = relation_sizes(c, coll.spec.table_name)

    def theirs() -> None:
        total, stages, sizes = baseline_load(
            url,
            f"base_{name}",
            kinds,
            data,
            fde,
            settings,
            coll.spec.fde_index if "fde" in kinds else "halfvec",
        )
        line["baseline_s"] = rounded({"total": total, **stages})
        line["baseline_rows_per_s"] = r(n / total)
        line["baseline_bytes"] = sizes

    order = [ours, theirs] if first == "pgembed" else [theirs, ours]
    for step in order if baseline else [ours]:
        step()
    line["order"] = "pgembed first" if order[0] is ours else "baseline first"
    if baseline:
        line["ratio"] = round(line["pgembed_rows_per_s"] / line["baseline_rows_per_s"], 3)
    line["load_avg_end"] = load_avg()
    lines = [line]
    if incremental:
        lines.append(run_incremental(url, coll, name, data, incremental, seed, baseline, fde_dim))
    coll.drop(force=True)
    if baseline:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS base_{name}")  # type: ignore[arg-type]
    return lines


def run_incremental(
    url: str,
    coll: Collection,
    name: str,
    big: Data,
    n: int,
    seed: int,
    baseline: bool,
    fde_dim: int,
) -> dict[str, Any]:
    kinds = KIND_SETS[name]
    data = Data(n, seed + 1000, tokens="fde" in kinds, id_base=len(big))
    line: dict[str, Any] = {
        "mode": "incremental",
        "kinds": name,
        "rows": n,
        "into_rows": len(big),
        "load_avg_start": load_avg(),
    }
    total, stages = pgembed_add(coll, data.texts, data.ids, data.vectors(), "incremental")
    line["pgembed_rows_per_s"] = r(n / total)
    line["pgembed_s"] = rounded({"total": total, **stages})
    if baseline:
        fde = None
        if "fde" in kinds:
            fde = FDEEncoder(FDEConfig(dimension=DIM)).encode_document(data.tokens or [])
        conn = connect(url)
        cols = ["id", "content", "embedded_hash", "embedding"]
        cols += ["fde"] if fde is not None else []
        cols += ["tokens"] if data.tokens is not None else []
        t0 = time.perf_counter()
        base_copy(conn, f"base_{name}", data, fde, cols, "baseline incremental")
        seconds = time.perf_counter() - t0
        conn.close()
        line["baseline_rows_per_s"] = r(n / seconds)
        line["ratio"] = round(line["pgembed_rows_per_s"] / line["baseline_rows_per_s"], 3)
    line["load_avg_end"] = load_avg()
    return line


def encode_rate(enc: Encoder, texts: list[str]) -> float:
    """``encode_both`` rows/s on ``texts``."""
    t0 = time.perf_counter()
    enc.encode_both(texts, "document", progress=True)
    return r(len(texts) / (time.perf_counter() - t0))


def run_e2e(
    engine: sa.Engine, enc: Encoder, name: str, texts: list[str], before: float
) -> dict[str, Any]:
    """``add`` of ``texts``, bracketed by ``encode_both`` runs: ``before`` (rows/s, measured
    by the caller) and one after. The ratio is taken against the faster of the two, so a
    load that moves during the run does not flatter pgembed."""
    kinds = KIND_SETS[name]
    n = len(texts)
    line: dict[str, Any] = {
        "mode": "e2e",
        "kinds": name,
        "kind_list": list(kinds),
        "texts": n,
        "model": MODEL,
        "device": "cpu",
        "load_avg_start": load_avg(),
    }
    coll = Collection(engine, f"bench_e2e_{name}", enc, kinds=kinds)
    with contextlib.suppress(UnknownCollectionError):
        coll.drop(force=True)
    coll.create()
    total, stages = pgembed_add(coll, texts, np.arange(n), None, "auto")
    line["add_mode"] = coll.last_mode
    line["add_rows_per_s"] = r(n / total)
    line["pgembed_s"] = rounded({"total": total, **stages})
    line["load_avg_after_add"] = load_avg()
    after = encode_rate(enc, texts)
    line["encode_both_rows_per_s_before_after"] = [before, after]
    line["encode_both_rows_per_s"] = max(before, after)
    line["ingest_over_encode"] = round(line["add_rows_per_s"] / line["encode_both_rows_per_s"], 3)
    line["ingest_over_encode_vs_mean"] = round(line["add_rows_per_s"] / ((before + after) / 2), 3)
    line["load_avg_end"] = load_avg()
    coll.drop(force=True)
    return line


# --- plot ------------------------------------------------------------------------------------


def plot(lines: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ours, theirs = [], [], []
    for ln in lines:
        if ln["mode"] == "e2e":
            labels.append(f"end to end\n{ln['kinds']}, {ln['texts']:,} texts")
            ours.append(ln["add_rows_per_s"])
            theirs.append(ln["encode_both_rows_per_s"])
        else:
            rows = ln["rows"]
            labels.append(f"{ln['mode']}\n{ln['kinds']}, {rows:,} rows")
            ours.append(ln["pgembed_rows_per_s"])
            theirs.append(ln.get("baseline_rows_per_s", 0.0))
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(labels)), 4.8))
    b1 = ax.bar(x - 0.2, ours, 0.4, label="pgembed (add)")
    b2 = ax.bar(
        x + 0.2,
        theirs,
        0.4,
        label="baseline (db: COPY + CREATE INDEX by hand; incremental: COPY into the "
        "indexed table; end to end: encode_both alone)",
    )
    ax.bar_label(b1, fmt="%.0f", fontsize=7)
    ax.bar_label(b2, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("rows/s (log)")
    ax.set_title("Ingest throughput, " + hardware(), fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="db rows for single and smb")
    ap.add_argument("--all-rows", type=int, default=20_000, help="db rows for all five kinds")
    ap.add_argument("--texts", type=int, default=20_000, help="e2e texts")
    ap.add_argument("--incremental", type=int, default=1000, help="rows per incremental add")
    ap.add_argument("--kinds", default="single,smb,all", help="kind sets: single, smb, all")
    ap.add_argument("--modes", default="db,incremental,e2e", help="db, incremental, e2e")
    ap.add_argument("--no-baseline", action="store_true", help="db: pgembed's side only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-home", action="store_true", help="leave the server's home in /tmp")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--plot-from",
        type=Path,
        metavar="LOG",
        help="only draw the plot from the JSON lines of earlier runs' output",
    )
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, rows=300, all_rows=60, texts=40, incremental=50)
    if args.smoke:
        global OUT, DOCS
        OUT = DOCS = SMOKE_OUT
    if args.plot_from:
        got = [json.loads(m) for m in re.findall(r'\{"mode".*', args.plot_from.read_text())]
        plot(got, OUT / "ingest.png")
        shutil.copy(OUT / "ingest.png", DOCS / "ingest.png")
        return
    sets = [k.strip() for k in args.kinds.split(",") if k.strip()]
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    bad = [k for k in sets if k not in KIND_SETS] + [
        m for m in modes if m not in ("db", "incremental", "e2e")
    ]
    if bad:
        ap.error(f"unknown kind set or mode: {bad}")

    hw = hardware()
    print(f"hardware: {hw}; load average {os.getloadavg()}")
    home = Path(tempfile.mkdtemp(prefix="pgembed-bench-ingest-", dir="/tmp"))
    os.environ.pop("PGEMBED_PG_SETTINGS", None)
    server = EmbeddedServer(home)
    lines: list[dict[str, Any]] = []
    started = time.perf_counter()
    load_start = load_avg()
    try:
        url = server.start()
        from pgembed.db import create_engine

        engine = create_engine(url)
        migrate.upgrade(engine)
        libpq = server.libpq_url
        with psycopg.connect(libpq, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        enc = Encoder.load(MODEL, device="cpu")
        if modes & {"db", "incremental"}:
            for i, name in enumerate(sets):
                n = args.all_rows if name == "all" else args.rows
                got = run_db(
                    engine,
                    libpq,
                    enc,
                    name,
                    n,
                    args.seed,
                    not args.no_baseline,
                    args.incremental if "incremental" in modes else 0,
                    "pgembed" if i % 2 == 0 else "baseline",
                )
                for ln in got:
                    if ln["mode"] == "db" and "db" not in modes:
                        continue
                    print(json.dumps(ln), flush=True)
                    lines.append(ln)
        if "e2e" in modes:
            texts = sentences(args.texts, args.seed)
            rate = encode_rate(enc, texts)
            for name in [s for s in sets if s != "single"] or sets:
                ln = run_e2e(engine, enc, name, texts, rate)
                rate = ln["encode_both_rows_per_s_before_after"][1]
                print(json.dumps(ln), flush=True)
                lines.append(ln)
        engine.dispose()
    finally:
        server.stop()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)

    summary: dict[str, Any] = {
        "benchmark": "ingest",
        "hardware": hw,
        "minutes": r((time.perf_counter() - started) / 60),
        "load_avg_start": load_start,
        "load_avg_end": load_avg(),
    }
    for ln in lines:
        key = f"{ln['mode']}_{ln['kinds']}"
        if ln["mode"] == "e2e":
            summary[f"{key}_ingest_over_encode"] = ln["ingest_over_encode"]
            summary[f"{key}_add_rows_per_s"] = ln["add_rows_per_s"]
            summary[f"{key}_encode_both_rows_per_s"] = ln["encode_both_rows_per_s"]
        else:
            summary[f"{key}_rows"] = ln["rows"]
            summary[f"{key}_pgembed_rows_per_s"] = ln["pgembed_rows_per_s"]
            if "ratio" in ln:
                summary[f"{key}_baseline_rows_per_s"] = ln["baseline_rows_per_s"]
                summary[f"{key}_ratio"] = ln["ratio"]
    summary["targets"] = {
        k: {"target": v, "measured": summary[k], "met": summary[k] >= v}
        for k, v in TARGETS.items()
        if k in summary
    }
    if lines and not args.no_plot:
        png = OUT / "ingest.png"
        plot(lines, png)
        if DOCS != OUT:
            shutil.copy(png, DOCS / "ingest.png")
        print(f"wrote {png}" + ("" if DOCS == OUT else " and docs/ingest.png"))
    key = next((k for k in summary if k.startswith("db_") and k.endswith("_ratio")), None)
    final(
        args,
        summary,
        summary[key] if key else None,
        f"{key}: pgembed_rows_per_s / baseline_rows_per_s" if key else "no db run",
    )


if __name__ == "__main__":
    main()
