"""Sharded collections: one collection over several servers (postgres_fdw for plain SQL).

Each shard is an ordinary pgembed collection, created through the normal path with every
index. The coordinator records the declaration and the shard list (``pgembed.shards``) and
holds a partitioned parent table, hash on id, over postgres_fdw foreign tables, so plain SQL
on the coordinator sees every row. Rows go to the shard of their hash partition (PostgreSQL's
own ``satisfies_hash_partition``), so the parent and the shards always agree.

Searches fan out from Python: every shard runs the strategy's own SQL function with k,
oversample and ef_search as bound arguments (session settings do not travel over
postgres_fdw), all shards at once, each under its own statement timeout; the coordinator
merges by score. Every strategy's score is its exact rerank score, so the merge is exact.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from pgembed import _placement, conninfo, link_roles, strategies
from pgembed import _shard_audit as audit
from pgembed._placement import PlacementError as PlacementError
from pgembed._shard_audit import Audit as Audit
from pgembed._shard_audit import ShardPlacementWarning as ShardPlacementWarning
from pgembed.db import error_for, translate_sql_errors
from pgembed.errors import (
    CollectionError,
    ConfigError,
    DatabaseUnavailableError,
    InputError,
    MigrationError,
    PgembedError,
    ShardError,
    UnknownCollectionError,
)
from pgembed.storage import ingest
from pgembed.storage import schema as sch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from pgembed.encoders import Encoder
    from pgembed.pipeline import Collection

DEFAULT_TIMEOUT_MS = 30_000
"""Statement timeout of one shard's part of a search (ms)."""
CONNECT_TIMEOUT_S = 10
SEARCH_THREADS = 8
"""Concurrent searches per collection object that each get their own thread per shard."""


def mask(url: str) -> str:
    """A shard URL as errors and logs show it: never its password (nor any other secret),
    wherever the URL gives it."""
    return conninfo.mask(url)


class Hits(list[tuple[int, float]]):
    """Top-k ``(id, score)`` of a sharded search, best first; ``partial`` when shards were
    missing (only with ``allow_partial=True``), ``missing`` names them (URLs masked);
    ``duplicates``: ids more than one shard returned (misplaced rows), each kept once."""

    partial: bool = False
    missing: tuple[str, ...] = ()
    duplicates: tuple[int, ...] = ()


@dataclass
class Shard:
    position: int
    """Hash partition remainder of the rows this shard holds."""
    url: str
    engine: Engine
    """Writes and catalog reads: each checkout pings, so a restarted shard is found again."""
    search_engine: Engine | None = None
    """Searches: no ping per query (a round trip); a dead connection is retried once."""
    title: str | None = None
    """How errors name it, when not ``shard <position>``."""

    @classmethod
    def at(cls, position: int, url: str) -> Shard:
        return cls(position, url, _engine(url, ping=True), _engine(url, ping=False))

    def dispose(self) -> None:
        self.engine.dispose()
        if self.search_engine is not None:
            self.search_engine.dispose()

    @property
    def label(self) -> str:
        return f"{self.title or f'shard {self.position}'} ({mask(self.url)})"


def check_url(url: Any) -> str:
    """A shard's database URL, in the psycopg driver's form; ConfigError when malformed or
    when it sets a parameter its foreign server could not carry."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"a shard is named by its database URL (a string), got {url!r}")
    params = conninfo.params(url, "shard URL")
    conninfo.fdw_options(params)
    return conninfo.to_sqlalchemy(params)


def check_urls(shards: Sequence[str]) -> list[str]:
    """The shard URLs of a declaration, each checked, at least one, no database twice (in
    whatever form it is written)."""
    urls = list(shards) if not isinstance(shards, str) else [shards]
    seen = [conninfo.params(check_url(url)) for url in urls]
    if not urls:
        raise ConfigError("shards= needs at least one database URL")
    for i, a in enumerate(seen):
        if any(conninfo.same_database(a, b) for b in seen[:i]):
            raise ConfigError(
                f"shards= names the same database twice ({mask(urls[i])}); give each shard once"
            )
    return urls


def _engine(url: str, *, ping: bool = True) -> Engine:
    params = conninfo.params(url, "shard URL")
    return sa.create_engine(
        conninfo.to_sqlalchemy(params),
        # the URL's own connect_timeout wins
        connect_args={} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT_S},
        pool_pre_ping=ping,
        pool_size=SEARCH_THREADS,
    )


def _why(exc: BaseException) -> str:
    """One line about a shard's failure, without URLs (the caller names the shard)."""
    if isinstance(exc, sa.exc.DBAPIError):
        login = link_roles.login_refused(exc)
        if login is not None:  # not "went away": it never got in
            return login
        err = error_for(exc)
        text = str(err) if err is not None else str(exc.orig or exc)
    else:
        text = str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _fan_out(
    shards: Sequence[Shard], fn: Any, pool: ThreadPoolExecutor | None = None
) -> tuple[list[Any], dict[int, BaseException]]:
    """``fn(shard)`` on every shard at once; results by position, and the failures."""
    results: list[Any] = [None] * len(shards)
    failed: dict[int, BaseException] = {}
    own = pool is None
    ex = pool or ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="pgembed shard")
    try:
        futures = [ex.submit(fn, s) for s in shards]
        for s, fut in zip(shards, futures, strict=True):
            try:
                results[s.position] = fut.result()
            except Exception as exc:  # reported per shard by the caller
                failed[s.position] = exc
    finally:
        if own:
            ex.shutdown()
    return results, failed


