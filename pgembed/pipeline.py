"""Collection: encode → store → search. The one place where encoders meet storage."""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from pgembed import strategies
from pgembed.db import naming_role, translate_errors, translate_sql_errors
from pgembed.errors import (
    BlankTextWarning,
    CollectionError,
    ConfigError,
    DatabaseUnavailableError,
    DimensionError,
    EmptyInputError,
    FingerprintMismatchError,
    IngestError,
    InputError,
    NonFiniteError,
    PermissionDeniedError,
    PgembedError,
    UnknownKindError,
)
from pgembed.storage import bulk, catalog, declare, ingest, ownership
from pgembed.storage import names as storage_names
from pgembed.storage import schema as sch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from pgembed import calibration
    from pgembed.encoders import Encoder
    from pgembed.vectors.fde import FDEConfig, FDEEncoder

STRATEGIES = strategies.NAMES  # re-exported; pgembed.strategies owns them
STRATEGY_KIND = strategies.KIND
DEFAULT_BATCH = 256
WRITE_BYTES = 32 * 2**20
"""Most bytes of one write transaction (about): a batch of long texts with token arrays
and FDE vectors is split, a batch of precomputed vectors is sized to it."""


class Collection:
    """A table of texts and their vectors, declared once and recorded in pgembed's catalog.

    >>> coll = Collection(engine, "docs", encoder=enc, kinds=("single", "matryoshka"))
    >>> coll.create(); coll.add(texts, ids=range(len(texts)))
    >>> coll.search("a query", k=10, strategy="funnel")

    The catalog is the truth: ``create()`` records the declaration and the table it
    creates (it never takes over an existing table), and ``add()``/``sync()`` write only
    when this object's declaration (kinds, table, schema, columns, options, FDE config) is
    the recorded one, into the table the collection created; otherwise they raise
    CollectionError, before writing anything. To write into a recorded collection without
    repeating its declaration, use ``Collection.open(engine, name)``, which passes the
    recorded spec as ``recorded=`` (the declaration keywords are then not used).
    """

    def __new__(cls, *args: Any, shards: Sequence[str] | None = None, **kw: Any) -> Any:
        """``shards=[url, ...]`` declares a collection sharded over those databases: a
        :class:`pgembed.shards.ShardedCollection`, coordinated from ``engine``."""
        if shards is None:
            return super().__new__(cls)
        from pgembed.shards import ShardedCollection

        return ShardedCollection(*args, shards=shards, **kw)

    def __init__(
        self,
        engine: Engine,
        name: str,
        encoder: Encoder,
        *,
        shards: None = None,  # not None: __new__ made a ShardedCollection instead
        kinds: Sequence[str] = ("single",),
        fde: FDEConfig | None = None,
        matryoshka_dims: Sequence[int] | None = None,
        binary_bits: int = 1,
        table: str | None = None,
        schema: str = "public",
        text_column: str | None = "content",
        precision: sch.Precision = "halfvec",
        distance: sch.Distance = "cosine",
        index: sch.IndexParams | None = None,
        recorded: sch.CollectionSpec | None = None,
        lexical_config: str = "english",
    ) -> None:
        self.engine = engine
        self.encoder = encoder
        self._fde_config_id: int | None = None
        if recorded is not None:  # Collection.open: the catalog's declaration, not ours
            self.spec, self._fde = recorded, None
            return
        self.spec, self._fde = declare.spec_for(
            name, encoder_record(encoder), kinds, fde, matryoshka_dims,
            binary_bits=binary_bits, table=table, schema=schema, text_column=text_column,
            precision=precision, distance=distance, index=index or sch.IndexParams(),
            lexical_config=lexical_config,
        )  # fmt: skip

    # --- construction -------------------------------------------------------------------

    @classmethod
    def open(cls, engine: Engine, name: str, encoder: Encoder | None = None) -> Collection:
        """A collection recorded in the catalog; loads its encoder by name unless given."""
        with _connect(engine) as conn:
            rec = catalog.get_collection(conn, name)
            fde = catalog.load_fde_config(conn, rec.fde_config) if rec.fde_config else None
        if encoder is None:
            from pgembed.encoders import Encoder

            encoder = Encoder.load(rec.spec.encoder)
        self = cls(engine, name, encoder, recorded=rec.spec)
        self._fde = fde  # the stored matrices, as the SQL functions read them
        self._fde_config_id = rec.fde_config
        self._check_encoder(rec.fingerprint)
        return self

    def create(self) -> Collection:
        """Create the table and its indexes and record the collection (idempotent).

        Refuses (CollectionError) a table that exists without being the one this
        collection created, pgembed's own and the system's schemas, and a schema that does
        not exist. Concurrent calls for one collection wait for each other: one table, one
        catalog row.
        """
        with _connect(self.engine) as conn, conn.begin():
            self._fde_config_id = declare.declare_spec(
                conn, self.spec, encoder_record(self.encoder), self._fde
            )
        self.finish_bulk(progress=False)  # indexes an interrupted bulk load left missing
        return self

    def finish_bulk(
        self,
        *,
        progress: bool | None = None,
        on_progress: bulk.ProgressCallback | None = None,
        maintenance_work_mem: str | None = None,
        workers: int | None = None,
    ) -> list[str]:
        """Build the indexes a bulk load deferred, or an interrupted one left missing or
        invalid; returns their names (none while a bulk load of the collection still runs:
        its last loader builds them).

        ``add()`` calls this itself; call it after an interrupted bulk load that you do not
        re-run. Each index is one ``CREATE INDEX`` with ``maintenance_work_mem`` and
        ``max_parallel_maintenance_workers`` from the server unless given (workers never
        beyond what the server allows), and a progress bar from
        ``pg_stat_progress_create_index``. Searches meanwhile answer from a sequential scan;
        writes wait for each build.
        """
        with naming_role(self.engine), _write_errors(self.spec):
            return bulk.finish(
                self.engine, self.spec, check=self._check_recorded, show=progress is not False,
                on_progress=on_progress, maintenance_work_mem=maintenance_work_mem,
                workers=workers,
            )  # fmt: skip

    def reindex(self, *, progress: bool | None = None) -> list[str]:
        """Build missing indexes and rebuild the IVFFlat index, if any; returns the names of
        the indexes built.

        IVFFlat clusters its lists from the rows present when it is built, so build it
        again after incremental adds changed the data (a bulk load builds it at its end;
        HNSW indexes need no rebuild and are left alone). Indexes a bulk load left missing
        are built first (:meth:`finish_bulk`).
        """
        built = self.finish_bulk(progress=progress)
        if self.spec.index.binary != "ivfflat" or not self.spec.has("binary"):
            return built
        with _connect(self.engine) as conn, conn.begin():
            names = [n for n in ownership.ivfflat_indexes(conn, self.spec) if n not in built]
            for name in names:
                # REINDEX builds the index anew: IVFFlat clusters its lists from the rows.
                index = storage_names.qualified(self.spec.schema, name)
                storage_names.run_ddl(conn, f"REINDEX INDEX {index}")
        return built + names

    def drop(self, *, force: bool = False) -> bool:
        """Drop the table and the catalog entry; refuses a populated table unless forced.

        Drops only the table this collection created. Any other table of that name is
        left alone: only the catalog entry goes, with a warning. Returns whether the
        table was dropped.
        """
        with _connect(self.engine) as conn, conn.begin():
            return declare.undeclare(conn, self.spec.name, force=force)

    # --- properties ---------------------------------------------------------------------

    @property
    def fde(self) -> FDEEncoder:
        if self._fde is None:
            raise UnknownKindError(f"collection {self.spec.name!r} stores no fde")
        return self._fde

    def table(self) -> sa.Table:
        t: sa.Table = sch.table(self.spec, sa.MetaData())
        return t

    def count(self) -> int:
        with _connect(self.engine) as conn:
            return self._count(conn)

    def _count(self, conn: Connection) -> int:
        t = self.table()
        if not sa.inspect(conn).has_table(t.name, schema=t.schema):
            return 0
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())

    def _check_encoder(self, recorded: str) -> None:
        enc = self.encoder
        if enc.name != self.spec.encoder or enc.fingerprint != recorded:
            raise FingerprintMismatchError(
                f"collection {self.spec.name!r} was embedded with encoder "
                f"{self.spec.encoder!r} ({recorded[:12]}…), not {enc.name!r} "
                f"({enc.fingerprint[:12]}…); load that encoder, or use another collection"
            )

    # --- writing ------------------------------------------------------------------------

    def rows(self, texts: Sequence[str], ids: np.ndarray[Any, Any]) -> ingest.Rows:
        """Encode a batch into every kind the collection stores."""
        spec = self.spec
        need_tokens = spec.has("multivector")
        pooled: Any = None
        tokens: Any = None
        if need_tokens and spec.has("single"):
            pooled, tokens = self.encoder.encode_both(texts, "document", progress=False)
        elif need_tokens:
            tokens = self.encoder.encode_tokens(texts, "document", progress=False)
        else:
            pooled = self.encoder.encode(texts, "document", progress=False)
        return self._complete(ingest.Rows(ids=ids, texts=texts, embedding=pooled, tokens=tokens))

    def _complete(self, rows: ingest.Rows) -> ingest.Rows:
        """The kinds computed from the pooled and token vectors: binary codes, FDE."""
        from pgembed.vectors import binary

        spec = self.spec
        if not spec.has("single"):
            rows.embedding = None
        if not spec.has("multivector"):
            rows.tokens = None
        if spec.has("binary") and spec.binary_bits > 1:
            assert rows.embedding is not None
            rows.embedding_bits = binary.pack_residual(rows.embedding, spec.binary_bits)
        if spec.has("fde"):
            assert rows.tokens is not None
            rows.fde = self.fde.encode_document(rows.tokens)
        return rows

    def add(
        self,
        texts: Iterable[str],
        ids: Iterable[int] | None = None,
        *,
        vectors: Any = None,
        fingerprint: str | None = None,
        mode: bulk.Mode = "auto",
        batch_size: int = DEFAULT_BATCH,
        progress: bool | None = None,
        on_progress: bulk.ProgressCallback | None = None,
    ) -> int:
        """Encode and write texts by id; returns the rows written.

        **Modes.** ``"incremental"`` upserts into the indexed table, one transaction per
        batch (ids already stored are updated). ``"bulk"`` defers the collection's
        indexes, COPYs straight into the table (one committed transaction per batch) and
        builds every index at the end (:mod:`pgembed.storage.bulk`). ``"auto"`` (default)
        goes bulk into an empty collection, when the new texts are at least
        ``bulk.BULK_SHARE`` of the rows present (and at least ``bulk.BULK_MIN_ROWS``), or
        when an interrupted bulk load left indexes missing; incremental otherwise. Both
        modes store the same rows.

        **Concurrent searches** never fail: during a bulk load they answer from a
        sequential scan (exact, slower) and wait for the moment the indexes are dropped;
        during an index build they read on while writes wait.

        **Resuming.** Re-running after an interruption (even SIGKILL) is safe: ids already
        embedded from the same text are skipped, the rest are (re)written, so no row is lost
        or duplicated, and indexes a bulk load left missing are built at the end (also by
        :meth:`create`, :meth:`finish_bulk`, :meth:`reindex`).

        **Pipeline.** Batch k+1 is encoded while a writer thread, on its own connection,
        writes batch k; write transactions are capped at about ``WRITE_BYTES``. Errors of
        either side reach the caller as PgembedErrors; batches are written in order.

        **Precomputed vectors.** ``vectors`` takes encoder outputs made elsewhere instead of
        encoding: the pooled ``(n, dim)`` array, or ``(pooled, tokens)`` with one
        ``(n_i, dim)`` token array per text when the collection stores multivector or fde
        (``(None, tokens)`` when it stores no single). The caller vouches that they came from
        this collection's encoder (its dimension, and its fingerprint against the catalog,
        are checked; give ``fingerprint`` to have the vectors' own checked too).

        Texts cut at the encoder's max_length give one TruncationWarning per call. Writes
        follow the catalog: a declaration other than the recorded one is refused with a
        CollectionError before anything is written (see the class docstring).
        """
        from tqdm.auto import tqdm

        from pgembed.encoders.tokenize import check_texts, collect_truncations

        text_list = check_texts(texts)  # refuses a bare str before it is split into chars
        if not text_list:
            raise EmptyInputError("add() needs at least one text")
        for i, text in enumerate(text_list):
            if "\x00" in text:
                raise InputError(
                    f"text at index {i} contains a NUL character, which PostgreSQL text "
                    "cannot store; remove it (text.replace('\\x00', ''))"
                )
        id_arr = ingest.check_ids(list(ids) if ids is not None else range(len(text_list)))
        if len(id_arr) != len(text_list):
            raise InputError(f"{len(id_arr)} ids for {len(text_list)} texts")
        batch_size = _check_batch_size(batch_size)
        mode = bulk.check_mode(mode)
        given = self._check_vectors(vectors, len(text_list), fingerprint)
        n = len(text_list)
        bar = tqdm(total=n, desc=f"ingest {self.spec.name}", unit="text",
                   disable=_no_bar(progress, n))  # fmt: skip
        with _write_errors(self.spec), _connect(self.engine) as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self._check_recorded(conn)
            missing = bool(bulk.missing(conn, self.spec))
            chosen = bulk.choose(mode, n, self._count(conn), missing)
            if given is not None:  # no encoding: batches as large as WRITE_BYTES allow
                sizes = ingest.row_bytes(self.spec, ingest.Rows(id_arr, text_list, tokens=given[1]))
                batch_size = max(batch_size, WRITE_BYTES // max(1, int(sizes.mean())))
            writer = _Writer(self, chosen, bar, on_progress, n)
            with bar, collect_truncations() as tally, writer:
                for start in range(0, n, batch_size):
                    b_ids = id_arr[start : start + batch_size]
                    b_texts = text_list[start : start + batch_size]
                    done, present = ingest.stored(conn, self.spec, b_ids, b_texts)
                    writer.skipped(int(done.sum()))
                    keep = np.flatnonzero(~done)
                    if not len(keep):
                        continue
                    if given is None:
                        rows = self._rows_by_id([b_texts[i] for i in keep], b_ids[keep])
                    else:
                        rows = self._given_rows(given, start + keep, b_ids[keep], b_texts, keep)
                    writer.put(rows, present[keep])
            self.last_mode = chosen
        tally.warn(stacklevel=2)
        if chosen == "bulk" or missing:
            self.finish_bulk(progress=not _no_bar(progress, n), on_progress=on_progress)
        return writer.written

    last_mode: bulk.Mode | None = None
    """The mode the last :meth:`add` of this object ran in (``bulk`` or ``incremental``)."""

    def _check_vectors(
        self, vectors: Any, n: int, fingerprint: str | None
    ) -> tuple[np.ndarray[Any, Any] | None, list[np.ndarray[Any, Any]] | None] | None:
        """``vectors`` of add() as (pooled, tokens), checked against the encoder."""
        if vectors is None:
            if fingerprint is not None:
                raise InputError("fingerprint= describes precomputed vectors; give vectors= too")
            return None
        enc, spec = self.encoder, self.spec
        if fingerprint is not None and fingerprint != enc.fingerprint:
            raise FingerprintMismatchError(
                f"the vectors were made by an encoder with fingerprint {str(fingerprint)[:12]}…, "
                f"but collection {spec.name!r} holds vectors of {enc.name!r} "
                f"({enc.fingerprint[:12]}…); encode with that model, or use another collection"
            )
        pooled_in, tokens_in = vectors if isinstance(vectors, tuple) else (vectors, None)
        if isinstance(vectors, tuple) and len(vectors) != 2:
            raise InputError(f"vectors=(pooled, tokens) has {len(vectors)} items, not 2")
        if spec.has("single") and pooled_in is None:
            raise InputError(
                f"collection {spec.name!r} stores single vectors: give vectors=pooled, an "
                f"({n}, {enc.dim}) array"
            )
        if spec.has("multivector") and tokens_in is None:
            raise InputError(
                f"collection {spec.name!r} stores {'fde and ' if spec.has('fde') else ''}"
                f"multivector: give vectors=(pooled, tokens), tokens one (n_i, {enc.dim}) array "
                "of token vectors per text"
            )
        pooled = None
        if pooled_in is not None:
            pooled = np.asarray(pooled_in, dtype=np.float32)
            if pooled.ndim != 2 or pooled.shape != (n, enc.dim) or enc.dim != spec.dim:
                raise DimensionError(
                    f"vectors has shape {pooled.shape}; encoder {enc.name!r} of collection "
                    f"{spec.name!r} makes {enc.dim}-dim vectors, so ({n}, {enc.dim}) is "
                    "expected (one row per text)"
                )
            bad = np.flatnonzero(~np.isfinite(pooled).all(axis=1))
            if len(bad):
                raise NonFiniteError(f"vectors holds NaN or infinity in rows {bad[:5].tolist()}")
        tokens = None
        if tokens_in is not None:
            tokens = [np.asarray(t, dtype=np.float32) for t in tokens_in]
            if len(tokens) != n:
                raise InputError(f"{len(tokens)} token arrays for {n} texts")
            for i, t in enumerate(tokens):
                if t.ndim != 2 or t.shape[1] != enc.dim or t.shape[0] == 0:
                    raise DimensionError(
                        f"token array {i} has shape {t.shape}; encoder {enc.name!r} makes "
                        f"(n_tokens, {enc.dim}) arrays with at least one token"
                    )
                if not np.isfinite(t).all():
                    raise NonFiniteError(f"token array {i} holds NaN or infinity")
        return pooled, tokens

    def _given_rows(
        self,
        given: tuple[np.ndarray[Any, Any] | None, list[np.ndarray[Any, Any]] | None],
        at: np.ndarray[Any, Any],
        ids: np.ndarray[Any, Any],
        texts: list[str],
        keep: np.ndarray[Any, Any],
    ) -> ingest.Rows:
        pooled, tokens = given
        return self._complete(
            ingest.Rows(
                ids=ids,
                texts=[texts[i] for i in keep],
                embedding=None if pooled is None else pooled[at],
                tokens=None if tokens is None else [tokens[i] for i in at],
            )
        )

    def sync(self, *, batch_size: int = DEFAULT_BATCH, progress: bool | None = None) -> int:
        """Embed rows whose text is new or changed; safe to run in several workers at once.

        Rows whose text was set to NULL lose their vectors (they are no longer found).
        Rows whose text is empty or only whitespace get no vectors, are not claimed again
        until their text changes, and are named in a warning. Returns the rows embedded.
        """
        from tqdm.auto import tqdm

        from pgembed.encoders.tokenize import collect_truncations

        if self.spec.text_column is None:
            raise CollectionError(f"collection {self.spec.name!r} has no text column to sync")
        batch_size = _check_batch_size(batch_size)
        total, blank, first = 0, [], True
        with (
            tqdm(desc=f"sync {self.spec.name}", unit="row", disable=progress is False) as bar,
            collect_truncations() as tally,
        ):
            while True:
                with _write_errors(self.spec), _connect(self.engine) as conn, conn.begin():
                    self._check_recorded(conn)
                    if first:
                        ingest.clear_vectors(conn, self.spec)  # texts set to NULL
                        first = False
                    claimed = ingest.claim_stale(conn, self.spec, batch_size)
                    if not claimed:
                        break
                    empty = [i for i, text in claimed if not text.strip()]
                    blank += ingest.clear_vectors(conn, self.spec, empty)
                    todo = [(i, text) for i, text in claimed if text.strip()]
                    if todo:
                        ids = np.array([c[0] for c in todo], dtype=np.int64)
                        rows = self._rows_by_id([c[1] for c in todo], ids)
                        total += ingest.write(conn, self.spec, rows)
                bar.update(len(claimed))
        tally.warn(stacklevel=2)
        if blank:
            warnings.warn(
                f"sync left {len(blank)} row(s) of {self.spec.name!r} without vectors: their "
                f"text is empty or only whitespace (ids {blank[:10]}"
                f"{'...' if len(blank) > 10 else ''}); set a text to embed them",
                BlankTextWarning,
                stacklevel=2,
            )
        return total

    def _rows_by_id(self, texts: list[str], ids: np.ndarray[Any, Any]) -> ingest.Rows:
        """:meth:`rows`, but a text the encoder refuses is named by its row id."""
        try:
            return self.rows(texts, ids)
        except InputError:
            for text, i in zip(texts, ids, strict=True):
                try:
                    self.rows([text], ids[ids == i])
                except InputError as exc:
                    msg = re.sub(r"text at index \d+", f"the text of row id {int(i)}", str(exc))
                    raise type(exc)(f"collection {self.spec.name!r}: {msg}") from None
            raise

    def _check_recorded(self, conn: Connection) -> None:
        """Writes follow the catalog: refuse a declaration other than the recorded one.

        Checked in each write transaction, so a collection dropped or re-declared between
        batches is noticed before its rows are written.
        """
        rec = catalog.get_collection(conn, self.spec.name)
        self._check_encoder(rec.fingerprint)
        if _adoptable(rec.spec, self.spec):
            self.spec = rec.spec
        _check_same_declaration(rec.spec, self.spec)
        if rec.fde_config is not None and rec.fde_config != self._fde_config_id:
            stored = catalog.load_fde_config(conn, rec.fde_config)
            if self._fde is None or stored.config != self._fde.config:
                raise CollectionError(
                    f"collection {self.spec.name!r} is recorded with another FDE config "
                    f"({stored.config}) than this Collection's; open it as recorded with "
                    f"Collection.open(engine, {self.spec.name!r})"
                )
            self._fde, self._fde_config_id = stored, rec.fde_config  # the catalog's matrices
        ownership.check_writable(conn, rec)

    # --- searching ----------------------------------------------------------------------

    def search(
        self,
        query: str | Any,
        k: int = 10,
        *,
        strategy: str = "knn",
        dense_query: Any = None,
        **options: Any,
    ) -> list[tuple[int, float]]:
        """Top-k ``(id, score)``, best first, through the SQL function of the strategy.

        ``query`` is a text (encoded as a query) or a vector (for multivector: an (n, d)
        array of token vectors). Hybrid takes the text, and its dense side's query
        precomputed as ``dense_query`` (else the text's encoding). ``options`` go to the
        SQL function: ``oversample``, ``prefix``, ``rescore``, ``candidates``,
        ``ef_search``, ``iterative_scan``, ``probes``, and ``target_recall``: the cheapest
        setting :meth:`calibrate` measured whose recall@k against exact search meets it
        (explicit options win; without a calibration the
        defaults run, with a :class:`pgembed.calibration.CalibrationWarning`).
        ``strategy="bm25"`` searches the text lexically; ``strategy="hybrid"`` fuses BM25 of
        the text with the ``dense`` strategy of its encoding (``fusion``, ``rrf_k``,
        ``bm25_weight``, ``dense_weight``, ``alpha``, ``depth``, ``k1``, ``b``).
        """
        from pgembed import sqlfuncs

        try:
            plan, opts = strategies.check_search(self.spec, strategy, k, options)
        except UnknownKindError as exc:
            self._adopt_server_kinds(exc)
            plan, opts = strategies.check_search(self.spec, strategy, k, options)
        if plan.text:
            text = strategies.query_text(query)
            fn = getattr(sqlfuncs, plan.function)
            if plan.name == "hybrid":
                if dense_query is not None:
                    dense = dense_query
                elif plan.takes_tokens(opts):
                    dense = self.encoder.encode_tokens([text], "query", progress=False)[0]
                else:
                    dense = self.encoder.encode([text], "query", progress=False)[0]
                dense = strategies.check_query(self.spec, plan, dense, opts)
                stmt = sa.select(fn(self.spec.name, text, dense, k=int(k), **opts))
            else:
                stmt = sa.select(fn(self.spec.name, text, k=int(k), **opts))
            with _connect(self.engine) as conn, translate_sql_errors(self.spec.name):
                if plan.name == "hybrid" and "target_recall" in opts:
                    from pgembed import calibration

                    # its dense side reads the calibration: the same warnings as alone
                    calibration.check_target(conn, self.spec, opts.get("dense", "knn"), opts)
                return [(int(i), float(s)) for i, s in conn.execute(stmt).all()]
        if dense_query is not None:
            raise ConfigError(
                f"dense_query is hybrid's precomputed dense side; strategy {plan.name!r} takes "
                "its vector as the query itself"
            )
        encoder = self.encoder
        if isinstance(query, str) and "target_recall" in opts and not plan.tokens:
            encoder, opts = self._query_depth(plan.name, opts)
        if isinstance(query, str):
            if plan.tokens:
                q: Any = encoder.encode_tokens([query], "query", progress=False)[0]
            else:
                q = encoder.encode([query], "query", progress=False)[0]
        else:
            q = query
        q = strategies.check_query(self.spec, plan, q, opts)
        stmt = sa.select(getattr(sqlfuncs, plan.function)(self.spec.name, q, k=int(k), **opts))
        with _connect(self.engine) as conn, translate_sql_errors(self.spec.name):
            if "target_recall" in opts:
                from pgembed import calibration

                calibration.check_target(conn, self.spec, plan.name, opts)
            return [(int(i), float(s)) for i, s in conn.execute(stmt).all()]

    def _adopt_server_kinds(self, exc: UnknownKindError) -> None:
        """The table stores a kind this declaration lacks (a migration added it). Kinds the
        database computes itself (:data:`SERVER_KINDS`) are taken from the record; for any
        other, ``exc`` says what the record holds and how to declare it."""
        try:
            with _connect(self.engine) as conn:
                rec = catalog.get_collection(conn, self.spec.name)
        except PgembedError:
            raise exc from None
        if _adoptable(rec.spec, self.spec):
            self.spec = rec.spec
            return
        added = [k for k in rec.spec.all_kinds if not self.spec.has(k)]
        if not added:
            raise exc
        raise UnknownKindError(
            f"collection {self.spec.name!r} stores {added} (its record in pgembed.collections), "
            f"but this Collection was declared with kinds={list(self.spec.kinds)}; declare "
            f"it as recorded, or use Collection.open(engine, {self.spec.name!r})"
        ) from None

    def _query_depth(self, strategy: str, opts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The query encoder and options of a text search with target_recall: a shallower
        depth with its setting when calibration found one cheaper that meets the target
        (:mod:`pgembed.query_depth`), else the full depth and the options unchanged."""
        from pgembed import calibration, query_depth

        if strategy not in query_depth.STRATEGIES or not query_depth.shallow_depths(self.encoder):
            return self.encoder, opts
        fixed = {o: opts[o] for o in calibration.GRID_OPTIONS[strategy] if o in opts}
        with _connect(self.engine) as conn, translate_sql_errors(self.spec.name):
            got = query_depth.pick(conn, self.spec.name, strategy, opts["target_recall"], fixed)
        if got is None or got.layers >= self.encoder.layers:
            return self.encoder, opts
        chosen = {o: v for o, v in opts.items() if o != "target_recall"} | got.setting
        return query_depth.encoder_at(self.encoder, got.layers), chosen

    def calibrate(
        self,
        *,
        sample: int = 100,
        queries: Sequence[str] | np.ndarray[Any, Any] | None = None,
        k: int = 10,
        seed: int = 0,
        progress: bool | None = None,
        strategies: Sequence[str] | None = None,
    ) -> calibration.Calibration:
        """Measure recall@k against exact search and time per query of each strategy the
        collection stores, over a grid of settings, and record them in
        ``pgembed.calibrations`` (replacing the previous calibration of those strategies),
        so that searches can take ``target_recall``. Queries: ``sample`` stored rows drawn
        with ``seed``, or ``queries``: texts, or an (n, dim) array of query vectors (dense
        strategies). Real queries are better than stored rows, which HNSW finds too easily
        (see :func:`pgembed.calibration.calibrate`). Returns a
        :class:`pgembed.calibration.Calibration`."""
        from pgembed import calibration

        return calibration.calibrate(
            self, sample=sample, queries=queries, k=k, seed=seed, progress=progress,
            strategies_=strategies,
        )  # fmt: skip


class _Writer:
    """The write side of ``add``: a thread with its own connection, writing the batches
    put to it in order (one committed transaction each, at most ``WRITE_BYTES``) while the
    caller encodes the next. Its first error stops it and is raised in the caller's
    thread, at the next :meth:`put` or on leaving the ``with`` block."""

    def __init__(
        self,
        coll: Collection,
        mode: bulk.Mode,
        bar: Any,
        on_progress: bulk.ProgressCallback | None,
        total: int,
    ) -> None:
        self.coll = coll
        self.mode = mode
        self.bar = bar
        self.on_progress = on_progress
        self.total = total
        self.written = 0
        self._done = 0
        self._queue: queue.Queue[tuple[ingest.Rows, np.ndarray[Any, Any]] | None] = queue.Queue(2)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._load: bulk.Load | None = None
        self._thread = threading.Thread(target=self._run, name="pgembed writer", daemon=True)

    def __enter__(self) -> _Writer:
        if self.mode == "bulk":
            self._load = bulk.Load(self.coll.engine, self.coll.spec, self.coll._check_recorded)
            self._load.start()
        self._thread.start()
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is not None:
            self._stop.set()  # the batches already put are dropped: a re-run writes them
        self._put(None)
        self._thread.join()
        if self._load is not None:
            self._load.end()
        if kind is None and self._error is not None:
            raise self._error

    def skipped(self, n: int) -> None:
        """Count ``n`` texts already embedded (nothing to write) on the bar."""
        if n:
            with self._lock:
                self.bar.update(n)
                self._done += n

    def put(self, rows: ingest.Rows, present: np.ndarray[Any, Any]) -> None:
        """Queue a batch (``present``: which of its ids the table holds already)."""
        if self._error is not None:
            raise self._error
        self._put((rows, present))
        if self._error is not None:
            raise self._error

    def _put(self, item: tuple[ingest.Rows, np.ndarray[Any, Any]] | None) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            with _connect(self.coll.engine) as conn:
                while True:
                    item = self._queue.get()
                    if item is None or self._stop.is_set():
                        return
                    rows, present = item
                    for part in ingest.split_by_bytes(self.coll.spec, rows, WRITE_BYTES):
                        mask = np.isin(part.ids, rows.ids[present])
                        self._write(conn, part, mask)
                        self._report(len(part))
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def _write(self, conn: Connection, rows: ingest.Rows, present: np.ndarray[Any, Any]) -> None:
        coll, spec = self.coll, self.coll.spec
        if self._load is None:
            with _write_errors(spec), conn.begin():
                coll._check_recorded(conn)
                ingest.write(conn, spec, rows)
            return
        import psycopg

        self._load.drop_indexes()
        order = np.argsort(rows.ids, kind="stable")  # one order: concurrent loads wait
        rows, present = ingest.take(rows, order), present[order]
        with _write_errors(spec):
            try:
                with conn.begin():
                    coll._check_recorded(conn)
                    ingest.copy_new(conn, spec, ingest.take(rows, np.flatnonzero(~present)))
                    ingest.write(conn, spec, ingest.take(rows, np.flatnonzero(present)))
                return
            except (psycopg.errors.UniqueViolation, sa.exc.IntegrityError) as exc:
                if not isinstance(getattr(exc, "orig", exc), psycopg.errors.UniqueViolation):
                    raise
            # another writer inserted some of these ids since they were looked up: upsert
            with conn.begin():
                coll._check_recorded(conn)
                ingest.write(conn, spec, rows)

    def _report(self, n: int) -> None:
        with self._lock:
            self.written += n
            self._done += n
            self.bar.update(n)
            done = self._done
        if self.on_progress is not None:
            self.on_progress(bulk.Progress("write", self.coll.spec.name, done, self.total))


def _check_batch_size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(
            f"batch_size must be a positive integer, got {value!r}; use e.g. {DEFAULT_BATCH}"
        )
    return value


def declaration_differences(
    recorded: sch.CollectionSpec, declared: sch.CollectionSpec
) -> list[str]:
    """What a declaration lacks or changes against the record, in words (kinds by name,
    then each kind's settings that differ), empty when they agree."""
    rec, dec = recorded.to_catalog(), declared.to_catalog()
    out = []
    rk, dk = rec.pop("kinds"), dec.pop("kinds")
    if set(rk) - set(dk):
        out.append(f"the table stores {sorted(set(rk) - set(dk))}, which this declaration lacks")
    if set(dk) - set(rk):
        out.append(f"this declaration adds {sorted(set(dk) - set(rk))}, which the table lacks")
    for kind in sorted(set(rk) & set(dk)):
        keys = sorted(set(rk[kind]) | set(dk[kind]))
        out += [
            f"{kind} {key}: recorded {rk[kind].get(key)!r}, declared {dk[kind].get(key)!r}"
            for key in keys
            if rk[kind].get(key) != dk[kind].get(key)
        ]
    out += [f"{k}: recorded {rec[k]!r}, declared {dec[k]!r}" for k in rec if rec[k] != dec[k]]
    return out


SERVER_KINDS = frozenset({"lexical"})
"""Kinds the database computes from the stored text itself (a generated column and
triggers): a declaration that lacks one writes the same rows."""


def _adoptable(recorded: sch.CollectionSpec, declared: sch.CollectionSpec) -> bool:
    """Whether the record is the declaration plus kinds of :data:`SERVER_KINDS` only."""
    extra = set(recorded.all_kinds) - set(declared.all_kinds)
    if not extra or not extra <= SERVER_KINDS:
        return False
    rec = recorded.to_catalog()
    rec["kinds"] = {k: v for k, v in rec["kinds"].items() if k not in extra}
    return rec == declared.to_catalog()


def _check_same_declaration(recorded: sch.CollectionSpec, declared: sch.CollectionSpec) -> None:
    differ = declaration_differences(recorded, declared)
    if differ:
        raise CollectionError(
            f"collection {declared.name!r} is recorded with another declaration than this "
            f"Collection's ({'; '.join(differ)}), so writing would leave rows partial or "
            f"land in another table. Declare it as recorded (a migration such as "
            f"op.add_lexical changes the record), or write through Collection.open(engine, "
            f"{declared.name!r}), which uses the recorded declaration"
        )


def encoder_record(enc: Encoder) -> catalog.EncoderRecord:
    # A shallower (elastic-depth) graph is another vector space: its own fingerprint.
    return replace(catalog.EncoderRecord.of(enc.manifest), fingerprint=enc.fingerprint)


def _no_bar(progress: bool | None, n: int) -> bool:
    return not progress if progress is not None else n < 2 * DEFAULT_BATCH


@contextlib.contextmanager
def _write_errors(spec: sch.CollectionSpec) -> Iterator[None]:
    """Database failures during a batch: lost connection -> resumable, others -> IngestError.

    Wraps the whole transaction, so a rollback that fails on a dead connection is reported
    the same way.
    """
    import psycopg

    try:
        yield
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        orig = getattr(exc, "orig", None) or exc
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        if getattr(orig, "sqlstate", None) in ("40P01", "40001"):  # deadlock, serialization
            raise IngestError(
                f"writing to {spec.name!r} lost a deadlock or serialization conflict with a "
                "concurrent write; the batch was rolled back — re-run, it resumes where it "
                "stopped"
            ) from None
        if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError) or isinstance(
            exc, sa.exc.OperationalError | sa.exc.InterfaceError
        ):
            raise DatabaseUnavailableError(
                f"the database went away while writing to {spec.name!r}: {first}; the batch "
                "was rolled back — re-run the same ingest once the server is back, it resumes "
                "where it stopped"
            ) from None
        if getattr(orig, "sqlstate", None) == "42501":
            raise PermissionDeniedError(first, spec.name) from None
        raise IngestError(f"writing to {spec.name!r} failed: {first}") from None


@contextlib.contextmanager
def _connect(engine: Engine) -> Iterator[Connection]:
    """engine.connect() with connection failures turned into DatabaseUnavailableError."""

    with translate_errors(str(engine.url)):
        conn = engine.connect()
    with conn, naming_role(conn):  # a missing privilege: name the role and the fix
        yield conn
