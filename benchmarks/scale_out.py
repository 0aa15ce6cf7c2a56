"""Benchmark: a collection sharded over 1, 2 and 4 embedded servers against one server.

Four embedded servers in fresh homes under /tmp, on this one machine, all with the same
settings (pgembed's sizing, ``shared_buffers`` set by ``--shared-buffers``). Data: ``--rows``
seeded synthetic clustered unit vectors (384 dims, as all-MiniLM-L6-v2's), stored as
``halfvec`` with an HNSW cosine index (pgembed's defaults), and ``--queries`` held-out
queries from the same clusters. Ground truth: exact cosine top-k in numpy over the vectors as
stored (rounded to half precision).

Contenders, side by side in one process:

- ``server``: one server, ``Collection.add`` (bulk) and ``Collection.search`` (the baseline);
- ``shards1``: the same database as the only shard of a ``ShardedCollection`` (the fan-out's
  own cost);
- ``shards2``, ``shards4``: ``ShardedCollection`` over 2 and 4 servers: ``add`` routes rows by
  id hash and loads every shard at once (bulk: COPY, then each shard's index build);
  ``search`` asks every shard at once (its own ``pgembed.search_knn`` with k and ef_search)
  and merges by score.

For each contender and ``ef_search`` in ``--ef``: queries/s with one client issuing queries
one at a time and with ``--clients`` concurrent clients (threads), p50/p95 latency of the one
client, recall@k against exact. Ingest rows/s (COPY and index builds). Then, on the 2- and
4-shard coordinators, the plain-SQL form (a UNION ALL of per-shard ``ORDER BY ... LIMIT``
subqueries under an outer ``ORDER BY d + 0 LIMIT``) is checked by EXPLAIN: an Async Append
of Async Foreign Scans whose remote SQL carries the LIMIT; its queries/s and recall are
reported too (it runs with each shard's default ef_search, which session settings cannot
change).

Prints one JSON line per contender, then a summary line (ratios against ``server`` at equal
ef_search and at equal recall, the issue's targets and whether each is met), and writes
``benchmarks/out/scale_out.png``, copied to ``docs/scale_out.png``. The default run (200,000
rows, 3 rounds) takes about seven minutes on 2 shared cores.

    python benchmarks/scale_out.py [--rows 200000] [--queries 200] [--ef 10,20,40,80,160]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from _smoke import SMOKE_OUT, add_flag, final, shrink  # type: ignore[import-not-found]
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql
from tqdm import tqdm

from pgembed import Encoder, migrate
from pgembed.pipeline import Collection
from pgembed.server import PORT, EmbeddedServer, machine_cores, machine_memory
from pgembed.shards import ShardedCollection

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
DOCS = ROOT.parent / "docs"
MODEL = "all-minilm-l6-v2"
DIM = 384
NAME = "bench"
LINK = "pgembed_link"
TARGETS = {"shards2_qps1_at_equal_recall": 0.8, "shards2_ingest": 1.5}


def hardware() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {machine_cores()} cores, {machine_memory() / 2**30:.1f} GiB"


class Server:
    """One embedded server that also admits a password role, for postgres_fdw and Python
    alike (peer authentication admits only the OS user who started it)."""

    def __init__(self, home: Path, shared_buffers: str) -> None:
        self.server = EmbeddedServer(home)
        self.password = secrets.token_hex(12)
        self.shared_buffers = shared_buffers

    def start(self) -> None:
        os.environ["PGEMBED_PG_SETTINGS"] = f"shared_buffers={self.shared_buffers}"
        try:
            self.server.start()
        finally:
            os.environ.pop("PGEMBED_PG_SETTINGS", None)
        hba = self.server.data / "pg_hba.conf"
        line = f"local all {LINK} scram-sha-256\n"
        text = hba.read_text()
        if line not in text:
            with hba.open("w") as fh:
                fh.write(line + text)
        with psycopg.connect(self.server.libpq_url, autocommit=True) as c:
            c.execute("SELECT pg_reload_conf()")
            c.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(LINK), sql.Literal(self.password)
                )
            )

    def database(self, name: str) -> str:
        with psycopg.connect(self.server.libpq_url, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = (
            f"postgresql+psycopg://{LINK}:{self.password}@/{name}"
            f"?host={self.server.run_dir}&port={PORT}"
        )
        eng = sa.create_engine(url)
        migrate.upgrade(eng)
        eng.dispose()
        return url

    def coordinator_conninfo(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=str(self.server.run_dir), port=PORT, user=LINK, password=self.password, dbname=name
        )


def clustered(n: int, nq: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((200, DIM)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n + nq)]
    x += 0.7 * rng.standard_normal(x.shape, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def exact_top(data: Any, queries: Any, k: int) -> np.ndarray[Any, Any]:
    stored = data.astype(np.float16).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    out = []
    for start in range(0, len(queries), 50):
        sims = queries[start : start + 50] @ stored.T
        out.append(np.argsort(-sims, axis=1)[:, :k])
    return np.concatenate(out)


def recall(got: list[list[int]], exact: np.ndarray[Any, Any]) -> float:
    return float(
        np.mean([len(set(g) & set(e.tolist())) / len(e) for g, e in zip(got, exact, strict=True)])
    )


def measure(search: Any, queries: Any, exact: Any, clients: int) -> dict[str, float]:
    """One client one query at a time, then ``clients`` threads; recall of the first pass."""
    for q in queries[: min(20, len(queries))]:  # warm the connections and caches
        search(q)
    lat, got = [], []
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        got.append([i for i, _ in search(q)])
        lat.append(time.perf_counter() - t)
    one = len(queries) / (time.perf_counter() - t0)
    errors: list[BaseException] = []

    def client(part: Any) -> None:
        try:
            for q in part:
                search(q)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(queries[c::clients],)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    many = len(queries) / (time.perf_counter() - t0)
    if errors:
        raise errors[0]
    lat.sort()
    return {
        "recall": round(recall(got, exact), 4),
        "qps_1": round(one, 1),
        f"qps_{clients}": round(many, 1),
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 2),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (recall is the same in every round)."""
    return {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}


