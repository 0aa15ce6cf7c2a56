"""Benchmark: pgembed's search strategies against plain pgvector, in one run, one database.

Part A, single vectors (``--rows``, default 100,000): seeded clustered synthetic vectors of
384 dims (``--dim``) whose variance decays along the dimensions, as in Matryoshka-trained
models (the first coordinates carry the most). Strategies, through ``pgembed.query`` builders:
- baseline: plain pgvector HNSW on the full ``halfvec(d)`` (``ORDER BY e <=> q``);
- funnel: HNSW on the d/3-dim prefix (k*oversample), exact full-dimension rerank;
- binary: HNSW hamming on ``binary_quantize(e)::bit(d)``, exact rerank;
- binary_ivf: the same codes under IVFFlat (rows/300 lists; a copy of the table, so the
  planner has one index per expression), exact rerank.

Part B, multi-vector (``--mv-docs`` Wikipedia passages of the gensim sample, real MiniLM
token vectors from pgembed's encoder, a tiny random BERT with ``--smoke``; lead sentences as
queries), ground truth exact MaxSim:
- pgembed: FDE HNSW (inner product) for candidates, exact ``pgembed.maxsim`` rerank;
- pgvector-python's per-token pattern: a table of token vectors with an HNSW index, a
  UNION ALL of per-query-token ``ORDER BY v <#> q_i LIMIT t`` for candidates, then MaxSim;
- brute force: ``ORDER BY pgembed.maxsim(q, tokens) DESC`` over every row.

Give the server enough shared_buffers to hold every index (1 GB at 100,000 rows:
``ALTER SYSTEM SET shared_buffers = '1GB'`` and a restart), or the strategies evict each
other's pages and the timings measure that.

Reports recall@10 against exact search, queries/s (database executor time, and as the
Python client sees it) and index bytes; writes ``benchmarks/out/search.png`` (recall
against database time) and prints one final JSON line.

    python benchmarks/search.py [--rows 100000] [--queries 200] [--mv-docs 1500]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from _smoke import add_flag, final, out_dir, shrink  # type: ignore[import-not-found]
from tqdm import tqdm

from pgembed import db, migrate, query
from pgembed.storage import ingest
from pgembed.storage.schema import CollectionSpec, IndexParams, table

OUT = Path(__file__).resolve().parent / "out"
K = 10


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(n: int, nq: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors with a decaying spectrum (std of dim j ∝ (j+1)^-0.5)."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(dim) + 1.0) ** -0.5
    centers = rng.normal(size=(max(n // 100, 10), dim)) * scale
    pick = rng.integers(0, len(centers), n + nq)
    x = centers[pick] + 0.6 * rng.normal(size=(n + nq, dim)) * scale
    x = _unit(x)
    return x[:n], x[n:]


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{f:.5f}" for f in v) + "]"


def _recall(got: list[list[int]], exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(g) & set(e.tolist())) / K for g, e in zip(got, exact, strict=True)])
    )


def _index_bytes(conn: sa.Connection, name: str) -> int:
    return int(
        conn.execute(sa.text("SELECT pg_relation_size(to_regclass(:n))"), {"n": name}).scalar_one()
    )


def _index_name(t: sa.Table, kind: str) -> str:
    """The name pgembed gives the table's index of ``kind`` (storage/schema.py decides it)."""
    return str(next(ix.name for ix in t.indexes if ix.info.get("kind") == kind))


def _server_timer(conn: sa.Connection) -> list[float]:
    """Collect each statement's executor time, as auto_explain logs it, into the list."""
    durations: list[float] = []

    def note(diag: Any) -> None:
        m = re.match(r"duration: ([\d.]+) ms", diag.message_primary or "")
        if m:
            durations.append(float(m.group(1)))

    conn.execute(sa.text("LOAD 'auto_explain'"))
    conn.execute(sa.text("SET auto_explain.log_min_duration = 0"))
    conn.execute(sa.text("SET auto_explain.log_level = notice"))
    conn.connection.driver_connection.add_notice_handler(note)  # type: ignore[union-attr]
    return durations