class ShardedCollection:
    """A collection spread over ``shards`` (database URLs), coordinated from ``engine``.

    >>> coll = ShardedCollection(engine, "docs", enc, shards=[url1, url2], kinds=("single",))
    >>> coll.create(); coll.add(texts, ids=range(len(texts)))
    >>> coll.search("a query", k=10)            # every shard at once, merged by score

    The declaration keywords are those of :class:`pgembed.Collection`; every shard gets the
    same declaration. Every database (coordinator and shards) must be migrated to the same
    pgembed revision; ``pgembed db upgrade`` on the coordinator upgrades its shards too.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        encoder: Encoder,
        *,
        shards: Sequence[str],
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        **declaration: Any,
    ) -> None:
        from pgembed.pipeline import Collection

        urls = check_urls(shards)
        self.engine = engine
        self.encoder = encoder
        self.timeout_ms = strategies.check_int("timeout_ms", timeout_ms, 1, 2**31 - 1)
        self.shards = [Shard.at(i, u) for i, u in enumerate(urls)]
        recorded = declaration.pop("recorded", None)
        self.parts: list[Collection] = [
            Collection(s.engine, name, encoder, recorded=recorded, **declaration)
            for s in self.shards
        ]
        self.spec = self.parts[0].spec
        self._placed: set[int] | None = None  # shards whose placement record was checked
        # Searches reuse their threads: concurrent callers each get one per shard.
        self._pool = ThreadPoolExecutor(
            max_workers=SEARCH_THREADS * len(self.shards), thread_name_prefix="pgembed search"
        )

    # --- construction -------------------------------------------------------------------

    @classmethod
    def open(
        cls, engine: Engine, name: str, encoder: Encoder | None = None, **kw: Any
    ) -> ShardedCollection:
        """A sharded collection recorded on the coordinator ``engine``.

        Reads the declaration from the first shard that answers: a shard that is down is
        reported by the search or write that needs it (searches may go on without it).
        """
        from pgembed.pipeline import Collection

        with engine.connect() as conn:
            urls = shard_urls(conn, name)
        first: Collection | None = None
        why: list[str] = []
        for i, url in enumerate(urls):
            eng = _engine(url)
            try:
                first = Collection.open(eng, name, encoder)
                break
            except Exception as exc:
                why.append(f"shard {i} ({mask(url)}): {_why(exc)}")
            finally:
                eng.dispose()
        if first is None:
            raise ShardError(f"cannot open collection {name!r} on any shard: {'; '.join(why)}")
        self = cls(engine, name, first.encoder, shards=urls, recorded=first.spec, **kw)
        check_versions(engine, self.shards, reachable_only=True)
        self._check_placement(reachable_only=True)
        for part in self.parts:  # the recorded FDE matrices, as Collection.open loads them
            part._fde, part._fde_config_id = first._fde, None
        return self

    def create(self) -> ShardedCollection:
        """Create the collection on every shard and record it on the coordinator, with its
        partitioned parent over foreign tables (idempotent).

        Each shard records the placement (placement id, its position, the number of shards)
        with its part; a shard list that disagrees with what the shards or the coordinator
        record is refused (PlacementError) before any shard changes."""
        from pgembed.pipeline import encoder_record
        from pgembed.storage import declare

        check_versions(self.engine, self.shards)
        with self.engine.connect() as conn:
            _require_catalog(conn)
            state = _placement.coordinator_state(conn, self.spec.name)
            if state[0]:
                _placement.same_shards(conn, self.spec.name, self.shards)

        def make(s: Shard, conn: Connection) -> None:
            part = self.parts[s.position]
            part._fde_config_id = declare.declare_spec(
                conn, part.spec, encoder_record(part.encoder), part._fde
            )

        placement, _ = _placement.create(self.shards, self.spec, state, make)
        # indexes an interrupted bulk load left missing, as Collection.create builds them
        _, failed = _fan_out(
            self.shards, lambda s: self.parts[s.position].finish_bulk(progress=False)
        )
        _raise_failed(self.shards, failed, f"create collection {self.spec.name!r}")
        with self.engine.begin() as conn:
            _register(conn, self.spec, self.shards, placement)
        self._placed = {s.position for s in self.shards}
        return self

    def _check_placement(self, *, reachable_only: bool) -> None:
        """The coordinator records these shards, and each shard the placement: once per
        object for searches (those that answer), until every shard was for writes."""
        done = self._placed
        if done is not None and (reachable_only or len(done) == len(self.shards)):
            return
        self._placed = _placement.ensure(
            self.engine, self.shards, self.spec, reachable_only=reachable_only,
            done=frozenset(done or ()),
        )  # fmt: skip

    def drop(self, *, force: bool = False) -> None:
        """Drop the collection on every shard, and on the coordinator its parent table,
        foreign servers and catalog entry. Refuses (CollectionError) while it holds rows,
        unless forced; every shard must answer. A shard that no longer holds the collection
        is skipped, so a drop that failed part way is simply run again."""
        if not force and audit.audit(self.shards, self.spec).rows:
            raise CollectionError(
                f"sharded collection {self.spec.name!r} holds rows; drop(force=True) drops "
                "them on every shard"
            )

        def drop(s: Shard) -> None:
            with suppress(UnknownCollectionError):  # lost, or dropped by an earlier run
                self.parts[s.position].drop(force=force)

        _, failed = _fan_out(self.shards, drop)
        _raise_failed(self.shards, failed, f"drop {self.spec.name!r}")
        with self.engine.begin() as conn:
            _unregister(conn, self.spec.name)

    def dispose(self) -> None:
        """Close the shards' connection pools and the search threads."""
        self._pool.shutdown()
        for s in self.shards:
            s.dispose()

    # --- writing ------------------------------------------------------------------------

    def route(self, ids: Sequence[int] | np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        """For each shard, the positions in ``ids`` of the rows it holds (the coordinator's
        hash partitioning, asked of PostgreSQL itself)."""
        arr = ingest.check_ids(ids)
        n = len(self.shards)
        with self.engine.connect() as conn:
            parent = _parent(conn, self.spec.name)
            rows = conn.execute(
                sa.text(
                    "SELECT r, x.at - 1 FROM pg_catalog.unnest(CAST(:ids AS bigint[])) "
                    "WITH ORDINALITY AS x(id, at), pg_catalog.generate_series(0, :n - 1) AS r "
                    "WHERE pg_catalog.satisfies_hash_partition(CAST(:parent AS oid), :n, r, x.id)"
                ),
                {"ids": arr.tolist(), "n": n, "parent": parent},
            ).all()
        at = np.array(rows, dtype=np.int64).reshape(-1, 2)
        out = [np.sort(at[at[:, 0] == i, 1]) for i in range(n)]
        assert sum(len(o) for o in out) == len(arr)  # each id in exactly one partition
        return out

    def add(
        self,
        texts: Iterable[str],
        ids: Iterable[int],
        *,
        vectors: Any = None,
        **options: Any,
    ) -> int:
        """Write rows to their shards, all shards at once, each through its own bulk or
        incremental path (``options`` as :meth:`pgembed.Collection.add`). Returns rows written.

        Re-runs are exact: rows already stored are skipped, the rest are upserted by id. A
        shard that fails leaves the others' rows committed; the ShardError names it, and
        the same call run again once it is back writes what it lacks.
        """
        text_list = list(texts) if not isinstance(texts, str) else [texts]
        if ids is None:
            raise InputError("a sharded collection needs ids= (rows are placed by id hash)")
        id_arr = ingest.check_ids(list(ids))
        if len(id_arr) != len(text_list):
            raise InputError(f"{len(id_arr)} ids for {len(text_list)} texts")
        pooled, tokens = vectors if isinstance(vectors, tuple) else (vectors, None)
        for what, given_rows in (("vectors", pooled), ("token arrays", tokens)):
            if given_rows is not None and len(given_rows) != len(text_list):
                raise InputError(
                    f"{len(given_rows)} {what} for {len(text_list)} texts; give one per text"
                )
        self._check_placement(reachable_only=False)
        routes = self.route(id_arr)

        def write(s: Shard) -> int:
            at = routes[s.position]
            if not len(at):
                return 0
            given: Any = None
            if vectors is not None:
                p = None if pooled is None else np.asarray(pooled)[at]
                t = None if tokens is None else [tokens[i] for i in at]
                given = (p, t) if isinstance(vectors, tuple) else p
            return int(
                self.parts[s.position].add(
                    [text_list[i] for i in at], id_arr[at], vectors=given, **options
                )
            )

        written, failed = _fan_out(self.shards, write)
        _raise_failed(
            self.shards, failed, f"write to {self.spec.name!r}",
            "; the other shards' rows are committed: run the same add again once the "
            "shard is back, it writes only what is missing",
        )  # fmt: skip
        return sum(written)

    def count(self) -> int:
        """Rows, each id once: a row that sits on a shard its id does not hash to (written
        there directly) is counted once, with a ShardPlacementWarning (see :meth:`verify`)."""
        self._check_placement(reachable_only=False)
        found = audit.audit(self.shards, self.spec)
        audit.warn_misplaced(self.shards, self.spec.name, found)
        return found.rows

    def verify(self) -> audit.Audit:
        """Every shard's rows checked against its position: rows per shard that belong
        there, and the misplaced ones (id, the shard holding it, the shard it hashes to,
        whether that one holds the id too)."""
        self._check_placement(reachable_only=False)
        return audit.audit(self.shards, self.spec)

    # --- searching ----------------------------------------------------------------------

    def search(
        self,
        query: str | Any,
        k: int = 10,
        *,
        strategy: str = "knn",
        allow_partial: bool = False,
        **options: Any,
    ) -> Hits:
        """Top-k ``(id, score)`` over every shard, best first (options as
        :meth:`pgembed.Collection.search`; each shard gets them all, ef_search included).

        Scores equal those of one server holding every row: dense strategies return exact
        rerank scores, and bm25 scores with statistics summed over every shard; hybrid fuses
        the merged BM25 and dense lists on the coordinator, as ``search_hybrid`` does.

        A shard that is down or runs past the statement timeout raises ShardError naming
        it; with ``allow_partial=True`` the others' hits come back with ``partial`` set.
        """
        plan, opts = strategies.check_search(self.spec, strategy, k, options)
        k = int(k)
        self._check_placement(reachable_only=True)
        missing: set[int] = set()
        twice: set[int] = set()
        if plan.name == "bm25":
            hits = self._bm25(strategies.query_text(query), k, opts, allow_partial, missing, twice)
        elif plan.name == "hybrid":
            text = strategies.query_text(query)
            hits = self._hybrid(text, k, opts, allow_partial, missing, twice)
        else:
            hits = self._dense(plan, query, k, opts, allow_partial, missing, twice)
        out = Hits(hits)
        if missing:
            out.partial = True
            out.missing = tuple(self.shards[i].label for i in sorted(missing))
        if twice:
            out.duplicates = tuple(sorted(twice))
            audit.warn_seen_twice(self.spec.name, twice)
        return out

    def _encode(self, plan: strategies.Strategy, query: Any) -> Any:
        if not isinstance(query, str):
            return query
        if plan.tokens:
            return self.encoder.encode_tokens([query], "query", progress=False)[0]
        return self.encoder.encode([query], "query", progress=False)[0]

    def _dense(
        self,
        plan: strategies.Strategy,
        query: Any,
        k: int,
        opts: dict[str, Any],
        allow_partial: bool,
        missing: set[int],
        twice: set[int],
    ) -> list[tuple[int, float]]:
        from pgembed import sqlfuncs

        q = strategies.check_query(self.spec, plan, self._encode(plan, query), opts)
        if "target_recall" in opts:  # each shard's calibration, as Collection.search warns
            audit.warn_calibration(self.shards, self.spec, plan.name, opts)
        stmt = sa.select(getattr(sqlfuncs, plan.function)(self.spec.name, q, k=k, **opts))
        no_params: dict[str, Any] = {}
        return audit.merge(self._ask(stmt, no_params, allow_partial, missing), k, twice)

    def _bm25(
        self,
        text: str,
        k: int,
        opts: dict[str, Any],
        allow_partial: bool,
        missing: set[int],
        twice: set[int],
    ) -> list[tuple[int, float]]:
        """Two rounds: every shard's statistics for the query, then every shard's BM25 with
        their sums, so that scores compare across shards."""
        stats = self._ask(
            sa.text("SELECT * FROM pgembed.bm25_statistics(:c, :q)"),
            {"c": self.spec.name, "q": text}, allow_partial, missing,
        )  # fmt: skip
        docs = sum(int(r[0][0]) for r in stats)
        tokens = sum(int(r[0][1]) for r in stats)
        dfs: dict[str, int] = {}
        for r in stats:
            for lexeme, df in zip(r[0][2], r[0][3], strict=True):
                dfs[lexeme] = dfs.get(lexeme, 0) + int(df)
        # k1 and b by name when given (fixed names, bound values), else the function's defaults
        named = "".join(f", {o} => :{o}" for o in ("k1", "b") if o in opts)
        stmt = sa.text(
            "SELECT id, score FROM pgembed.search_bm25_global(:c, :q, :docs, :tokens, "
            f"CAST(:lexemes AS text[]), CAST(:dfs AS bigint[]), k => :k{named})"
        )
        params: dict[str, Any] = {
            "c": self.spec.name, "q": text, "docs": docs, "tokens": tokens, "k": k,
            "lexemes": list(dfs), "dfs": list(dfs.values()),
            **{o: float(opts[o]) for o in ("k1", "b") if o in opts},
        }  # fmt: skip
        return audit.merge(self._ask(stmt, params, allow_partial, missing), k, twice)

    def _hybrid(
        self,
        text: str,
        k: int,
        opts: dict[str, Any],
        allow_partial: bool,
        missing: set[int],
        twice: set[int],
    ) -> list[tuple[int, float]]:
        """search_hybrid over the shards: the merged BM25 and dense lists, each ``depth``
        deep, fused on the coordinator by the same ``pgembed.fuse``."""
        from pgembed import sqlfuncs

        depth = int(opts.get("depth") or max(k, 100))
        dense = strategies.get(opts.get("dense") or "knn")
        bm25: dict[str, Any] = {o: opts[o] for o in ("k1", "b") if o in opts}
        # the dense side's settings as search_hybrid gives them
        # (with target_recall, each shard's dense side takes its own calibrated setting)
        side: dict[str, Any] = {o: opts[o] for o in ("ef_search", "target_recall") if o in opts}
        if dense.name == "multivector" and "target_recall" not in side:
            side["candidates"] = max(depth, 100)
        lexical = self._bm25(text, depth, bm25, allow_partial, missing, twice)
        found = self._dense(dense, text, depth, side, allow_partial, missing, twice)
        fusion = {o: opts[o] for o in ("fusion", "rrf_k", "bm25_weight", "dense_weight", "alpha")
                  if o in opts}  # fmt: skip
        with self.engine.connect() as conn, translate_sql_errors(self.spec.name):
            rows = conn.execute(sa.select(sqlfuncs.fuse(lexical, found, k, **fusion))).all()
        return [(int(i), float(sc)) for i, sc in rows]

    def _ask(
        self, stmt: Any, params: dict[str, Any], allow_partial: bool, missing: set[int]
    ) -> list[list[Any]]:
        """``stmt`` on every shard at once, each under the statement timeout; the rows of
        those that answered. Shards that did not are added to ``missing`` (allow_partial),
        else ShardError names them; an error of the request itself is raised as is."""
        timeout = str(self.timeout_ms)

        def ask(s: Shard) -> list[Any]:
            assert s.search_engine is not None
            for retry in (False, True):
                try:
                    with s.search_engine.connect() as conn, conn.begin():
                        conn.execute(
                            sa.text("SELECT pg_catalog.set_config('statement_timeout', :t, true)"),
                            {"t": timeout},
                        )
                        return list(conn.execute(stmt, params).all())
                except sa.exc.DBAPIError as exc:
                    # A pooled connection the shard dropped (it restarted): once more, afresh.
                    if retry or not exc.connection_invalidated:
                        err = error_for(exc, self.spec.name)
                        if err is not None and not isinstance(err, DatabaseUnavailableError):
                            raise err from None  # pgembed's own refusal: not the shard's fault
                        raise
            raise AssertionError("unreachable")

        results, failed = _fan_out(self.shards, ask, self._pool)
        if failed and not allow_partial:
            _raise_failed(self.shards, failed, f"search {self.spec.name!r}",
                          "; or pass allow_partial=True for the other shards' hits, "
                          "flagged as partial")  # fmt: skip
        for i in sorted(failed):  # allow_partial: only a shard's absence is forgiven
            exc = failed[i]
            if isinstance(exc, PgembedError) and not isinstance(exc, DatabaseUnavailableError):
                raise exc
        missing.update(failed)
        return [r for i, r in enumerate(results) if i not in failed]


# --- coordinator catalog -----------------------------------------------------------------


def _require_catalog(conn: Connection) -> None:
    if conn.execute(sa.text("SELECT to_regclass('pgembed.shards')")).scalar() is None:
        raise MigrationError(
            "this database has no catalog of shards (pgembed.shards); run `pgembed db "
            "upgrade` on the coordinator"
        )


_RESOLVED = """
    SELECT s.url, m.umoptions, s.collection, s.position
    FROM pgembed.shards AS s
    LEFT JOIN pg_catalog.pg_user_mappings AS m
        ON m.srvname = s.server AND m.usename = pg_catalog.current_user()
"""
"""Shard URLs with the options of the current user's postgres_fdw user mapping."""


def without_password(url: str) -> str:
    """``url`` as ``pgembed.shards`` stores it: a SQLAlchemy URL of every libpq parameter
    but the secrets (password, sslpassword: those live in the foreign server's user
    mapping, which PostgreSQL shows only to its user and superusers), wherever the URL
    gave them (userinfo, query string, key=value)."""
    return conninfo.to_sqlalchemy(conninfo.without_secrets(conninfo.params(url, "shard URL")))


def _with_password(url: str, umoptions: Sequence[str] | None) -> str:
    """A stored URL with the secrets of its user mapping (``umoptions``: its "key=value"
    entries); without them when it holds none, so that libpq's own sources (PGPASSWORD,
    the password file, a service file) apply."""
    params = conninfo.params(url, "shard URL recorded on the coordinator")
    secret = conninfo.secret_keys()
    for entry in umoptions or ():
        key, _, value = str(entry).partition("=")
        if key in secret and value:
            params[key] = value
    return conninfo.to_sqlalchemy(params)


def shard_urls(conn: Connection, name: str) -> list[str]:
    """The shard URLs of sharded collection ``name``, by position, with passwords from the
    user mappings."""
    _require_catalog(conn)
    rows = conn.execute(
        sa.text(f"{_RESOLVED} WHERE s.collection = :n ORDER BY s.position"), {"n": name}
    ).all()
    out = [_with_password(str(u), pw) for u, pw, _, _ in rows]
    if not out:
        raise UnknownCollectionError(
            f"no sharded collection {name!r} is recorded on this coordinator; create it with "
            "ShardedCollection(engine, name, encoder, shards=[...]).create()"
        )
    return out


def all_shard_urls(conn: Connection) -> list[tuple[str, str]]:
    """Every shard URL the coordinator records (each once), with how to name it."""
    if conn.execute(sa.text("SELECT to_regclass('pgembed.shards')")).scalar() is None:
        return []
    rows = conn.execute(sa.text(f"{_RESOLVED} ORDER BY s.url, s.collection, s.position")).all()
    first: dict[str, tuple[str, str]] = {}
    for u, opts, c, p in rows:
        key = without_password(str(u))  # one database however its URL was written
        first.setdefault(key, (_with_password(str(u), opts), f"shard {p} of {c!r}"))
    return sorted(first.values())


def _parent(conn: Connection, name: str) -> int:
    _require_catalog(conn)
    oid = conn.execute(
        sa.text("SELECT parent FROM pgembed.sharded_collections WHERE name = :n"), {"n": name}
    ).scalar()
    if oid is None:
        raise UnknownCollectionError(
            f"sharded collection {name!r} is not recorded on this coordinator; create() it"
        )
    return int(oid)


def _short(text: str, limit: int = 40) -> str:
    """A name part that keeps identifiers under PostgreSQL's 63 bytes."""
    if len(text.encode()) <= limit:
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _server_options(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """(foreign server options, user mapping options) of a shard: every libpq parameter of
    its URL, the user and secrets in the mapping (see conninfo.fdw_options)."""
    return conninfo.fdw_options(conninfo.params(url, "shard URL"))


def _register(
    conn: Connection, spec: sch.CollectionSpec, shards: Sequence[Shard], placement: str
) -> None:
    """Record the collection on the coordinator, with its parent over foreign tables, and
    the placement id its shards record."""
    import json

    from psycopg import sql

    from pgembed.db import raw_connection

    _require_catalog(conn)
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.shards'))"))
    declaration = json.dumps(spec.to_catalog(), sort_keys=True)
    row = conn.execute(
        sa.text("SELECT declaration FROM pgembed.sharded_collections WHERE name = :n"),
        {"n": spec.name},
    ).first()
    if row is not None:
        recorded = shard_urls(conn, spec.name)
        given = [conninfo.params(without_password(s.url)) for s in shards]
        if json.dumps(row[0], sort_keys=True) != declaration or given != [
            conninfo.params(without_password(u)) for u in recorded
        ]:
            raise CollectionError(
                f"sharded collection {spec.name!r} is recorded with another declaration or "
                "other shards; open it with ShardedCollection.open(engine, name)"
            )
        conn.execute(  # recorded before placements were: the one its shards now record
            sa.text(
                "UPDATE pgembed.sharded_collections SET placement = CAST(:p AS uuid) "
                "WHERE name = :n AND placement IS NULL"
            ),
            {"p": placement, "n": spec.name},
        )
        return
    raw = raw_connection(conn)
    raw.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
    table = sch.table(spec, sa.MetaData())
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type.compile(conn.dialect)))
        for c in table.columns
    )
    parent = sql.Identifier(spec.schema, spec.table_name)
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": parent.as_string(raw)}).scalar():
        raise CollectionError(
            f"table {spec.schema}.{spec.table_name} exists on the coordinator; the sharded "
            f"collection {spec.name!r} needs that name for its parent table: drop or rename it"
        )
    raw.execute(
        sql.SQL("CREATE TABLE {} ({}) PARTITION BY HASH ({})").format(
            parent, cols, sql.Identifier(spec.id_column)
        )
    )
    tag = _short(spec.name)
    conn.execute(
        sa.text(
            "INSERT INTO pgembed.sharded_collections (name, declaration, parent, placement) "
            "VALUES (:n, CAST(:d AS jsonb), to_regclass(:p)::oid, CAST(:id AS uuid))"
        ),
        {"n": spec.name, "d": declaration, "p": parent.as_string(raw), "id": placement},
    )
    for s in shards:
        server = f"pgembed_{tag}_{s.position}"
        server_opts, mapping = _server_options(s.url)
        opts = {**server_opts, "extensions": "vector", "async_capable": "true"}
        raw.execute(
            sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
                sql.Identifier(server),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v))
                    for k, v in opts.items()
                ),
            )
        )
        raw.execute(
            sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER {} {}").format(
                sql.Identifier(server),
                sql.SQL("OPTIONS ({})").format(
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v))
                        for k, v in mapping.items()
                    )
                )
                if mapping
                else sql.SQL(""),
            )
        )
        raw.execute(
            sql.SQL(
                "CREATE FOREIGN TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS {}, "
                "REMAINDER {}) SERVER {} OPTIONS (schema_name {}, table_name {})"
            ).format(
                sql.Identifier(spec.schema, f"{_short(spec.table_name)}_shard_{s.position}"),
                parent,
                sql.Literal(len(shards)),
                sql.Literal(s.position),
                sql.Identifier(server),
                sql.Literal(spec.schema),
                sql.Literal(spec.table_name),
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO pgembed.shards (collection, position, url, server) "
                "VALUES (:c, :p, :u, :s)"
            ),
            {"c": spec.name, "p": s.position, "u": without_password(s.url), "s": server},
        )


