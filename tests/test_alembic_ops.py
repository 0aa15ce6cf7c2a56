"""Users' migrations: op.create_collection / op.drop_collection and autogenerate helpers."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from alembic.util import CommandError
from sqlalchemy.engine import Engine

import pgembed.alembic_ops  # noqa: F401  (registers the operations)
from pgembed import migrate
from pgembed.alembic_ops import (
    CollectionChangeWarning,
    CreateCollectionOp,
    DropCollectionOp,
    IrreversibleDropError,
    collection_tables,
    declare_collection,
    include_object,
    manage_collections,
    render_item,
)
from pgembed.errors import (
    CollectionError,
    ConfigError,
    DimensionError,
    MigrationError,
    UnknownModelError,
)
from pgembed.storage import catalog
from pgembed.storage.schema import CollectionSpec


@pytest.fixture
def model_dir(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(tiny_model_dir))
    return tiny_model_dir


@pytest.fixture
def fresh(make_database: Any) -> Iterator[Engine]:
    """A database of its own at pgembed's head: autogenerate sees only this test's objects."""
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _op(conn: sa.Connection) -> Any:
    return Operations(MigrationContext.configure(conn))


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _autogen(
    conn: sa.Connection, md: sa.MetaData, **opts: Any
) -> tuple[ops.UpgradeOps, ops.DowngradeOps]:
    ctx = MigrationContext.configure(conn, opts={"target_metadata": md, **opts})
    script = produce_migrations(ctx, md)
    assert script.upgrade_ops is not None and script.downgrade_ops is not None
    return script.upgrade_ops, script.downgrade_ops


def _code(up_or_down: ops.UpgradeOps | ops.DowngradeOps) -> str:
    return render_python_code(up_or_down, render_item=render_item)


def _run_code(conn: sa.Connection, code: str) -> None:
    """Run rendered migration code, as a revision's upgrade() or downgrade() would."""
    body = "\n".join(line.strip() for line in code.splitlines())
    exec(body, {"op": _op(conn), "sa": sa})


def _snapshot(conn: sa.Connection, name: str) -> tuple[Any, ...]:
    """What declaring ``name`` made: its record, FDE config and indexes with options."""
    rec = catalog.get_collection(conn, name)
    fde = None if rec.fde_config is None else catalog.load_fde_config(conn, rec.fde_config)
    indexes = conn.execute(
        sa.text(
            "SELECT ic.relname, a.amname, ic.reloptions, pg_get_indexdef(ic.oid) "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = ic.relam WHERE i.indrelid = :oid ORDER BY 1"
        ),
        {"oid": rec.table_oid},
    ).all()
    columns = [(c["name"], str(c["type"])) for c in sa.inspect(conn).get_columns(
        rec.spec.table_name, schema=rec.spec.schema
    )]  # fmt: skip
    return rec.spec, None if fde is None else fde.config, [tuple(r) for r in indexes], columns


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
        code = _code(_autogen(conn, md, include_object=include_object)[0])
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


def test_reverse_of_both_ops() -> None:
    create = CreateCollectionOp("rev", "tiny-bert", kinds=("single", "binary"), binary_bits=2)
    drop = create.reverse()
    assert isinstance(drop, DropCollectionOp) and drop.force
    again = drop.reverse()
    assert isinstance(again, CreateCollectionOp)
    assert (again.name, again.encoder, again.options) == ("rev", "tiny-bert", create.options)
    with pytest.raises(IrreversibleDropError, match="Pass its declaration") as info:
        DropCollectionOp("rev").reverse()
    assert isinstance(info.value, CollectionError) and isinstance(info.value, CommandError)
    code = _code(ops.UpgradeOps([create, drop, DropCollectionOp("other")]))
    assert "op.create_collection('rev', encoder='tiny-bert', kinds=('single', 'binary'), " \
        "binary_bits=2)" in code  # fmt: skip
    assert "op.drop_collection('rev', force=True)" in code
    assert "op.drop_collection('other')" in code