def union_sql(shards: int) -> sql.Composed:
    """The plain-SQL fan-out: per-shard ORDER BY ... LIMIT under an outer ORDER BY d + 0."""
    branch = sql.SQL(
        "(SELECT id, embedding <=> %(q)s AS d FROM {} ORDER BY embedding <=> %(q)s LIMIT %(k)s)"
    )
    parts = [branch.format(sql.Identifier("public", f"{NAME}_shard_{i}")) for i in range(shards)]
    return sql.SQL("SELECT id FROM ({}) AS u ORDER BY d + 0 LIMIT %(k)s").format(
        sql.SQL(" UNION ALL ").join(parts)
    )


def plan_check(conninfo: str, shards: int, q: Any, k: int) -> dict[str, Any]:
    with psycopg.connect(conninfo) as c:
        register_vector(c)
        plan = "\n".join(
            r[0]
            for r in c.execute(
                sql.SQL("EXPLAIN (VERBOSE, COSTS OFF) ") + union_sql(shards),
                {"q": HalfVector(q), "k": k},
            )
        )
    remote = re.findall(r"Remote SQL: (.*)", plan)
    return {
        "async_append": "Async Foreign Scan" in plan and "Append" in plan,
        "async_scans": plan.count("Async Foreign Scan"),
        "limit_pushed": len(remote) == shards and all("LIMIT" in r for r in remote),
        "order_pushed": all("ORDER BY" in r and "<=>" in r for r in remote),
    }


def fdw_measure(
    conninfo: str, shards: int, queries: Any, exact: Any, k: int, rounds: int
) -> dict[str, float]:
    stmt = union_sql(shards)
    runs = []
    with psycopg.connect(conninfo, autocommit=True) as c:
        register_vector(c)
        for q in queries[:20]:
            c.execute(stmt, {"q": HalfVector(q), "k": k}).fetchall()
        for _ in range(rounds):
            got, lat = [], []
            t0 = time.perf_counter()
            for q in queries:
                t = time.perf_counter()
                got.append([r[0] for r in c.execute(stmt, {"q": HalfVector(q), "k": k})])
                lat.append(time.perf_counter() - t)
            qps = len(queries) / (time.perf_counter() - t0)
            runs.append(
                {
                    "recall": round(recall(got, exact), 4),
                    "qps_1": round(qps, 1),
                    "p50_ms": round(1000 * statistics.median(lat), 2),
                }
            )
    return median_of(runs)