def _unregister(conn: Connection, name: str) -> None:
    """Remove a sharded collection's parent, foreign servers and catalog rows."""
    from psycopg import sql

    from pgembed.db import raw_connection

    _require_catalog(conn)
    raw = raw_connection(conn)
    parent = conn.execute(
        sa.text(
            "SELECT n.nspname, c.relname FROM pgembed.sharded_collections AS s "
            "JOIN pg_catalog.pg_class AS c ON c.oid = s.parent "
            "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE s.name = :n"
        ),
        {"n": name},
    ).first()
    if parent is not None:  # its foreign partitions go with it
        raw.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(parent[0], parent[1])))
    servers = conn.execute(
        sa.text("SELECT server FROM pgembed.shards WHERE collection = :n"), {"n": name}
    ).scalars()
    for server in list(servers):  # with its user mappings
        raw.execute(sql.SQL("DROP SERVER IF EXISTS {} CASCADE").format(sql.Identifier(server)))
    conn.execute(sa.text("DELETE FROM pgembed.sharded_collections WHERE name = :n"), {"n": name})


def _raise_failed(
    shards: Sequence[Shard], failed: dict[int, BaseException], what: str, fix: str = ""
) -> None:
    if not failed:
        return
    for i in sorted(failed):  # bad input or a refused declaration: the shard is not at fault
        exc = failed[i]
        if isinstance(exc, PgembedError) and not isinstance(exc, DatabaseUnavailableError):
            raise exc
    named = "; ".join(f"{shards[i].label}: {_why(failed[i])}" for i in sorted(failed))
    raise ShardError(f"could not {what} on {len(failed)} of {len(shards)} shards: {named}{fix}")


