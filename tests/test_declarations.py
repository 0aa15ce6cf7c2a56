"""A Collection declared otherwise than its record: kinds the database computes itself
(lexical, added by op.add_lexical) are taken from the record; any other difference is refused
before a row is written, naming the kinds and settings that differ, never a dict dump."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Engine

import pgembed.alembic_ops  # noqa: F401  (registers the operations)
from pgembed import Collection
from pgembed.errors import CollectionError
from pgembed.pipeline import SERVER_KINDS
from pgembed.storage.schema import KINDS

TEXTS = ["the storm hit the city", "rates rose again", "a cricket match in the rain"]


def _count(engine: Engine, c: Collection) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(c.table())).scalar_one())


def test_a_declaration_without_lexical_after_add_lexical_writes_and_searches(
    engine: Engine, tiny_encoder: Any
) -> None:
    name = f"decl {uuid.uuid4().hex[:6]}"
    c = Collection(engine, name, tiny_encoder, kinds=("single",)).create()
    try:
        c.add(TEXTS[:2], ids=[1, 2], progress=False)
        with engine.begin() as conn:
            Operations(MigrationContext.configure(conn)).add_lexical(name)
        again = Collection(engine, name, tiny_encoder, kinds=("single",))  # as the README has it
        assert again.add(TEXTS[2:], ids=[3], progress=False) == 1
        assert again.spec.has("lexical")
        fresh = Collection(engine, name, tiny_encoder, kinds=("single",))
        want = Collection.open(engine, name, tiny_encoder).search("storm city", strategy="bm25")
        assert fresh.search("storm city", strategy="bm25") == want and want[0][0] == 1
        assert _count(engine, c) == 3
    finally:
        c.drop(force=True)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in SERVER_KINDS])
def test_other_differences_are_refused_by_name(
    engine: Engine, tiny_encoder: Any, kind: str
) -> None:
    """For every kind the client computes: recorded without it and declared with it, and
    the reverse, add() is refused before writing, naming the kind."""
    base = ("single",) if kind != "single" else ("multivector",)
    name = f"decl {uuid.uuid4().hex[:6]}"
    c = Collection(engine, name, tiny_encoder, kinds=(*base, kind)).create()
    try:
        for declared in (base, (*base, kind)):
            c.drop(force=True)
            c = Collection(engine, name, tiny_encoder,
                           kinds=base if declared != base else (*base, kind)).create()  # fmt: skip
            other = Collection(engine, name, tiny_encoder, kinds=declared)
            with pytest.raises(CollectionError) as got:
                other.add(TEXTS, ids=[1, 2, 3], progress=False)
            message = str(got.value)
            assert f"'{kind}'" in message and "{" not in message, message
            assert _count(engine, c) == 0
    finally:
        c.drop(force=True)
