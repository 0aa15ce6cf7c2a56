"""Migration 0010 (SQL 0.5.1): up changes only the functions its patch script defines, down
restores 0.5.0's definitions of them exactly (read back from the catalog)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import migrate

_EVERY = sa.text(
    "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), "
    "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
    "WHERE p.pronamespace = 'pgembed'::regnamespace ORDER BY 1"
)


def _functions(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        return {name: (body, comment) for name, body, comment in conn.execute(_EVERY)}


def _below(revision: str) -> str:
    from alembic.script import ScriptDirectory

    down = ScriptDirectory.from_config(migrate._config()).get_revision(revision).down_revision
    assert isinstance(down, str)
    return down


def test_0010_changes_its_functions_and_its_downgrade_restores_them(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine, _below("0010"))
    before = _functions(empty_engine)
    migrate.upgrade(empty_engine, "0010")
    after = _functions(empty_engine)
    assert before.keys() == after.keys()
    changed = {n.split("(")[0] for n in before if before[n] != after[n]}
    assert changed == {
        "pgembed.version", "pgembed.search_knn", "pgembed.search_multivector",
        "pgembed.calibrated_setting",
    }  # fmt: skip
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pgembed.version()")).scalar_one() == "0.5.1"
    migrate.downgrade(empty_engine, _below("0010"))
    assert _functions(empty_engine) == before