# --- versions ----------------------------------------------------------------------------


def check_versions(
    coordinator: Engine, shards: Sequence[Shard], *, reachable_only: bool = False
) -> None:
    """Every shard at the coordinator's pgembed revision, or MigrationError naming it
    (``reachable_only``: shards that cannot be reached are left to the calls that need them).
    """
    from pgembed import migrate

    _check_revisions(migrate.current(coordinator), shards, reachable_only)


def _check_revisions(want: str | None, shards: Sequence[Shard], reachable_only: bool) -> None:
    from pgembed import migrate

    revs, failed = _fan_out(shards, lambda s: migrate.current(s.engine))
    if not reachable_only:
        _raise_failed(shards, failed, "read the pgembed revision")
    wrong = [
        f"{s.label} is at {revs[s.position]!r}"
        for s in shards
        if s.position not in failed and revs[s.position] != want
    ]
    if wrong:
        raise MigrationError(
            f"the shards must be at the coordinator's pgembed revision {want!r}, but "
            f"{'; '.join(wrong)}; run `pgembed db upgrade` on the coordinator, which "
            "upgrades every shard"
        )


def _recorded_shards(coordinator: Engine) -> list[Shard]:
    """Every shard the coordinator records, each once, named by collection and position."""
    from pgembed.db import translate_errors

    with translate_errors(str(coordinator.url)), coordinator.connect() as conn:
        urls = all_shard_urls(conn)
    return [Shard(i, u, _engine(u), title=t) for i, (u, t) in enumerate(urls)]


