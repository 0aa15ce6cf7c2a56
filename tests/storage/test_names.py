"""Names as they are: every character class x every kind, as a collection, table, schema or
text search configuration name, behaves as the same collection under a plain name.

The cases are generated: each class of character that SQL text treats specially (quotes,
case, ``%`` placeholders, ``:`` binds, dots, spaces, backslashes, multibyte UTF-8, a leading
digit, the 63-byte limit) meets each kind once, the role (what the name names) rotating
with the pair, so every class is tried in every role too. Each case creates the collection,
adds rows (bulk or incremental), searches with every strategy its kinds support, counts,
and drops it; results must equal those of the plain-named twin. A name PostgreSQL cannot
hold must be refused with a PgembedError before anything changes.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Engine

import pgembed.alembic_ops  # noqa: F401  (registers the operations)
from pgembed import Collection, FDEConfig, sqlfuncs, stats
from pgembed.errors import PgembedError
from pgembed.storage import catalog, names
from pgembed.storage.schema import KINDS, MAX_IDENTIFIER_BYTES, IndexParams
from pgembed.strategies import DENSE, STRATEGIES

FDE = FDEConfig(dimension=32, num_repetitions=2, num_simhash_projections=2,
                projection_dimension=8, final_projection_dimension=None)  # fmt: skip
TEXTS = [
    "the cat sat on the warm mat by the door",
    "stock markets fell sharply on monday morning",
    "a recipe for bread needs flour water and salt",
    "the rocket launched into orbit after a delay",
    "volcanoes erupt when magma rises to the surface",
]
QUERY = "the cat and the rocket in orbit"

# Each class of character that SQL text, a driver or a parser treats specially; the name
# holds it between ordinary characters (a unique tag keeps concurrent cases apart).
CLASSES = {
    "double quote": 'a"b',
    "single quote": "a'b",
    "mixed case": "MiXed",
    "percent": "a%b",
    "double percent": "a%%b",
    "percent s": "a%sb",
    "colon bind": "a-:b",  # after a non-word character SQLAlchemy text() reads a bind
    "space": "a b",
    "dot": "a.b",
    "backslash": "a\\b",
    "accent": "é",
    "cjk": "中文",
    "emoji": "😀",
    "leading digit": "1st",
    "63 bytes": "",  # filled to exactly 63 bytes with 2-byte characters
    "64 bytes": "",  # one byte more than PostgreSQL holds
    "nul": "a\x00b",  # PostgreSQL's names cannot hold NUL
    "lone surrogate": "a\udc80b",  # not Unicode text: no UTF-8 spelling
}
ROLES = ("collection", "table", "schema", "config")


def _name(cls: str, tag: str) -> str:
    if cls in ("63 bytes", "64 bytes"):
        fill = MAX_IDENTIFIER_BYTES - len(tag.encode()) + (cls == "64 bytes")
        return tag + "é" * (fill // 2) + "x" * (fill % 2)
    return f"{CLASSES[cls]}_{tag}"


def _holds(name: str) -> bool:
    """Whether PostgreSQL can hold ``name`` as an identifier."""
    try:
        return "\x00" not in name and len(name.encode()) <= MAX_IDENTIFIER_BYTES
    except UnicodeEncodeError:
        return False


def _kinds(kind: str, role: str) -> tuple[str, ...]:
    kinds = ("single", "lexical") if kind == "lexical" else (kind,)
    return (*kinds, "lexical") if role == "config" and "lexical" not in kinds else kinds


def _cases() -> list[Any]:
    out = []
    for (i, cls), (j, kind) in itertools.product(enumerate(CLASSES), enumerate(KINDS)):
        role = ROLES[(i + j) % len(ROLES)]
        out.append(pytest.param(cls, kind, role, id=f"{cls}-{kind}-{role}"))
    return out


def test_every_class_meets_every_kind_and_role() -> None:
    cases = [p.values for p in _cases()]
    assert {(c, k) for c, k, _ in cases} == set(itertools.product(CLASSES, KINDS))
    assert {(c, r) for c, _, r in cases} == set(itertools.product(CLASSES, ROLES))
    assert all(len(_name(c, "t").encode()) == 63 + (c == "64 bytes") for c in CLASSES if "by" in c)


@pytest.fixture(scope="module")
def cfg_schema(engine: Engine) -> Iterator[str]:
    schema = f"names_cfgs_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        names.run_ddl(conn, f"CREATE SCHEMA {names.quote_ident(schema)}")
    yield schema
    with engine.begin() as conn:
        names.run_ddl(conn, f"DROP SCHEMA {names.quote_ident(schema)} CASCADE")


def _ts_config(engine: Engine, schema: str, name: str) -> None:
    """``name`` copying english, and its case-folded twin copying simple: a configuration
    read back folded would index and search differently."""
    with engine.begin() as conn:
        twin = [(name.lower(), "simple")] if name.lower() != name else []
        for cfg, source in [(name, "english"), *twin]:
            exists = conn.execute(
                sa.text(
                    "SELECT FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.cfgnamespace WHERE n.nspname = :s AND c.cfgname = :c"
                ),
                {"s": schema, "c": cfg},
            ).first()
            if exists is None:
                names.run_ddl(
                    conn,
                    f"CREATE TEXT SEARCH CONFIGURATION {names.qualified(schema, cfg)} "
                    f"(COPY = pg_catalog.{source})",
                )


def _results(coll: Collection, tiny_encoder: Any) -> dict[str, Any]:
    """What the collection answers: each strategy's (id, score) list, and the count."""
    spec = coll.spec
    st = stats.collect(coll, sample=2)  # checks the table's columns by its name first
    out: dict[str, Any] = {
        "count": coll.count(),
        "stats": (
            st.rows,
            st.kind_rows,
            st.recall10,
            st.lexical_documents,
            st.lexical_lexemes,
            st.lexical_avg_length,
        ),
    }
    dense = [d for d in DENSE if spec.has(STRATEGIES[d].kind)]
    for s in STRATEGIES.values():
        if spec.has(s.kind) and (s.name != "hybrid" or dense):
            opts = {"dense": dense[0]} if s.name == "hybrid" else {}
            out[s.name] = coll.search(QUERY, k=3, strategy=s.name, **opts)
    if spec.has("multivector"):  # no index of its own: exact MaxSim in SQL on the table
        t = coll.table()
        _, tokens = tiny_encoder.encode_both([QUERY], "query", progress=False)
        score = sqlfuncs.maxsim(np.asarray(tokens[0], np.float32), t.c.tokens)
        with coll.engine.connect() as conn:
            out["maxsim"] = conn.execute(
                sa.select(t.c.id, score).order_by(score.desc(), t.c.id).limit(3)
            ).all()
    return out