def at_recall(points: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The fastest (one client) point at or above ``target`` recall; else the best recall."""
    ok = [p for p in points if p["recall"] >= target]
    if ok:
        return max(ok, key=lambda p: p["qps_1"])
    return max(points, key=lambda p: p["recall"])


def plot(lines: list[dict[str, Any]], clients: int, path: Path, hw: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for color, ln in enumerate(lines):
        pts = ln["points"]
        label, c = ln["contender"], f"C{color}"
        axes[0].plot(
            [p["recall"] for p in pts], [p["qps_1"] for p in pts], "o-", color=c, label=label
        )
        axes[1].plot(
            [p["recall"] for p in pts],
            [p[f"qps_{clients}"] for p in pts],
            "o-",
            color=c,
            label=label,
        )
        if "fdw_union" in ln:
            f = ln["fdw_union"]
            axes[0].plot(
                [f["recall"]], [f["qps_1"]], "x", ms=9, color=c, label=f"{label}: plain SQL"
            )
    for ax, title in ((axes[0], "one client"), (axes[1], f"{clients} concurrent clients")):
        ax.set_xlabel("recall@10 (points: ef_search)")
        ax.set_ylabel("queries/s")
        ax.set_title(f"knn search, {title}", fontsize=10)
        ax.legend(fontsize=7)
    names = [ln["contender"] for ln in lines if ln.get("ingest_rows_per_s")]
    rates = [ln["ingest_rows_per_s"] for ln in lines if ln.get("ingest_rows_per_s")]
    bars = axes[2].bar(names, rates)
    axes[2].bar_label(bars, fmt="%.0f", fontsize=8)
    axes[2].set_ylabel("rows/s")
    axes[2].set_title("ingest (bulk: COPY + HNSW build)", fontsize=10)
    fig.suptitle(f"Scale-out over embedded servers on one machine: {hw}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ef", default="10,20,40,80,160", help="ef_search values")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    ap.add_argument("--recall", type=float, default=0.95, help="recall of the equal-recall ratio")
    ap.add_argument("--shared-buffers", default="512MB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--plot-from", type=Path, metavar="JSON", help="only draw the plot from a run's JSON"
    )
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, rows=1000, queries=20, ef="20,40", clients=2, rounds=1, shared_buffers="32MB")
    if args.smoke:
        global OUT, DOCS
        OUT = DOCS = SMOKE_OUT
    if args.plot_from:
        saved = json.loads(args.plot_from.read_text())
        plot(saved["lines"], args.clients, OUT / "scale_out.png", saved["summary"]["hardware"])
        shutil.copy(OUT / "scale_out.png", DOCS / "scale_out.png")
        return
    efs = [int(e) for e in args.ef.split(",")]
    hw = hardware()
    print(f"hardware: {hw}; load average {os.getloadavg()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="pgembed-bench-scale-", dir="/tmp"))
    os.chmod(root, 0o755)
    sizes = (1, 2) if args.smoke else (1, 2, 4)  # smoke: two servers, each costs seconds
    servers = [Server(root / f"server{i}", args.shared_buffers) for i in range(max(sizes))]
    lines: list[dict[str, Any]] = []
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    try:
        for s in tqdm(servers, desc="start servers"):
            s.start()
        enc = Encoder.load(MODEL, device="cpu")
        data, queries = clustered(args.rows, args.queries, args.seed)
        ids = np.arange(args.rows, dtype=np.int64)
        texts = [f"row {i}" for i in range(args.rows)]
        exact = exact_top(data, queries, args.k)

        # one server: the baseline
        one_url = servers[0].database("one")
        one = Collection(sa.create_engine(one_url), NAME, enc).create()
        t0 = time.perf_counter()
        one.add(texts, ids, vectors=data, mode="bulk", progress=True)
        contenders: list[tuple[str, Any, float | None, int]] = [
            ("server", one, args.rows / (time.perf_counter() - t0), 0)
        ]
        for n in sizes:
            coord = f"coord{n}"
            with psycopg.connect(servers[0].server.libpq_url, autocommit=True) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(coord)))
            coord_url = (
                f"postgresql+psycopg://{LINK}:{servers[0].password}@/{coord}"
                f"?host={servers[0].server.run_dir}&port={PORT}"
            )
            coord_engine = sa.create_engine(coord_url)
            migrate.upgrade(coord_engine)
            # every sharded collection on shard databases of its own: a shard that already
            # holds the one-server collection is refused (no placement records it)
            urls = [s.database(f"shards{n}") for s in servers[:n]]
            coll = ShardedCollection(coord_engine, NAME, enc, shards=urls).create()
            t0 = time.perf_counter()
            print(f"ingest into {n} shards ...", flush=True)
            coll.add(texts, ids, vectors=data, mode="bulk", progress=False)
            rate = args.rows / (time.perf_counter() - t0) if n > 1 else None
            assert coll.count() == args.rows
            contenders.append((f"shards{n}", coll, rate, n))

        # Contenders take turns at each ef_search, round after round, so the machine's load
        # weighs on all alike; each figure is the median over the rounds.
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        steps = [(r, ef) for r in range(args.rounds) for ef in efs]
        for _, ef in tqdm(steps, desc="search (rounds x ef_search values)"):
            for name, coll, _, _ in contenders:

                def search(q: Any, coll: Any = coll, ef: int = ef) -> Any:
                    return coll.search(q, k=args.k, ef_search=ef)

                runs.setdefault((name, ef), []).append(
                    measure(search, queries, exact, args.clients)
                )
        points = {
            name: [{"ef_search": ef, **median_of(runs[name, ef])} for ef in efs]
            for name, *_ in contenders
        }
        for name, _, rate, n in contenders:
            line: dict[str, Any] = {"contender": name, "rows": args.rows, "points": points[name]}
            if rate is not None:
                line["ingest_rows_per_s"] = round(rate, 1)
            if n > 1:
                conninfo = servers[0].coordinator_conninfo(f"coord{n}")
                line["plan"] = plan_check(conninfo, n, queries[0], args.k)
                line["fdw_union"] = fdw_measure(conninfo, n, queries, exact, args.k, args.rounds)
            lines.append(line)
            print(json.dumps(line), flush=True)
    finally:
        for s in servers:
            s.server.stop()
        shutil.rmtree(root, ignore_errors=True)

    by = {ln["contender"]: ln for ln in lines}
    base = by["server"]
    summary: dict[str, Any] = {
        "benchmark": "scale_out",
        "hardware": hw,
        "rows": args.rows,
        "queries": args.queries,
        "rounds": args.rounds,
        "k": args.k,
        "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - started, 1),
    }
    ef40 = efs.index(40) if 40 in efs else len(efs) // 2
    for name in [f"shards{n}" for n in sizes]:
        ln = by[name]
        same = ln["points"][ef40]
        b = base["points"][ef40]
        mine, theirs = at_recall(ln["points"], args.recall), at_recall(base["points"], args.recall)
        summary[name] = {
            "ef_search": same["ef_search"],
            "recall": [same["recall"], b["recall"]],
            "qps1_ratio_same_ef": round(same["qps_1"] / b["qps_1"], 3),
            f"qps{args.clients}_ratio_same_ef": round(
                same[f"qps_{args.clients}"] / b[f"qps_{args.clients}"], 3
            ),
            "qps1_ratio_at_equal_recall": round(mine["qps_1"] / theirs["qps_1"], 3),
            "equal_recall_points": [
                {"ef_search": mine["ef_search"], "recall": mine["recall"]},
                {"ef_search": theirs["ef_search"], "recall": theirs["recall"]},
            ],
        }
        if "ingest_rows_per_s" in ln:
            summary[name]["ingest_ratio"] = round(
                ln["ingest_rows_per_s"] / base["ingest_rows_per_s"], 3
            )
        if "plan" in ln:
            summary[name]["plan"] = ln["plan"]
    got2 = summary["shards2"]
    summary["targets"] = {
        "shards2_qps1_at_equal_recall": [
            got2["qps1_ratio_at_equal_recall"],
            TARGETS["shards2_qps1_at_equal_recall"],
            got2["qps1_ratio_at_equal_recall"] >= TARGETS["shards2_qps1_at_equal_recall"],
        ],
        "shards2_ingest": [
            got2["ingest_ratio"],
            TARGETS["shards2_ingest"],
            got2["ingest_ratio"] >= TARGETS["shards2_ingest"],
        ],
    }
    (OUT / "scale_out.json").parent.mkdir(parents=True, exist_ok=True)
    (OUT / "scale_out.json").write_text(json.dumps({"lines": lines, "summary": summary}, indent=1))
    plot(lines, args.clients, OUT / "scale_out.png", hw)
    if DOCS != OUT:
        shutil.copy(OUT / "scale_out.png", DOCS / "scale_out.png")
    final(
        args,
        summary,
        got2["qps1_ratio_at_equal_recall"],
        "shards2 qps_1 / server qps_1, each at its cheapest ef_search reaching --recall",
    )


if __name__ == "__main__":
    main()