def _shard_revisions(shards: Sequence[Shard], doing: str) -> list[str | None]:
    """Every shard's pgembed revision; MigrationError (nothing changed) when a shard cannot
    be reached or is at a revision this pgembed does not know."""
    from pgembed import migrate

    known = {s.revision for s in migrate.history()}
    revs, failed = _fan_out(shards, lambda s: migrate.current(s.engine))
    _raise_failed(shards, failed, "read the pgembed revision")
    alien = [f"{s.label} is at {revs[s.position]!r}" for s in shards
             if revs[s.position] is not None and revs[s.position] not in known]  # fmt: skip
    if alien:
        raise MigrationError(
            f"cannot {doing} the shards: {'; '.join(alien)}, a revision this pgembed "
            "does not know (newer?); upgrade pgembed to the shards' version first"
        )
    return revs


def upgrade_shards(coordinator: Engine, revision: str = "head") -> list[str]:
    """Upgrade every shard the coordinator records to ``revision``; returns their labels.

    Refuses (MigrationError, before any shard changes) a shard that cannot be reached or is
    at a revision this pgembed does not know.
    """
    from pgembed import migrate

    shards = _recorded_shards(coordinator)
    if not shards:
        return []
    try:
        _shard_revisions(shards, "upgrade")
        for s in shards:  # one at a time: a failure names its shard, the rest stay as they were
            try:
                migrate.upgrade(s.engine, revision)
            except Exception as exc:
                raise MigrationError(f"upgrading {s.label} failed: {_why(exc)}") from None
        return [s.label for s in shards]
    finally:
        for s in shards:
            s.engine.dispose()


