"""A model-based test of the public API: random sequences of real operations on a real
server, each checked against a plain Python reference model.

The machine creates a collection with a random kind set and name, then adds (bulk,
incremental, auto), upserts, deletes, edits texts and syncs, adds the lexical kind by
migration op, searches with every strategy the collection stores through ``Collection``,
the ORM builders (with a filter) and the SQL functions, with and without ``target_recall``,
and drops it. The model holds the rows (id -> text) and the kinds. After every step:

- the table's rows and texts equal the model's, and ``count`` does;
- the catalog lists the collection exactly while it exists;
- with the lexical kind, the maintained BM25 statistics equal a from-scratch computation
  (``pgembed.lexical_stats_recompute``);
- searches return only live ids, ``min(k, rows)`` of them; knn (and the two-stage
  strategies, exact on collections this small at their default depths) the exact top-k by
  cosine over the model's own encodings; ORM filters hold for every row and still give k;
  ``target_recall`` without a calibration gives the defaults' rows.

It also calibrates (then ``target_recall`` either meets its target on the queries the
calibration measured, against the model's exact top-k, or is refused with an InputError that
says no setting meets it), searches through ``pgembed search --json`` (at most once a run: a
subprocess), takes pgembed's schema down to a random revision and up again with the rows in
place (refused, changing nothing, where it would lose the calibration; forced, the model drops
it; after it rows, count, BM25 statistics and searches equal those before), and autogenerates
a migration from a MetaData that declares the collection as recorded (no ops) or declares
none (exactly one drop_collection). The machine has a database of its own, so downgrades and
autogenerate see only its collection.

PGEMBED_MODEL_EXAMPLES sets the number of runs (the slow job runs more).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _model import (
    CAL_QUERIES,
    EXAMPLES,
    IDS,
    KIND_SETS,
    NAMES,
    QUERIES,
    add_rows,
    autogenerate,
    exact,
    machine_settings,
    recall,
    sentences,
)
from alembic.migration import MigrationContext
from alembic.operations import Operations
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Engine

from pgembed import Collection, migrate, query, sqlfuncs, strategies
from pgembed.alembic_ops import DropCollectionOp
from pgembed.calibration import CalibrationWarning, calibrations
from pgembed.errors import InputError, MigrationError

REVISIONS = tuple(s.revision for s in migrate.history()[1:])
"""Every revision below head: a downgrade target with the collection in place."""
CALIBRATIONS_FROM = "0006"
"""The revision that adds pgembed.calibrations: a downgrade below it loses them."""
NOT_MET = r"no calibrated \w+ setting of collection .* (reaches|can claim) recall"


class Machine(RuleBasedStateMachine):
    engine: Engine
    encoder: Any
    texts: list[str]
    cli_env: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.coll: Collection | None = None
        self.rows: dict[int, str] = {}
        self.kinds: tuple[str, ...] = ()
        self.calibrated = False
        self.cli_done = False

    # --- operations -----------------------------------------------------------------------

    @precondition(lambda self: self.coll is None)
    @rule(kinds=st.sampled_from(KIND_SETS), name=st.sampled_from(NAMES), n=st.integers(0, 8))
    def create(self, kinds: tuple[str, ...], name: str, n: int) -> None:
        extra = {"matryoshka_dims": (8, 16)} if "matryoshka" in kinds else {}
        self.coll = Collection(
            self.engine, name.format(uuid.uuid4().hex[:6]), self.encoder, kinds=kinds, **extra
        ).create()
        self.rows, self.kinds, self.calibrated = {}, kinds, False
        if n:  # n first rows, so that short runs reach the rules that need rows
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
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        assert self.coll is not None
        ids = data.draw(st.lists(st.sampled_from(sorted(self.rows)), min_size=1, unique=True))
        t = self.coll.table()
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.id.in_(ids)))
        for i in ids:
            del self.rows[i]

    @precondition(lambda self: self.coll is not None and self.rows)
    @rule(data=st.data(), pick=st.integers(0, 10**6))
    def edit_and_sync(self, data: st.DataObject, pick: int) -> None:
        assert self.coll is not None
        ids = data.draw(st.lists(st.sampled_from(sorted(self.rows)), min_size=1, unique=True))
        t = self.coll.table()
        with self.engine.begin() as conn:
            for n, i in enumerate(ids):
                text = self.texts[(pick + 11 * n) % len(self.texts)]
                conn.execute(t.update().where(t.c.id == i).values(content=text))
                self.rows[i] = text
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.coll.sync(progress=False)

    @precondition(lambda self: self.coll is not None and "lexical" not in self.kinds)
    @rule()
    def add_lexical(self) -> None:
        assert self.coll is not None
        name = self.coll.spec.name
        with self.engine.begin() as conn:
            Operations(MigrationContext.configure(conn)).add_lexical(name)
        self.kinds = (*self.kinds, "lexical")
        # the object declared before still writes and searches (it takes the recorded
        # lexical kind); its table() mapping is the declaration's, so map the record
        self.coll.add([self.texts[0]], [99], progress=False)
        self.rows[99] = self.texts[0]
        self.coll = Collection.open(self.engine, name, self.encoder)

    @precondition(lambda self: self.coll is not None)
    @rule()
    def drop(self) -> None:
        assert self.coll is not None
        assert self.coll.drop(force=True)
        self.coll, self.rows, self.kinds, self.calibrated = None, {}, (), False

    # --- searches -------------------------------------------------------------------------

    def _strategies(self) -> list[str]:
        assert self.coll is not None
        have = set(self.coll.spec.all_kinds) | set(self.kinds)
        return [s for s in strategies.NAMES if strategies.KIND[s] in have]

    def _options(self, strategy: str) -> dict[str, str]:
        """hybrid fuses knn by default; without single vectors it must be told its dense side
        (UnknownKindError otherwise, as the product means it to be)."""
        assert self.coll is not None
        single = "single" in set(self.coll.spec.all_kinds) | set(self.kinds)
        return {"dense": "multivector"} if strategy == "hybrid" and not single else {}

    @precondition(lambda self: self.coll is not None)
    @rule(data=st.data(), k=st.integers(1, 8), text=st.sampled_from(QUERIES))
    def search(self, data: st.DataObject, k: int, text: str) -> None:
        assert self.coll is not None
        strategy = data.draw(st.sampled_from(self._strategies()))
        got = self.coll.search(text, k=k, strategy=strategy, **self._options(strategy))
        ids = [i for i, _ in got]
        assert set(ids) <= self.rows.keys(), (strategy, ids)
        assert len(ids) == len(set(ids)), (strategy, ids)
        if strategy in ("bm25", "hybrid"):
            return  # only rows sharing a lexeme: checked against the builder and statistics
        assert len(ids) == min(k, len(self.rows)), (strategy, ids, len(self.rows))
        if strategy in ("knn", "funnel", "binary"):
            assert ids == exact(self.encoder, self.rows, text, k), (strategy, ids)
        if strategy in strategies.accepting("target_recall") and not self.calibrated:
            with pytest.warns(CalibrationWarning, match="no calibration"):
                again = self.coll.search(
                    text, k=k, strategy=strategy, target_recall=0.9, **self._options(strategy)
                )
            assert [i for i, _ in again] == ids, strategy
        elif strategy in strategies.accepting("target_recall"):
            target = data.draw(st.sampled_from((0.5, 0.8, 0.95)))
            got = self._calibrated(text, k, strategy, target)
            assert got is None or len(got) == min(k, len(self.rows)), (strategy, got)

    def _calibrated(self, text: str, k: int, strategy: str, target: float) -> list[int] | None:
        """A search with target_recall on a calibrated collection: its ids (live, once
        each), or None where it was refused with the InputError that no setting meets it."""
        assert self.coll is not None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CalibrationWarning)  # stale, weak prefix
                got = self.coll.search(
                    text, k=k, strategy=strategy, target_recall=target, **self._options(strategy)
                )
        except InputError as exc:
            assert re.search(NOT_MET, str(exc)), exc
            return None
        ids = [i for i, _ in got]
        assert set(ids) <= self.rows.keys() and len(ids) == len(set(ids)), (strategy, ids)
        return ids

    @precondition(lambda self: self.coll is not None and "lexical" in self.kinds)
    @rule(text=st.sampled_from(QUERIES), k=st.integers(1, 8))
    def bm25_builder_equals_function(self, text: str, k: int) -> None:
        assert self.coll is not None
        t = self.coll.table()
        try:
            want = self.coll.search(text, k=k, strategy="bm25")
        except InputError:
            return  # only stop words under the configuration
        with self.engine.connect() as conn:
            got = [(int(r.id), float(r.score)) for r in conn.execute(query.bm25(t, text, k=k))]
        assert got == want

    @precondition(lambda self: self.coll is not None and self.rows)
    @rule(k=st.integers(1, 6), text=st.sampled_from(QUERIES), data=st.data())
    def orm_filter(self, k: int, text: str, data: st.DataObject) -> None:
        assert self.coll is not None
        spec = self.coll.spec
        builders = [b for b, kind in (("knn", "single"), ("funnel", "matryoshka"),
                                      ("binary_rerank", "binary")) if spec.has(kind)]  # fmt: skip
        if not builders:
            return
        builder = data.draw(st.sampled_from(builders))
        t = self.coll.table()
        q = self.encoder.encode([text], "query", progress=False)[0]
        where = [t.c.id % 2 == 0]
        extra = {"prefix": 8} if builder == "funnel" else {}
        stmt = getattr(query, builder)(t.c.embedding, q, k=k, where=where, **extra)
        with self.engine.connect() as conn:
            ids = [int(r.id) for r in conn.execute(stmt)]
        even = sum(1 for i in self.rows if i % 2 == 0)
        assert all(i % 2 == 0 for i in ids) and len(ids) == min(k, even), (builder, ids)

    @precondition(lambda self: self.coll is not None and self.rows)
    @rule(k=st.integers(1, 6), text=st.sampled_from(QUERIES))
    def sql_function_equals_collection(self, k: int, text: str) -> None:
        assert self.coll is not None
        spec = self.coll.spec
        if not spec.has("single"):
            return
        q = self.encoder.encode([text], "query", progress=False)[0]
        with self.engine.connect() as conn:
            rows = conn.execute(sqlfuncs.search_knn(spec.name, q, k=k).select()).all()
        assert [(int(i), float(s)) for i, s in rows] == self.coll.search(q, k=k)

    # --- calibration, the CLI, migrations ---------------------------------------------------

    @precondition(lambda self: self.coll is not None and len(self.rows) >= 4)
    @rule(k=st.integers(1, 3), stored=st.booleans())
    def calibrate(self, k: int, stored: bool) -> None:
        """Calibrate on stored rows or on CAL_QUERIES; on the queries it measured, a search
        with target_recall keeps at least that share of the exact top-k, or is refused (with
        8 queries no setting can claim 0.95: calibrated_setting's bound)."""
        assert self.coll is not None
        source: dict[str, Any] = (
            {"sample": min(8, len(self.rows))} if stored else {"queries": list(CAL_QUERIES)}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.coll.calibrate(k=k, progress=False, **source)
        self.calibrated = True
        if stored:
            return  # other queries than the searches': the contract of _calibrated only
        # The setting target_recall picks has a recall lower bound >= target, and the bound
        # never exceeds the mean recall over the queries measured (calibration.lower_bound).
        for strategy, goal in itertools.product(("knn", "funnel", "binary"), (0.5, 0.8, 0.95)):
            if strategy not in self._strategies():
                continue
            got = [self._calibrated(q, k, strategy, goal) for q in CAL_QUERIES]
            if got[0] is None:
                assert all(g is None for g in got), (strategy, got)  # one pick for every query
                continue
            kept = [recall(exact(self.encoder, self.rows, q, k), g or [])
                    for q, g in zip(CAL_QUERIES, got, strict=True)]  # fmt: skip
            assert float(np.mean(kept)) >= goal - 1e-9, (strategy, goal, kept)

    @precondition(lambda self: self.coll is not None and self.rows and not self.cli_done)
    @rule(go=st.booleans(), k=st.integers(1, 8), text=st.sampled_from(QUERIES), data=st.data())
    def cli_search(self, go: bool, k: int, text: str, data: st.DataObject) -> None:
        """`pgembed search --json` returns what Collection.search does (a subprocess of a
        few seconds: at most once a run)."""
        assert self.coll is not None
        if not go:
            return
        self.cli_done = True
        strategy = data.draw(st.sampled_from(self._strategies()))
        opts = self._options(strategy)
        args = ["search", self.coll.spec.name, text, "--strategy", strategy, "-k", str(k), "--json"]
        args += [a for o, v in opts.items() for a in (f"--{o}", v)]
        out = subprocess.run(
            [sys.executable, "-m", "pgembed.cli", *args],
            env=self.cli_env, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        want = self.coll.search(text, k=k, strategy=strategy, **opts)
        assert [h["id"] for h in lines] == [i for i, _ in want], strategy
        assert [h["rank"] for h in lines] == list(range(1, len(want) + 1))
        assert all(h["text"] == self.rows[h["id"]] for h in lines)

    def _observe(self) -> dict[str, Any]:
        """What a downgrade and upgrade must leave as it was: rows, count, the BM25
        statistics, every strategy's hits and the calibration."""
        assert self.coll is not None
        spec = Collection.open(self.engine, self.coll.spec.name, self.encoder).spec
        t = self.coll.table()
        seen: dict[str, Any] = {"count": self.coll.count()}
        with self.engine.connect() as conn:
            seen["rows"] = dict(conn.execute(sa.select(t.c.id, t.c.content)).all())
            c = calibrations.c
            seen["calibrations"] = sorted(
                (s, json.dumps(st_, sort_keys=True), r)
                for s, st_, r in conn.execute(
                    sa.select(c.strategy, c.setting, c.recall).where(c.collection == spec.name)
                )
            )
            if spec.has("lexical"):
                stats = sa.table(
                    spec.lexical_stats_table,
                    sa.column("lexeme"),
                    sa.column("docs"),
                    sa.column("tokens"),
                    schema=spec.schema,
                )
                # lexemes no row holds any more (docs 0) are left behind until recomputed
                live = sa.or_(stats.c.docs > 0, stats.c.lexeme == "")
                seen["stats"] = sorted(conn.execute(sa.select(stats).where(live)).all())
        for strategy in self._strategies():
            try:
                hits = self.coll.search(
                    QUERIES[0], k=5, strategy=strategy, **self._options(strategy)
                )
            except InputError as exc:
                hits = [(-1, 0.0)] if "no searchable" in str(exc) else []
            seen[strategy] = [(i, round(sc, 4)) for i, sc in hits]
        return seen

    @precondition(lambda self: self.coll is not None)
    @rule(rev=st.sampled_from(REVISIONS), force=st.booleans())
    def downgrade_and_upgrade(self, rev: str, force: bool) -> None:
        head = migrate.head()
        before = self._observe()
        loses = self.calibrated and rev < CALIBRATIONS_FROM
        try:
            migrate.downgrade(self.engine, rev)
        except MigrationError as exc:
            assert loses, exc  # only the calibration is lost for good
            assert "calibrations" in str(exc), exc
            assert migrate.current(self.engine) == head and self._observe() == before
            if not force:
                return
            migrate.downgrade(self.engine, rev, force=True)
            self.calibrated = False
            before["calibrations"] = []
        else:
            assert not loses, "a downgrade that loses the calibration went ahead"
        assert migrate.current(self.engine) == rev
        migrate.upgrade(self.engine)
        assert migrate.current(self.engine) == head
        assert self._observe() == before

    @precondition(lambda self: self.coll is not None)
    @rule(declared=st.booleans())
    def autogenerate(self, declared: bool) -> None:
        """A MetaData declaring the collection as the model has it: no ops; declaring no
        collection: exactly one drop_collection."""
        assert self.coll is not None
        name = self.coll.spec.name
        dims = {"matryoshka_dims": (8, 16)} if "matryoshka" in self.kinds else {}
        found = autogenerate(self.engine, {name: {"kinds": self.kinds, **dims}} if declared else {})
        if declared:
            assert not found, found
        else:
            assert [type(o) for o in found] == [DropCollectionOp], found
            assert isinstance(found[0], DropCollectionOp) and found[0].name == name

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def rows_match(self) -> None:
        if self.coll is None:
            return
        t = self.coll.table()
        with self.engine.connect() as conn:
            stored = dict(conn.execute(sa.select(t.c.id, t.c.content)).all())
        assert stored == self.rows
        assert self.coll.count() == len(self.rows)

    @invariant()
    def catalog_matches(self) -> None:
        with self.engine.connect() as conn:
            names = set(conn.execute(sa.text("SELECT name FROM pgembed.collections")).scalars())
        if self.coll is None:
            assert not names, names
        else:
            assert names == {self.coll.spec.name}
            assert set(self.kinds) <= set(Collection.open(
                self.engine, self.coll.spec.name, self.encoder).spec.all_kinds)  # fmt: skip

    @invariant()
    def calibration_kept(self) -> None:
        if self.coll is None:
            return
        c = calibrations.c
        with self.engine.connect() as conn:
            n = conn.execute(
                sa.select(sa.func.count()).where(c.collection == self.coll.spec.name)
            ).scalar_one()
        assert (n > 0) == self.calibrated, n

    @invariant()
    def statistics_exact(self) -> None:
        if self.coll is None or "lexical" not in self.kinds:
            return
        spec = Collection.open(self.engine, self.coll.spec.name, self.encoder).spec
        stats = sa.table(spec.lexical_stats_table, sa.column("lexeme"), sa.column("docs"),
                         sa.column("tokens"), schema=spec.schema)  # fmt: skip
        with self.engine.connect() as conn:
            kept = {
                (lex, int(d), int(n))
                for lex, d, n in conn.execute(
                    sa.select(stats.c.lexeme, stats.c.docs, stats.c.tokens)
                )
                if int(d) > 0 or lex == ""
            }
            fresh = {
                (lex, int(d), int(n))
                for lex, d, n in conn.execute(
                    sa.text("SELECT lexeme, docs, tokens FROM pgembed.lexical_stats_recompute(:c)"),
                    {"c": spec.name},
                )
            }
        assert kept == fresh

    def teardown(self) -> None:
        if self.coll is not None:
            self.coll.drop(force=True)


@pytest.fixture
def own_engine(make_database: Any) -> Iterator[Engine]:
    """A database of the machine's own: its downgrades and autogenerate touch no other test."""
    eng = sa.create_engine(make_database())
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def test_model_based_api(
    own_engine: Engine, tiny_encoder: Any, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGEMBED_MODEL_DIR", str(tiny_model_dir))  # declare_collection reads it
    Machine.engine, Machine.encoder, Machine.texts = own_engine, tiny_encoder, sentences()
    url = own_engine.url.render_as_string(hide_password=False)
    Machine.cli_env = {**os.environ, "PGEMBED_MODEL_DIR": str(tiny_model_dir),
                       "PGEMBED_DATABASE_URL": url}  # fmt: skip
    run_state_machine_as_test(Machine, settings=machine_settings(EXAMPLES))
