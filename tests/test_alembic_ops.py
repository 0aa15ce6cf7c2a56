"""Users' migrations: op.create_collection / op.drop_collection and autogenerate helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Engine

import pgembed.alembic_ops  # noqa: F401  (registers the operations)
from pgembed.alembic_ops import collection_tables, include_object, render_item
from pgembed.errors import CollectionError, UnknownModelError
from pgembed.storage import catalog
from pgembed.storage.schema import CollectionSpec


@pytest.fixture
def model_dir(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(tiny_model_dir))
    return tiny_model_dir


def _op(conn: sa.Connection) -> Any:
    return Operations(MigrationContext.configure(conn))


def test_create_and_drop_collection_in_a_migration(engine: Engine, model_dir: Path) -> None:
    with engine.begin() as conn:
        _op(conn).create_collection(
            "alembic docs", encoder="tiny-bert", kinds=("matryoshka", "binary"),
            matryoshka_dims=(8, 16),
        )  # fmt: skip
    with engine.connect() as conn:
        rec = catalog.get_collection(conn, "alembic docs")
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("alembic docs")}
    assert rec.spec.dim == 32 and rec.spec.matryoshka_dims == (8, 16)
    assert {"alembic docs_embedding_8_hnsw", "alembic docs_embedding_bq_hnsw"} <= indexes
    t = sa.Table("alembic docs", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=1, content="x", embedding=np.ones(32)))
    with pytest.raises(CollectionError, match="holds 1 rows"), engine.begin() as conn:
        _op(conn).drop_collection("alembic docs")
    with engine.begin() as conn:
        _op(conn).drop_collection("alembic docs", force=True)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("alembic docs")
        assert (
            conn.execute(
                sa.select(catalog.collections.c.name).where(
                    catalog.collections.c.name == "alembic docs"
                )
            ).first()
            is None
        )


def test_unknown_encoder_writes_nothing(engine: Engine, model_dir: Path) -> None:
    match = "neither in pgembed.encoders nor exported"
    with pytest.raises(UnknownModelError, match=match), engine.begin() as conn:
        _op(conn).create_collection("ghost", encoder="no-such-model")
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("ghost")


def test_autogenerate_renders_types_and_is_clean_after(engine: Engine) -> None:
    md = sa.MetaData()
    spec = CollectionSpec("autogen docs", 32, "tiny-bert", kinds=("matryoshka", "fde", "binary"),
                          matryoshka_dims=(8,), binary_bits=2, fde_dim=512)  # fmt: skip
    collection_tables([spec], md)
    opts = {"include_object": include_object, "render_item": render_item, "target_metadata": md}
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts=opts)
        script = produce_migrations(ctx, md)
        code = render_python_code(script.upgrade_ops, render_item=render_item)
    assert "pgvector.sqlalchemy.HALFVEC(32)" in code
    assert "pgvector.sqlalchemy.BIT(64)" in code
    assert "pgembed.storage.columns.MultiVector(32)" in code
    assert "pgembed" not in code.replace("pgembed.storage.columns", "")  # no catalog tables
    with engine.begin() as conn:
        md.create_all(conn)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), md)
        assert diff == []
    finally:
        with engine.begin() as conn:
            md.drop_all(conn)