def _downgrade_target(coordinator: Engine, revision: str) -> str | None:
    """``revision`` as an absolute revision (None: base), relative ones (``-1``) counted
    from the coordinator's."""
    from pgembed import migrate

    order: list[str | None] = [None, *(s.revision for s in reversed(migrate.history()))]
    if revision == "base" or revision in order:
        return None if revision == "base" else revision
    here = migrate.current(coordinator)
    if re.fullmatch(r"-[0-9]+", revision) and here in order:
        at = order.index(here) + int(revision)
        if at >= 0:
            return order[at]
    raise MigrationError(
        f"cannot downgrade a coordinator and its shards to {revision!r}: give a revision "
        f"of `pgembed db history`, 'base', or -N steps below {here!r}"
    )


CATALOG_REVISION = "0007"
"""The revision that adds the coordinator's catalog of shards."""


def _refuse_dropping_catalog(coordinator: Engine) -> None:
    with coordinator.connect() as conn:
        names = conn.execute(
            sa.text("SELECT name FROM pgembed.sharded_collections ORDER BY name")
        ).scalars()
        listed = ", ".join(repr(n) for n in names)
    if listed:
        raise MigrationError(
            f"downgrading below {CATALOG_REVISION} removes the coordinator's catalog of "
            f"shards, but sharded collections are recorded: {listed}. Drop them first "
            "(ShardedCollection.drop / op.drop_sharded_collection), or pass --force "
            "(migrate.downgrade(engine, revision, force=True)): the catalog goes, each "
            "parent table stays on the coordinator over its foreign tables, with the rows "
            "on the shards"
        )


