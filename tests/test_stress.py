"""The short form of benchmarks/stress.py: 4 writers and 8 searchers for a few seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "stress.py"


def _stress() -> Any:
    spec = importlib.util.spec_from_file_location("pgembed_stress", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.stress
def test_short_stress_run(engine: Engine, tiny_model_dir: Path, capsys: Any) -> None:
    url = engine.url.render_as_string(hide_password=False)
    result = _stress().main(
        ["--seconds", "4", "--url", url, "--model-dir", str(tiny_model_dir), "--shared-every", "2"]
    )
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith('{"benchmark": "stress"')
    assert result["writers"] == 4 and result["searchers"] == 8
    assert result["errors"] == 0, capsys.readouterr().err
    assert result["write_ops"] >= 4 and result["search_ops"] >= 8
    assert result["lost_rows"] == 0 and result["extra_rows"] == 0 and result["torn_rows"] == 0
    assert result["rows"] == result["rows_acknowledged"] > 64
    assert result["ok"] is True


def test_binary_search_on_one_bit_codes(engine: Engine, tiny_encoder: Any) -> None:
    """Regression: search_binary failed on 1-bit collections (record "lv" not assigned)."""
    from pgembed import Collection

    c = Collection(engine, "stress one bit", tiny_encoder, kinds=("binary",)).create()
    try:
        c.add(["a sentence about rain", "another about the sun", "one on snow"])
        hits = c.search("weather", k=2, strategy="binary")
        assert len(hits) == 2
    finally:
        c.drop(force=True)


def test_overlapping_upserts_in_any_order(engine: Engine, tiny_model_dir: Path) -> None:
    url = engine.url.render_as_string(hide_password=False)
    result = _stress().main(
        ["--seconds", "3", "--url", url, "--model-dir", str(tiny_model_dir), "--searchers", "0",
         "--shared-every", "1", "--shuffle-shared"]
    )  # fmt: skip
    assert result["errors"] == 0
    assert result["lost_rows"] == 0 and result["torn_rows"] == 0  # holds even today


def test_deadlock_is_not_reported_as_a_lost_database(engine: Engine, tiny_encoder: Any) -> None:
    import threading
    import time

    import sqlalchemy as sa

    from pgembed import Collection
    from pgembed.errors import DatabaseUnavailableError, IngestError

    c = Collection(engine, "stress deadlock", tiny_encoder).create()
    c.add(["first text here", "second text here"], ids=[1, 2])
    got: list[BaseException | None] = []

    def write() -> None:  # locks row 1, then waits for row 2
        try:
            c.add(["first text changed", "second text changed"], ids=[1, 2])
            got.append(None)
        except BaseException as exc:  # checked below
            got.append(exc)

    try:
        with engine.connect() as other, other.begin():
            other.execute(sa.text("SET LOCAL deadlock_timeout = '20s'"))  # the writer is the victim
            other.execute(sa.text("UPDATE \"stress deadlock\" SET content = 'x' WHERE id = 2"))
            th = threading.Thread(target=write)
            th.start()
            for _ in range(600):
                other.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # fresh view in a tx
                waiting = other.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND datname = current_database()")
                ).scalar_one()  # fmt: skip
                if waiting:
                    break
                time.sleep(0.05)
            # row 1 is now the writer's: waiting for it closes the cycle
            other.execute(sa.text("UPDATE \"stress deadlock\" SET content = 'y' WHERE id = 1"))
            th.join(30)
        assert len(got) == 1 and got[0] is not None, got
        assert not isinstance(got[0], DatabaseUnavailableError), got[0]
        assert isinstance(got[0], IngestError) and "deadlock" in str(got[0])
    finally:
        c.drop(force=True)
