"""`pgembed shards create | ingest | search | list` through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pgembed.shards import ShardedCollection


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgembed.cli", *args],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def test_cli_create_ingest_search(
    make_sharded: Any, shard_servers: Any, tiny_model_dir: Path, tiny_encoder: Any, tmp_path: Path
) -> None:
    coordinator, urls = make_sharded(2)
    coordinator_url = coordinator.url.render_as_string(hide_password=False)
    env = {**os.environ, "PGEMBED_MODEL_DIR": str(tiny_model_dir),
           "PGEMBED_DATABASE_URL": coordinator_url}  # fmt: skip
    made = _cli(env, "shards", "create", "cli shards", "--shard", urls[0], "--shard", urls[1],
                "--model", "tiny-bert", "--kinds", "single")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "on 2 shards" in made.stdout and shard_servers[0].password not in made.stdout
    texts = [f"line {i} about {w}" for i, w in enumerate(["ships", "bread", "snow"] * 10)]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n")
    first = _cli(env, "shards", "ingest", "cli shards", str(src))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{len(texts)} rows written")
    assert _cli(env, "shards", "ingest", "cli shards", str(src)).stdout.startswith("0 rows")

    out = _cli(env, "shards", "search", "cli shards", texts[4], "-k", "3", "--ef-search", "100",
               "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    hits = [json.loads(line) for line in out.stdout.splitlines()]
    coll = ShardedCollection.open(coordinator, "cli shards", tiny_encoder)
    want = coll.search(texts[4], k=3, ef_search=100)
    coll.dispose()
    assert [h["id"] for h in hits] == [i for i, _ in want]
    assert [h["text"] for h in hits] == [texts[h["id"]] for h in hits]  # via the parent table
    listed = _cli(env, "shards", "list")
    assert listed.stdout.count("cli shards\tshard") == 2
    assert shard_servers[1].password not in listed.stdout
    plain = _cli(env, "search", "cli shards", texts[4])  # the one-server command
    assert plain.returncode == 1 and "`pgembed shards search cli shards`" in plain.stderr

    shard_servers[1].stop()
    try:
        down = _cli(env, "shards", "search", "cli shards", texts[4], "-k", "3")
        assert down.returncode != 0
        assert down.stderr.startswith("pgembed: error:") and "shard 1 (" in down.stderr
        assert "Traceback" not in down.stderr and shard_servers[1].password not in down.stderr
        part = _cli(env, "shards", "search", "cli shards", texts[4], "-k", "3", "--json",
                    "--allow-partial")  # fmt: skip
        assert part.returncode == 0, part.stderr
        assert "partial results" in part.stderr
        assert all(json.loads(line)["partial"] for line in part.stdout.splitlines())
    finally:
        shard_servers[1].start()