def _same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, hits in want.items():
        if key in ("count", "stats"):
            assert got[key] == hits
            continue
        assert [int(i) for i, _ in got[key]] == [int(i) for i, _ in hits], key
        np.testing.assert_allclose([s for _, s in got[key]], [s for _, s in hits], rtol=1e-5)


def _build(engine: Engine, enc: Any, name: str, kinds: tuple[str, ...], mode: str,
           alembic: bool, **options: Any) -> Collection:  # fmt: skip
    """Create, fill and (binary) reindex; the lexical kind either declared or added later
    by op.add_lexical over stored rows."""
    late = alembic and "lexical" in kinds
    declared = tuple(k for k in kinds if k != "lexical") if late else kinds
    config = options.pop("lexical_config", "english")
    extra = {} if late or "lexical" not in kinds else {"lexical_config": config}
    coll = Collection(engine, name, enc, kinds=declared, fde=FDE, matryoshka_dims=(8, 16),
                      index=IndexParams(binary="ivfflat", lists=1), **options, **extra)  # fmt: skip
    coll.create()
    coll.add(TEXTS, ids=range(10, 10 + len(TEXTS)), mode=mode)  # type: ignore[arg-type]
    if late:
        with engine.begin() as conn:
            Operations(MigrationContext.configure(conn)).add_lexical(name, config=config)
        coll = Collection.open(engine, name, enc)
    if coll.spec.has("binary"):
        coll.reindex()
    return coll


_plain: dict[tuple[str, ...], dict[str, Any]] = {}


def _reference(engine: Engine, enc: Any, kinds: tuple[str, ...]) -> dict[str, Any]:
    if kinds not in _plain:
        name = f"names_plain_{uuid.uuid4().hex[:8]}"
        coll = _build(engine, enc, name, kinds, "incremental", False)
        _plain[kinds] = _results(coll, enc)
        coll.drop(force=True)
    return _plain[kinds]


