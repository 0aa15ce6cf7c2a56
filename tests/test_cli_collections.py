"""`pgembed ingest / search / sync / collections` through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection
from pgembed.corpus import lee_background


def _cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgembed.cli", *args],
        env=env, input=stdin, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_ingest_search_sync(
    engine: Engine, tiny_model_dir: Path, tiny_encoder: Any, tmp_path: Path
) -> None:
    env = {**os.environ, "PGEMBED_DATABASE_URL": engine.url.render_as_string(hide_password=False),
           "PGEMBED_MODEL_DIR": str(tiny_model_dir)}  # fmt: skip
    texts = [s for doc in lee_background()[:20] for s in doc.split(". ") if len(s.split()) > 4][:60]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n")
    args = ("ingest", "cli docs", str(src), "--model", "tiny-bert", "--kinds", "single,fde",
            "--no-progress")  # fmt: skip
    first = _cli(env, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{len(texts)} rows written")
    again = _cli(env, *args)  # resumable: nothing left to do
    assert again.stdout.startswith("0 rows written"), again.stderr

    jsonl = "\n".join(json.dumps({"id": 1000 + i, "text": t}) for i, t in enumerate(texts[:5]))
    piped = _cli(env, "ingest", "cli docs", "-", "--jsonl", "--no-progress", stdin=jsonl)
    assert piped.stdout.startswith("5 rows written"), piped.stderr

    for strategy in ("knn", "multivector"):
        out = _cli(env, "search", "cli docs", texts[3], "-k", "3", "--strategy", strategy, "--json")
        assert out.returncode == 0, out.stderr
        hits = [json.loads(line) for line in out.stdout.splitlines()]
        assert [h["rank"] for h in hits] == [1, 2, 3]
        want = Collection.open(engine, "cli docs", tiny_encoder).search(
            texts[3], 3, strategy=strategy
        )
        assert [h["id"] for h in hits] == [i for i, _ in want]
        by_id = {i: t for i, t in enumerate(texts)} | {1000 + i: t for i, t in enumerate(texts)}
        assert [h["text"] for h in hits] == [by_id[h["id"]] for h in hits]

    # the plain output: rank, id, score and a one-line snippet cut to the terminal
    plain = _cli({**env, "COLUMNS": "70"}, "search", "cli docs", texts[3], "-k", "5")
    as_json = _cli(env, "search", "cli docs", texts[3], "-k", "5", "--json")
    assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr + as_json.stderr
    rows = [line.split(maxsplit=3) for line in plain.stdout.splitlines()]
    hits = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(int(r[0]), int(r[1]), r[2]) for r in rows] == [
        (h["rank"], h["id"], f"{h['score']:.4f}") for h in hits
    ]
    assert all(len(line) <= 70 for line in plain.stdout.splitlines())
    for (*_, snippet), h in zip(rows, hits, strict=True):
        text = " ".join(h["text"].split())
        assert snippet == text or (snippet.endswith("…") and text.startswith(snippet[:-1]))
    assert any(r[3].endswith("…") for r in rows)  # the lee sentences are longer than 40

    folded = "Rain fell all night\non the quiet\tharbour town"
    record = json.dumps({"id": 2000, "text": folded})
    _cli(env, "ingest", "cli docs", "-", "--jsonl", "--no-progress", stdin=record)
    one = _cli(env, "search", "cli docs", folded, "-k", "1")
    assert one.stdout.strip().split(maxsplit=3)[1:] == [
        "2000",
        one.stdout.split()[2],
        "Rain fell all night on the quiet harbour town",
    ], one.stderr

    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE \"cli docs\" SET content = content || ' (edited)' WHERE id < 4")
        )
    synced = _cli(env, "sync", "cli docs", "--no-progress")
    assert synced.stdout.strip() == "4 rows embedded in cli docs", synced.stderr
    listed = _cli(env, "collections")
    assert "cli docs\tpublic.cli docs\ttiny-bert\tsingle,fde,multivector" in listed.stdout

    ivf = _cli(env, "ingest", "cli bits", str(src), "--model", "tiny-bert", "--kinds", "binary",
               "--binary-index", "ivfflat", "--lists", "4", "--no-progress")  # fmt: skip
    assert ivf.stdout.splitlines()[-1] == "rebuilt index cli bits_embedding_bq_ivfflat", ivf.stderr
    out = _cli(env, "search", "cli bits", texts[3], "--strategy", "binary", "--probes", "4",
               "--oversample", "60", "-k", "1", "--json")  # fmt: skip
    assert json.loads(out.stdout)["id"] == 3, out.stderr  # every row a candidate: exact

    bad = _cli(env, "search", "no such", "x")
    assert bad.returncode == 1 and "no collection named 'no such'" in bad.stderr
    assert "Traceback" not in bad.stderr
    with engine.begin() as conn:
        conn.execute(sa.text('DROP TABLE "cli docs"'))
        conn.execute(sa.text('DROP TABLE "cli bits"'))
        conn.execute(
            sa.text("DELETE FROM pgembed.collections WHERE name IN ('cli docs', 'cli bits')")
        )


def test_help_and_version() -> None:
    import re
    from importlib import metadata, resources

    import pgembed

    top = _cli(dict(os.environ), "--help")
    assert top.returncode == 0
    assert "text embeddings in PostgreSQL" in top.stdout
    assert 'pgembed search docs "a query"' in top.stdout and "pgembed quickstart" in top.stdout
    assert "calls public functions" not in top.stdout  # the developer note stays in the code
    search = _cli(dict(os.environ), "search", "--help")
    assert "--json" in search.stdout and "one JSON object per line" in search.stdout
    assert "--oversample" in search.stdout  # the strategy options, from pgembed.strategies

    out = _cli(dict(os.environ), "--version")
    assert out.returncode == 0, out.stderr
    scripts = [f.name for f in resources.files("pgembed").joinpath("sql").iterdir()]
    full = [m.group(1) for n in scripts if (m := re.fullmatch(r"pgembed--([\d.]+)\.sql", n))]
    newest = max(full, key=lambda v: tuple(map(int, v.split("."))))
    assert out.stdout.startswith(f"pgembed {metadata.version('pgembed')} (SQL {newest}")
    assert pgembed.__version__ in out.stdout


def test_search_flags_follow_the_strategy_options() -> None:
    """Each option's flag parses to its own type: a number, an integer or a choice."""
    from pgembed import strategies
    from pgembed.cli import build_parser

    argv = ["search", "docs", "q", "--strategy", "hybrid", "--alpha", "0.25", "--depth", "50",
            "--fusion", "convex"]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert (args.alpha, args.depth, args.fusion) == (0.25, 50, "convex")
    assert {o.name for o in strategies.OPTIONS.values()} <= set(vars(args))
    bad = _cli(dict(os.environ), *argv[:-2], "--alpha", "2.5")
    assert bad.returncode == 2 and bad.stderr.startswith("pgembed: error: argument --alpha")