def _run(
    engine: sa.Engine, stmts: list[Any], gucs: dict[str, Any]
) -> tuple[list[list[int]], float, float]:
    """Results, client queries/s and the median database time per query (ms)."""
    got = []
    with engine.connect() as conn:
        for name, value in gucs.items():
            conn.execute(sa.text("SELECT set_config(:n, :v, false)"), {"n": name, "v": str(value)})
        conn.execute(stmts[0]).all()  # warm the plan cache and the buffers
        durations = _server_timer(conn)
        t0 = time.perf_counter()
        for stmt in stmts:
            got.append([r[0] for r in conn.execute(stmt).all()])
        elapsed = time.perf_counter() - t0
        conn.invalidate()  # auto_explain stays loaded: do not pool this connection
    return got, len(stmts) / elapsed, float(np.median(durations))


def _measure(
    engine: sa.Engine, configs: dict[str, list[Any]], exact: np.ndarray, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Run every config ``rounds`` times, interleaved, and keep each one's best speed.

    The machine is shared, so a single pass mostly measures the neighbours' load. Two
    speeds: ``qps`` as the Python client sees it (about 0.7 ms per query of SQLAlchemy,
    psycopg and the socket, the same for every strategy), and ``server_ms``, the database's
    executor time per query (median), which is where the strategies differ.
    """
    curves: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    todo = [(name, i, run) for name, runs in configs.items() for i, run in enumerate(runs)]
    for r in tqdm(range(rounds), desc="timing rounds"):
        for name, i, (param, stmts, gucs) in todo:
            if r > 0 and name == "brute_force":
                continue  # seconds per query: one round says enough
            got, qps, server_ms = _run(engine, stmts, gucs)
            if r == 0:
                rec = _recall(got, exact)
                curves[name].append({"param": param, "settings": gucs, "qps": qps,
                                     "server_ms": server_ms, "recall10": rec})  # fmt: skip
            else:
                curves[name][i]["qps"] = max(curves[name][i]["qps"], qps)
                curves[name][i]["server_ms"] = min(curves[name][i]["server_ms"], server_ms)
    for curve in curves.values():
        for c in curve:
            c["latency_ms"] = 1000 / c["qps"]
            c["server_qps"] = 1000 / c["server_ms"]
    return curves


def part_a(engine: sa.Engine, rows: int, nq: int, dim: int, rounds: int) -> dict[str, Any]:
    x, qs = synthetic(rows, nq, dim)
    prefix = dim // 3
    spec = CollectionSpec("bench_single", dim, "synthetic", kinds=("matryoshka", "binary"),
                          matryoshka_dims=(prefix,), text_column=None)  # fmt: skip
    md = sa.MetaData()
    t = table(spec, md)
    names = {kind: _index_name(t, kind) for kind in ("single", "matryoshka", "binary")}
    indexes = list(t.indexes)
    t.indexes.clear()
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
    for start in tqdm(range(0, rows, 5000), desc="load rows", unit="batch"):
        with engine.begin() as conn:
            ids = np.arange(start, min(rows, start + 5000))
            ingest.write(conn, spec, ingest.Rows(ids=ids, embedding=x[ids]))
    with engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '4GB'"))
        for ix in tqdm(indexes, desc="build HNSW indexes"):
            ix.create(conn)
        conn.execute(sa.text("ANALYZE bench_single"))
    # The binary codes under IVFFlat, in a copy of the table: built once the rows are in.
    lists = max(10, rows // 300)
    ivf_spec = CollectionSpec("bench_ivf", dim, "synthetic", kinds=("binary",), text_column=None,
                              index=IndexParams(binary="ivfflat", lists=lists))  # fmt: skip
    t_ivf = table(ivf_spec, md)
    ivf_index = next(ix for ix in t_ivf.indexes if ix.info.get("kind") == "binary")
    t_ivf.indexes.clear()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_ivf"))
        t_ivf.create(conn)
        conn.execute(sa.text("INSERT INTO bench_ivf SELECT id, embedding FROM bench_single"))
        conn.execute(sa.text("SET maintenance_work_mem = '4GB'"))
        ivf_index.create(conn)
        conn.execute(sa.text("ANALYZE bench_ivf"))
    xh = x.astype(np.float16).astype(np.float32)
    exact = np.argsort(-(qs @ xh.T), axis=1)[:, :K]
    col = t.c.embedding
    only_id = lambda s: s.with_only_columns(s.selected_columns.id)  # noqa: E731
    res: dict[str, Any] = {"curves": {}}
    configs = {
        "full_hnsw": [
            (ef, [only_id(query.knn(col, q, k=K)) for q in qs], {"hnsw.ef_search": ef})
            for ef in (40, 60, 80, 160)
        ],
        "funnel": [
            (
                os_,
                [only_id(query.funnel(col, q, k=K, prefix=prefix, oversample=os_)) for q in qs],
                {"hnsw.ef_search": max(40, K * os_)},
            )
            for os_ in (2, 4, 8)
        ],
        "binary": [
            (
                os_,
                [only_id(query.binary_rerank(col, q, k=K, oversample=os_)) for q in qs],
                {"hnsw.ef_search": max(40, K * os_)},
            )
            for os_ in (10, 20, 40)
        ],
        "binary_ivf": [
            (
                f"probes {probes}, oversample {os_}",
                [
                    only_id(query.binary_rerank(t_ivf.c.embedding, q, k=K, oversample=os_))
                    for q in qs
                ],
                {"ivfflat.probes": probes, "ivfflat.iterative_scan": "relaxed_order"},
            )
            for probes, os_ in ((3, 20), (5, 20), (10, 20), (10, 40))
        ],
    }
    res["curves"] = _measure(engine, configs, exact, rounds)
    with engine.connect() as conn:
        res["index_bytes"] = {
            "full_hnsw": _index_bytes(conn, names["single"]),
            "funnel": _index_bytes(conn, names["matryoshka"]),
            "binary": _index_bytes(conn, names["binary"]),
            "binary_ivf": _index_bytes(conn, str(ivf_index.name)),
        }
        res["shared_buffers"] = conn.execute(sa.text("SHOW shared_buffers")).scalar_one()
    return res


def part_b(engine: sa.Engine, n_docs: int, rounds: int, enc: Any) -> dict[str, Any]:
    from pgembed.corpus import wikipedia
    from pgembed.storage.columns import MultiVector
    from pgembed.vectors.fde import FDEConfig, FDEEncoder
    from pgembed.vectors.maxsim import maxsim

    data = wikipedia()
    passages = data.passages[:n_docs]
    articles = {p.article for p in passages}
    queries = [q.text for q in data.queries if q.article in articles]
    dtoks = enc.encode_tokens([p.text for p in passages], progress=True)
    qtoks = enc.encode_tokens(queries, "query", progress=False)
    fde = FDEEncoder(FDEConfig(dimension=enc.dim))
    dfde = fde.encode_document(dtoks)
    qfde = fde.encode_query(qtoks)
    half = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    exact = np.stack([np.argsort(-maxsim(half(q), [half(d) for d in dtoks]))[:K] for q in qtoks])

    spec = CollectionSpec("bench_mv", enc.dim, enc.name, kinds=("fde",), text_column=None,
                          fde_dim=fde.config.output_dim)  # fmt: skip
    md = sa.MetaData()
    t = table(spec, md)
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_mv_tokens"))
        conn.execute(sa.text(f"CREATE TABLE bench_mv_tokens (doc_id bigint, v halfvec({enc.dim}))"))
    for s in tqdm(range(0, len(dtoks), 500), desc="load passages"):
        with engine.begin() as conn:
            ingest.write(conn, spec, ingest.Rows(ids=np.arange(s, min(s + 500, len(dtoks))),
                         fde=dfde[s : s + 500], tokens=dtoks[s : s + 500]))  # fmt: skip
            raw = conn.connection.driver_connection
            with raw.cursor().copy("COPY bench_mv_tokens (doc_id, v) FROM STDIN") as cp:
                for i in range(s, min(s + 500, len(dtoks))):
                    for v in dtoks[i]:
                        cp.write_row((i, _literal(v)))
    with engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '4GB'"))
        conn.execute(sa.text("CREATE INDEX bench_mv_tokens_hnsw ON bench_mv_tokens "
                             "USING hnsw (v halfvec_ip_ops)"))  # fmt: skip
        conn.execute(sa.text("ANALYZE bench_mv_tokens; ANALYZE bench_mv"))
    mv_type = MultiVector(enc.dim)
    res: dict[str, Any] = {"curves": {}, "docs": len(dtoks), "queries": len(qtoks)}

    def fde_stmts(cands: int) -> list[Any]:
        out = []
        for q, qf in zip(qtoks, qfde, strict=True):
            s = query.multivector(t.c.fde, t.c.tokens, q, qf, k=K, candidates=cands)
            out.append(s.with_only_columns(s.selected_columns.id))
        return out

    def per_token_stmts(limit: int) -> list[Any]:
        out = []
        for q in qtoks:
            params: dict[str, Any] = {f"q{i}": _literal(v) for i, v in enumerate(q)}
            branch = (
                "(SELECT doc_id FROM bench_mv_tokens ORDER BY v <#> CAST(:q{} AS halfvec) LIMIT :t)"
            )
            branches = " UNION ALL ".join(branch.format(i) for i in range(len(q)))
            sql = sa.text(
                f"WITH c AS ({branches}) SELECT id FROM bench_mv "
                "WHERE id IN (SELECT doc_id FROM c) "
                "ORDER BY pgembed.maxsim(:qt, tokens) DESC LIMIT 10"
            ).bindparams(sa.bindparam("qt", q, type_=mv_type), t=limit, **params)
            out.append(sql)
        return out

    brute = [sa.text("SELECT id FROM bench_mv ORDER BY pgembed.maxsim(:qt, tokens) DESC LIMIT 10")
             .bindparams(sa.bindparam("qt", q, type_=mv_type)) for q in qtoks]  # fmt: skip
    configs = {
        "fde_maxsim": [
            (c, fde_stmts(c), {"hnsw.ef_search": max(40, c)}) for c in (25, 50, 100, 200)
        ],
        "per_token": [
            (lim, per_token_stmts(lim), {"hnsw.ef_search": max(40, lim)}) for lim in (2, 5, 10, 20)
        ],
        "brute_force": [(0, brute, {})],
    }
    res["curves"] = _measure(engine, configs, exact, rounds)
    with engine.connect() as conn:
        res["index_bytes"] = {
            "fde": _index_bytes(conn, _index_name(t, "fde")),
            "per_token": _index_bytes(conn, "bench_mv_tokens_hnsw"),
        }
    return res


def plot(a: dict[str, Any], b: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, part, title in ((axes[0], a, "single vectors"), (axes[1], b, "multi-vector")):
        for name, curve in part.get("curves", {}).items():
            ax.plot([c["server_ms"] for c in curve], [c["recall10"] for c in curve], "o-",
                    label=name)  # fmt: skip
        ax.set_xlabel("database time per query (ms)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # unlabelled minor ticks: no overlap
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"hardware": platform.processor() or platform.machine(),
                           "shared_buffers": a.get("shared_buffers")}  # fmt: skip
    if a:
        # Each strategy at its fastest setting that reaches the recall floor, against plain
        # HNSW at its fastest setting that reaches the same floor (equal-recall speed).
        good = lambda name, floor: max(  # noqa: E731
            (c for c in a["curves"][name] if c["recall10"] >= floor),
            key=lambda c: c["server_qps"],
            default=max(a["curves"][name], key=lambda c: c["recall10"]),
        )
        base, default_ef = good("full_hnsw", 0.97), a["curves"]["full_hnsw"][0]
        fun, bina, ivf = good("funnel", 0.97), good("binary", 0.95), good("binary_ivf", 0.95)
        out.update({
            "baseline_hnsw_ef_search": base["param"], "baseline_hnsw_recall10": base["recall10"],
            "baseline_hnsw_server_qps": base["server_qps"],
            "default_ef_hnsw_recall10": default_ef["recall10"],
            "default_ef_hnsw_server_qps": default_ef["server_qps"],
            "funnel_recall10": fun["recall10"], "funnel_server_qps": fun["server_qps"],
            "funnel_oversample": fun["param"],
            "funnel_qps_ratio": fun["server_qps"] / base["server_qps"],
            "funnel_qps_ratio_vs_default_ef": fun["server_qps"] / default_ef["server_qps"],
            "funnel_client_qps_ratio": fun["qps"] / base["qps"],
            "binary_recall10": bina["recall10"], "binary_server_qps": bina["server_qps"],
            "binary_index_ratio": a["index_bytes"]["full_hnsw"] / a["index_bytes"]["binary"],
            "binary_ivf_recall10": ivf["recall10"], "binary_ivf_server_qps": ivf["server_qps"],
            "binary_ivf_setting": ivf["param"],
            "binary_ivf_index_ratio":
                a["index_bytes"]["full_hnsw"] / a["index_bytes"]["binary_ivf"],
            "index_bytes": a["index_bytes"],
        })  # fmt: skip
    if b:
        brute = b["curves"]["brute_force"][0]
        fde = next((c for c in b["curves"]["fde_maxsim"] if c["recall10"] >= 0.9),
                   b["curves"]["fde_maxsim"][-1])  # fmt: skip
        out.update({
            "mv_fde_recall10": fde["recall10"], "mv_fde_server_ms": fde["server_ms"],
            "mv_fde_client_ms": fde["latency_ms"], "mv_fde_candidates": fde["param"],
            "mv_brute_server_ms": brute["server_ms"], "mv_brute_recall10": brute["recall10"],
            "mv_latency_ratio": fde["server_ms"] / brute["server_ms"],
            "mv_per_token": b["curves"]["per_token"],
            "mv_index_bytes": b["index_bytes"],
        })  # fmt: skip
    return out


def encoder(args: argparse.Namespace, tmp: str) -> Any:
    """MiniLM; in smoke mode the tiny random BERT (32 dims: seconds, not minutes)."""
    from pgembed import Encoder

    if not args.smoke:
        return Encoder.load("all-minilm-l6-v2")
    from pgembed.encoders.testing import TINY_NAME, export_tiny

    export_tiny(tmp, fp16=False, int8=False)
    return Encoder.load(TINY_NAME, device="cpu", model_dir=tmp)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--mv-docs", type=int, default=1500)
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (best kept)")
    add_flag(ap)
    args = ap.parse_args()
    shrink(args, rows=2000, queries=10, dim=96, mv_docs=200, rounds=1)
    out = out_dir(args, OUT)
    engine = db.create_engine()
    migrate.upgrade(engine)
    a = {} if args.skip_a else part_a(engine, args.rows, args.queries, args.dim, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        b = {} if args.skip_b else part_b(engine, args.mv_docs, args.rounds, encoder(args, tmp))
    plot(a, b, out / "search.png")
    (out / "search.json").write_text(json.dumps({"single": a, "multivector": b}, indent=1))
    got = summary(a, b)
    key = "funnel_qps_ratio" if a else "mv_latency_ratio"
    final(
        args,
        got,
        round(got[key], 3),
        {
            "funnel_qps_ratio": "funnel server_qps / plain HNSW server_qps, at equal recall",
            "mv_latency_ratio": "FDE + MaxSim server_ms / brute-force MaxSim server_ms",
        }[key],
    )


if __name__ == "__main__":
    main()
