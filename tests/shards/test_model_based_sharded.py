"""The model-based test over a sharded collection: two embedded shard servers.

Random sequences of create (a random kind set and name), add (upserts too), delete (on a
shard's own part, or by plain SQL on the coordinator's parent table, which postgres_fdw
sends to the shard holding the row), search with every strategy the kinds allow, and drop,
each checked against a plain Python model of the rows. After every step: ``count`` and the
rows read through the coordinator's parent equal the model, every row sits on the shard its
id hashes to (``verify``), and the catalog of shards lists the collection exactly while it
exists. Searches return only live ids, each once, ``min(k, rows)`` of them for the dense
strategies, and knn the model's exact top-k.

PGEMBED_SHARDED_EXAMPLES sets the number of runs (default 3: every step talks to three
servers).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import sqlalchemy as sa
from _model import (
    IDS,
    KIND_SETS,
    NAMES,
    QUERIES,
    add_rows,
    exact,
    machine_settings,
    sentences,
)
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Engine

from pgembed import strategies
from pgembed.errors import InputError
from pgembed.shards import ShardedCollection

EXAMPLES = int(os.environ.get("PGEMBED_SHARDED_EXAMPLES", "3"))


class ShardedMachine(RuleBasedStateMachine):
    engine: Engine
    urls: list[str]
    encoder: Any
    texts: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.coll: ShardedCollection | None = None
        self.rows: dict[int, str] = {}

    def _parent(self) -> sa.TableClause:
        """The coordinator's partitioned parent table over the shards' foreign tables."""
        assert self.coll is not None
        spec = self.coll.spec
        return sa.table(spec.table_name, sa.column("id"), sa.column("content"), schema=spec.schema)

    # --- operations -----------------------------------------------------------------------

    @precondition(lambda self: self.coll is None)
    @rule(kinds=st.sampled_from(KIND_SETS), name=st.sampled_from(NAMES), n=st.integers(0, 8))
    def create(self, kinds: tuple[str, ...], name: str, n: int) -> None:
        extra = {"matryoshka_dims": (8, 16)} if "matryoshka" in kinds else {}
        self.coll = ShardedCollection(
            self.engine, name.format(uuid.uuid4().hex[:6]), self.encoder, shards=self.urls,
            kinds=kinds, **extra,
        ).create()  # fmt: skip
        self.rows = {}
        if n:
            self.add(list(range(n)), n, "bulk")

    @precondition(lambda self: self.coll is not None)
    @rule(
        ids=st.lists(IDS, min_size=1, max_size=8, unique=True),
        pick=st.integers(0, 10**6),
        mode=st.sampled_from(("auto", "incremental", "bulk")),
    )
    def add(self, ids: list[int], pick: int, mode: str) -> None:
        assert self.coll is not None
        add_rows(self.coll, self.rows, self.texts, ids, pick, mode)

    @precondition(lambda self: self.coll is not None and self.rows)
    @rule(data=st.data(), via_parent=st.booleans())
    def delete(self, data: st.DataObject, via_parent: bool) -> None:
        assert self.coll is not None
        ids = data.draw(st.lists(st.sampled_from(sorted(self.rows)), min_size=1, unique=True))
        if via_parent:
            t = self._parent()
            with self.engine.begin() as conn:
                gone = conn.execute(t.delete().where(t.c.id.in_(ids))).rowcount
        else:  # on each shard's own part, as a client of that server
            gone = 0
            for s, part in zip(self.coll.shards, self.coll.parts, strict=True):
                t = part.table()
                with s.engine.begin() as conn:
                    gone += conn.execute(t.delete().where(t.c.id.in_(ids))).rowcount
        assert gone == len(ids), (gone, ids)
        for i in ids:
            del self.rows[i]

    @precondition(lambda self: self.coll is not None)
    @rule()
    def drop(self) -> None:
        assert self.coll is not None
        self.coll.drop(force=True)
        self.coll.dispose()
        self.coll, self.rows = None, {}

    # --- searches -------------------------------------------------------------------------

    @precondition(lambda self: self.coll is not None)
    @rule(data=st.data(), k=st.integers(1, 8), text=st.sampled_from(QUERIES))
    def search(self, data: st.DataObject, k: int, text: str) -> None:
        assert self.coll is not None
        have = set(self.coll.spec.all_kinds)
        names = [s for s in strategies.NAMES if strategies.KIND[s] in have]
        strategy = data.draw(st.sampled_from(names))
        try:
            got = self.coll.search(text, k=k, strategy=strategy)
        except InputError as exc:  # bm25 on an empty collection: no statistics to score by
            assert strategy in ("bm25", "hybrid") and not self.rows, exc
            return
        ids = [i for i, _ in got]
        assert not got.partial and not got.duplicates
        assert set(ids) <= self.rows.keys(), (strategy, ids)
        assert len(ids) == len(set(ids)), (strategy, ids)
        if strategy in ("bm25", "hybrid"):
            return  # only rows sharing a lexeme
        assert len(ids) == min(k, len(self.rows)), (strategy, ids, len(self.rows))
        if strategy in ("knn", "funnel", "binary"):
            assert ids == exact(self.encoder, self.rows, text, k), (strategy, ids)

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def rows_match(self) -> None:
        if self.coll is None:
            return
        t = self._parent()
        with self.engine.connect() as conn:
            stored = dict(conn.execute(sa.select(t.c.id, t.c.content)).all())
        assert stored == self.rows
        assert self.coll.count() == len(self.rows)
        found = self.coll.verify()
        assert found.ok and found.rows == len(self.rows), found

    @invariant()
    def catalog_matches(self) -> None:
        with self.engine.connect() as conn:
            names = set(
                conn.execute(sa.text("SELECT name FROM pgembed.sharded_collections")).scalars()
            )
        assert names == (set() if self.coll is None else {self.coll.spec.name}), names

    def teardown(self) -> None:
        if self.coll is not None:
            self.coll.drop(force=True)
            self.coll.dispose()


def test_model_based_sharded(make_sharded: Any, tiny_encoder: Any) -> None:
    coordinator, urls = make_sharded(2)
    ShardedMachine.engine, ShardedMachine.urls = coordinator, urls
    ShardedMachine.encoder, ShardedMachine.texts = tiny_encoder, sentences()
    run_state_machine_as_test(ShardedMachine, settings=machine_settings(EXAMPLES))