def downgrade_shards(coordinator: Engine, revision: str, force: bool = False) -> list[str]:
    """Downgrade every shard the coordinator records to ``revision`` (before the coordinator
    itself: it keeps the list of shards until they are done, so a failed downgrade is run
    again from the coordinator); returns their labels. Shards already at or below it stay.

    Refuses (MigrationError, before any database changes) a shard that cannot be reached,
    one at a revision this pgembed does not know, and, without ``force``, a downgrade
    that would take their catalog from sharded collections (below 0007 on the coordinator)
    or from registered collections (base).
    """
    from pgembed import migrate

    shards = _recorded_shards(coordinator)
    if not shards:
        return []
    try:
        target = _downgrade_target(coordinator, revision)
        revs = _shard_revisions(shards, "downgrade")
        if target is None and not force:
            for eng, label in [(coordinator, "the coordinator")] + [
                (s.engine, s.label) for s in shards
            ]:
                with eng.connect() as conn:
                    try:
                        migrate.refuse_orphaning_collections(conn, force)
                    except MigrationError as exc:
                        raise MigrationError(f"on {label}: {exc}") from None
        order: list[str | None] = [None, *(s.revision for s in reversed(migrate.history()))]
        if not force and order.index(target) < order.index(CATALOG_REVISION):
            _refuse_dropping_catalog(coordinator)
        for s in shards:  # one at a time: a failure names its shard
            if order.index(revs[s.position]) <= order.index(target):
                continue
            try:
                migrate.downgrade(s.engine, "base" if target is None else target, force=force)
            except Exception as exc:
                raise MigrationError(
                    f"downgrading {s.label} failed: {_why(exc)}; the coordinator is "
                    "unchanged: run the same downgrade on it again"
                ) from None
        return [s.label for s in shards]
    finally:
        for s in shards:
            s.engine.dispose()