def test_declare_collection_builds_the_table(model_dir: Path) -> None:
    md = sa.MetaData()
    t = declare_collection(md, "decl", encoder="tiny-bert", kinds=("binary",), binary_bits=2)
    assert md.tables["public.decl"] is t
    assert {"id", "content", "embedding", "embedding_bits"} <= set(t.c.keys())
    assert md.info["pgembed.collections"]["decl"]["options"] == {
        "kinds": ("binary",), "binary_bits": 2,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="declared twice"):
        declare_collection(md, "decl", encoder="tiny-bert")
    with pytest.raises(UnknownModelError, match="pass dim="):
        declare_collection(md, "elsewhere", encoder="not-exported-here")
    other = declare_collection(md, "elsewhere", encoder="not-exported-here", dim=48)
    assert other.c.embedding.type.dim == 48  # type: ignore[attr-defined]
    with pytest.raises(DimensionError, match="makes 32-dim"):
        declare_collection(md, "wrong", encoder="tiny-bert", dim=48)
    with pytest.raises(ConfigError, match="unknown field"):
        declare_collection(md, "badindex", encoder="tiny-bert", index={"M": 8})


ENV_PY = """
from alembic import context

import pgembed.alembic_ops  # noqa: F401
from pgembed.alembic_ops import include_object, render_item

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=context.config.attributes["metadata"],
    include_object=include_object,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
"""


def _alembic_project(root: Path, md: sa.MetaData) -> Config:
    cfg = Config(str(root / "alembic.ini"))
    command.init(cfg, str(root / "migrations"))
    (root / "migrations" / "env.py").write_text(ENV_PY)
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["metadata"] = md
    return cfg


def test_autogenerate_writes_create_collection_and_upgrade_runs_it(
    fresh: Engine, model_dir: Path, tmp_path: Path
) -> None:
    name = _name("auto")
    md = sa.MetaData()
    docs = declare_collection(
        md, name, encoder="tiny-bert", kinds=("single", "matryoshka"), matryoshka_dims=(8, 16),
        index={"m": 8, "ef_construction": 32},
    )  # fmt: skip
    sa.Table("notes", md, sa.Column("id", sa.Integer, primary_key=True))
    cfg = _alembic_project(tmp_path, md)
    with fresh.connect() as conn:
        cfg.attributes["connection"] = conn
        script = command.revision(cfg, "collections", autogenerate=True)
    assert script is not None and not isinstance(script, list) and script.path
    source = Path(script.path).read_text()
    upgrade, downgrade = source.split("def downgrade")
    assert (
        f"op.create_collection('{name}', encoder='tiny-bert', kinds=('single', 'matryoshka'), "
        "matryoshka_dims=(8, 16), index={'m': 8, 'ef_construction': 32})"
    ) in upgrade
    assert "op.create_table('notes'" in upgrade  # the user's own tables as usual
    assert name not in upgrade.replace(f"op.create_collection('{name}'", "")  # no table ops
    assert f"op.drop_collection('{name}', force=True)" in downgrade
    assert "op.drop_table('notes')" in downgrade
    assert upgrade.index("create_collection") < upgrade.index("create_table")

    with fresh.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with fresh.begin() as conn:
        spec, _, indexes, _ = _snapshot(conn, name)
        conn.execute(docs.insert().values(id=1, content="x", embedding=np.ones(32)))  # ORM-ready
    assert spec.kinds == ("single", "matryoshka") and spec.matryoshka_dims == (8, 16)
    hnsw = [opts for _, am, opts, _ in indexes if am == "hnsw"]
    assert len(hnsw) == 3 and all(o == ["m=8", "ef_construction=32"] for o in hnsw)

    with fresh.connect() as conn:  # a second autogenerate finds nothing to do
        cfg.attributes["connection"] = conn
        command.check(cfg)
        assert _autogen(conn, md)[0].is_empty()
    with fresh.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")  # force=True: the populated collection goes too
    with fresh.connect() as conn:
        assert not sa.inspect(conn).has_table(name)
        assert name not in conn.execute(sa.select(catalog.collections.c.name)).scalars().all()