def _catalog(engine: Engine) -> tuple[set[str], set[tuple[str, str]]]:
    with engine.connect() as conn:
        colls = set(conn.execute(sa.select(catalog.collections.c.name)).scalars())
        tables = conn.execute(
            sa.text(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN "
                "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname "
                "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            )
        ).all()
    return colls, {(str(s), str(t)) for s, t in tables}


def _refused(engine: Engine, enc: Any, name: str, kinds: tuple[str, ...], mode: str,
             alembic: bool, options: dict[str, Any]) -> None:  # fmt: skip
    """A name PostgreSQL cannot hold: a PgembedError, nothing created or changed (with
    op.add_lexical: the collection stays as it was, without the lexical kind)."""
    if not (alembic and "lexical_config" in options):
        before = _catalog(engine)
        with pytest.raises(PgembedError, match=r"(bytes|dot|Unicode)"):
            _build(engine, enc, name, kinds, mode, alembic, **options)
        assert _catalog(engine) == before
        return
    coll = _build(engine, enc, name, tuple(k for k in kinds if k != "lexical"), mode, False)
    before = _catalog(engine)
    with pytest.raises(PgembedError, match=r"(bytes|dot|Unicode)"), engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).add_lexical(
            name, config=options["lexical_config"]
        )
    assert _catalog(engine) == before
    assert not Collection.open(engine, name, enc).spec.has("lexical")
    coll.drop(force=True)


@pytest.mark.parametrize(("cls", "kind", "role"), _cases())
def test_names_are_taken_as_they_are(
    engine: Engine, tiny_encoder: Any, cfg_schema: str, cls: str, kind: str, role: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    odd = _name(cls, tag)
    kinds = _kinds(kind, role)
    want = _reference(engine, tiny_encoder, kinds)
    name, options = f"names_{tag}", {}
    if role == "collection":
        name = odd
    elif role == "table":
        options["table"] = odd
    elif role == "schema":
        options["schema"] = odd
    else:
        options["lexical_config"] = f"{cfg_schema}.{odd}"
    case = sum(map(ord, cls + kind))  # alternates bulk/incremental and declared/added lexical
    mode, alembic = ("bulk", "incremental")[case % 2], bool(case // 2 % 2)
    fits = _holds(odd) and not (role == "config" and "." in odd)
    if not fits:
        _refused(engine, tiny_encoder, name, kinds, mode, alembic, options)
        return
    if role == "schema":
        with engine.begin() as conn:
            names.run_ddl(conn, f"CREATE SCHEMA {names.quote_ident(odd)}")
    if role == "config":
        _ts_config(engine, cfg_schema, odd)
    try:
        coll = _build(engine, tiny_encoder, name, kinds, mode, alembic, **options)
        assert coll.spec.name == name
        assert coll.spec.table_name == options.get("table", name)
        assert coll.spec.schema == options.get("schema", "public")
        if role == "config":  # the catalog reads back the configuration given, not a folded one
            assert (
                Collection.open(engine, name, tiny_encoder).spec.lexical_config
                == options["lexical_config"]
            )
        _same(_results(coll, tiny_encoder), want)
        if "lexical" in kinds and alembic:
            with engine.begin() as conn:
                Operations(MigrationContext.configure(conn)).drop_lexical(name)
            assert not Collection.open(engine, name, tiny_encoder).spec.has("lexical")
        assert Collection.open(engine, name, tiny_encoder).drop(force=True)
        colls, tables = _catalog(engine)
        assert name not in colls
        assert not [t for t in tables if t[0] == coll.spec.schema and tag in t[1]]
    finally:
        if role == "schema":
            with engine.begin() as conn:
                names.run_ddl(conn, f"DROP SCHEMA {names.quote_ident(odd)} CASCADE")


@pytest.mark.parametrize(
    "cls", [c for c in CLASSES if _holds(_name(c, "t")) and "." not in _name(c, "t")]
)
def test_config_spelling_reads_back(cls: str) -> None:
    """The catalog's spelling of a configuration parses back to the name given, for every
    class a configuration can be named with (regconfig's own parser is the check in the
    database: check_ts_config)."""
    odd = _name(cls, "t")
    for config in (odd, f"s_{cls[:3]}.{odd}", f"{odd}.{odd}"):
        assert names.ts_config_from_sql(names.ts_config_sql(config)) == config