# --- declaring in users' migrations (op.create_sharded_collection) ----------------------


def declare(
    conn: Connection, name: str, encoder: Any, shards: Sequence[str], **options: Any
) -> sch.CollectionSpec:
    """Create sharded collection ``name`` without loading a model: on every shard (each in
    its own transaction, committed here), then on the coordinator ``conn`` inside its open
    transaction (catalog rows, parent table, foreign servers). ``encoder`` is an
    EncoderRecord; ``options`` are those of :class:`pgembed.Collection`.

    The shards' part is not inside the coordinator's transaction: it commits even when the
    coordinator's rolls back. Both parts are idempotent (a shard that holds the same
    declaration is left as is), so running it again completes it.
    """
    from pgembed.storage import declare as decl

    urls = check_urls(shards)
    spec, _ = decl.spec_for(name, encoder, **_declaration(options))  # bad options: first
    _require_catalog(conn)
    revision = conn.execute(sa.text("SELECT version_num FROM pgembed.alembic_version")).scalar()
    parts = [Shard(i, u, _engine(u)) for i, u in enumerate(urls)]
    try:
        _check_revisions(None if revision is None else str(revision), parts, False)
        state = _placement.coordinator_state(conn, name)
        if state[0]:
            _placement.same_shards(conn, name, parts)
        placement, specs = _placement.create(
            parts, spec, state, lambda s, shard: decl.declare(shard, name, encoder, **options)
        )
        _register(conn, specs[0], parts, placement)
        return specs[0]  # type: ignore[no-any-return]
    finally:
        for s in parts:
            s.dispose()


def _declaration(options: dict[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    return {
        "kinds": opts.pop("kinds", ("single",)),
        "fde": opts.pop("fde", None),
        "matryoshka_dims": opts.pop("matryoshka_dims", None),
        **opts,
    }


def undeclare(conn: Connection, name: str, *, force: bool = False) -> None:
    """Drop sharded collection ``name``: on every shard, then on the coordinator ``conn``
    inside its open transaction. Refuses (CollectionError) a collection that holds rows
    unless forced, before any shard changes: every shard's drop runs in its own
    transaction, and they commit only once all have succeeded. A shard that no longer holds
    the collection is skipped, so running it again completes it.
    """
    from pgembed.storage import declare as decl

    parts = [Shard(i, u, _engine(u)) for i, u in enumerate(shard_urls(conn, name))]
    held: dict[int, Connection] = {}

    def drop(s: Shard) -> None:
        shard = held[s.position] = s.engine.connect()
        shard.begin()
        with suppress(UnknownCollectionError):  # dropped by an earlier run
            decl.undeclare(shard, name, force=force)

    try:
        _, failed = _fan_out(parts, drop)
        _raise_failed(parts, failed, f"drop {name!r}")
        for shard in held.values():
            shard.commit()
    finally:
        for shard in held.values():
            shard.close()  # rolls back what did not commit
        for s in parts:
            s.dispose()
    _unregister(conn, name)