def test_dropped_declaration_renders_drop_collection_whose_reverse_recreates_it(
    fresh: Engine, model_dir: Path
) -> None:
    name = _name("gone")
    with fresh.begin() as conn:
        _op(conn).create_collection(
            name, encoder="tiny-bert", kinds=("binary", "fde"), binary_bits=2,
            text_column="body", table=f"{name}_t", precision="vector", distance="ip",
            fde={"num_repetitions": 2, "num_simhash_projections": 2,
                 "projection_dimension": 4, "seed": 7},
            index={"binary": "ivfflat", "lists": 10, "m": 12, "ef_construction": 40},
        )  # fmt: skip
        before = _snapshot(conn, name)
    md = sa.MetaData()
    manage_collections(md)  # declares collections, none of them any more
    with fresh.connect() as conn:
        upgrade, downgrade = _autogen(conn, md, include_object=include_object)
        diff = compare_metadata(MigrationContext.configure(conn), md)  # what `alembic check` reads
    assert diff == [("drop_collection", name)]
    up, down = _code(upgrade), _code(downgrade)
    assert [type(o) for o in upgrade.ops] == [DropCollectionOp]
    assert f"op.drop_collection('{name}')" in up
    assert "drop_table" not in up and "drop_index" not in up
    assert f"op.create_collection('{name}', encoder='tiny-bert'" in down
    assert "'seed': 7" in down and "'lists': 10" in down and "'m': 12" in down
    with fresh.begin() as conn:
        _run_code(conn, up)
    with fresh.connect() as conn:
        assert not sa.inspect(conn).has_table(f"{name}_t")
    with fresh.begin() as conn:
        _run_code(conn, down)
    with fresh.connect() as conn:
        after = _snapshot(conn, name)
    assert after == before


def test_changed_declaration_warns_and_alters_nothing(fresh: Engine, model_dir: Path) -> None:
    name = _name("same")
    with fresh.begin() as conn:
        _op(conn).create_collection(name, encoder="tiny-bert", kinds=("single",))
    md = sa.MetaData()
    declare_collection(md, name, encoder="tiny-bert", kinds=("single",))
    with fresh.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("error", CollectionChangeWarning)
        assert _autogen(conn, md)[0].is_empty()  # no index ops, no table ops
    changed = sa.MetaData()
    declare_collection(changed, name, encoder="tiny-bert", kinds=("single", "binary"),
                       binary_bits=2, index={"m": 24})  # fmt: skip
    with (
        fresh.connect() as conn,
        pytest.warns(CollectionChangeWarning, match=r"\(kinds, index differ\).*not alter"),
    ):
        upgrade, _ = _autogen(conn, changed, include_object=include_object)
    assert upgrade.is_empty(), _code(upgrade)  # no add_column either


def test_metadata_without_declarations_leaves_collections_alone(
    fresh: Engine, model_dir: Path
) -> None:
    name = _name("kept")
    with fresh.begin() as conn:
        _op(conn).create_collection(name, encoder="tiny-bert", kinds=("single", "binary"))
    md = sa.MetaData()
    sa.Table("notes", md, sa.Column("id", sa.Integer, primary_key=True))
    for opts in ({}, {"include_object": include_object}):
        with fresh.connect() as conn:
            upgrade, _ = _autogen(conn, md, **opts)
        found = upgrade.ops
        assert [type(o) for o in found] == [ops.CreateTableOp], _code(upgrade)
        assert isinstance(found[0], ops.CreateTableOp) and found[0].table_name == "notes"
    # Before alembic's table comparison, a collection table would have been dropped:
    with fresh.connect() as conn:
        assert sa.inspect(conn).has_table(name)


def test_declarations_need_pgembed_installed(empty_engine: Engine, model_dir: Path) -> None:
    md = sa.MetaData()
    sa.Table("notes", md, sa.Column("id", sa.Integer, primary_key=True))
    with empty_engine.connect() as conn:  # no declarations: nothing asked of pgembed
        assert [type(o) for o in _autogen(conn, md)[0].ops] == [ops.CreateTableOp]
    declare_collection(md, "docs", encoder="tiny-bert")
    with pytest.raises(MigrationError, match="pgembed db upgrade"), empty_engine.connect() as c:
        _autogen(c, md)
