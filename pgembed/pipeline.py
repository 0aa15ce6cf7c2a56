"""Collection: encode → store → search. The one place where encoders meet storage."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from pgembed import strategies
from pgembed.db import translate_errors, translate_sql_errors
from pgembed.errors import (
    BlankTextWarning,
    CollectionError,
    DatabaseUnavailableError,
    EmptyInputError,
    FingerprintMismatchError,
    IngestError,
    InputError,
    UnknownKindError,
)
from pgembed.storage import catalog, declare, ingest, ownership
from pgembed.storage import schema as sch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from pgembed.encoders import Encoder
    from pgembed.vectors.fde import FDEConfig, FDEEncoder

STRATEGIES = strategies.NAMES  # re-exported; pgembed.strategies owns them
STRATEGY_KIND = strategies.KIND
DEFAULT_BATCH = 256


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
    repeating its declaration, use ``Collection.open(engine, name)``.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        encoder: Encoder,
        *,
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
    ) -> None:
        self.engine = engine
        self.encoder = encoder
        self._fde_config_id: int | None = None
        self.spec, self._fde = declare.spec_for(
            name, encoder_record(encoder), kinds, fde, matryoshka_dims,
            binary_bits=binary_bits, table=table, schema=schema, text_column=text_column,
            precision=precision, distance=distance, index=index or sch.IndexParams(),
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
        self = cls.__new__(cls)
        self.engine = engine
        self.encoder = encoder
        self._fde = fde
        self._fde_config_id = rec.fde_config
        self.spec = rec.spec
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
        return self

    def reindex(self) -> list[str]:
        """Rebuild the IVFFlat index, if any, and return the names of the rebuilt indexes.

        IVFFlat clusters its lists from the rows present when it is built, so build it
        again after a bulk load (HNSW indexes need no rebuild; they are left alone).
        """
        if self.spec.index.binary != "ivfflat" or not self.spec.has("binary"):
            return []
        with _connect(self.engine) as conn, conn.begin():
            names = ownership.ivfflat_indexes(conn, self.spec)
            quote = conn.dialect.identifier_preparer.quote
            for name in names:
                # REINDEX builds the index anew: IVFFlat clusters its lists from the rows.
                conn.execute(sa.text(f"REINDEX INDEX {quote(self.spec.schema)}.{quote(name)}"))
        return names

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
        from pgembed.vectors import binary

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
        rows = ingest.Rows(ids=ids, texts=texts, embedding=pooled, tokens=tokens)
        if spec.has("binary") and spec.binary_bits > 1:
            rows.embedding_bits = binary.pack_residual(pooled, spec.binary_bits)
        if spec.has("fde"):
            assert tokens is not None
            rows.fde = self.fde.encode_document(tokens)
        return rows

    def add(
        self,
        texts: Iterable[str],
        ids: Iterable[int] | None = None,
        *,
        batch_size: int = DEFAULT_BATCH,
        progress: bool | None = None,
    ) -> int:
        """Encode and upsert texts by id, one transaction per batch; returns rows written.

        Re-running after an interruption is safe: ids already embedded from the same text
        are skipped, the rest are (re)written, so no row is lost or duplicated. Writes
        follow the catalog: a declaration other than the recorded one is refused with a
        CollectionError before anything is written (see the class docstring).
        """
        from tqdm.auto import tqdm

        from pgembed.encoders.tokenize import check_texts

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
        written = 0
        bar = tqdm(total=len(text_list), desc=f"ingest {self.spec.name}", unit="text",
                   disable=_no_bar(progress, len(text_list)))  # fmt: skip
        with bar:
            for start in range(0, len(text_list), batch_size):
                batch_ids = id_arr[start : start + batch_size]
                batch_texts = text_list[start : start + batch_size]
                written += self._write_batch(batch_ids, batch_texts)
                bar.update(len(batch_ids))
        return written

    def _write_batch(self, ids: np.ndarray[Any, Any], texts: list[str]) -> int:
        with _write_errors(self.spec), _connect(self.engine) as conn, conn.begin():
            self._check_recorded(conn)
            done = ingest.already_embedded(conn, self.spec, ids, texts)
            if done.all():
                return 0
            keep = np.flatnonzero(~done)
            rows = self._rows_by_id([texts[i] for i in keep], ids[keep])
            return ingest.write(conn, self.spec, rows)

    def sync(self, *, batch_size: int = DEFAULT_BATCH, progress: bool | None = None) -> int:
        """Embed rows whose text is new or changed; safe to run in several workers at once.

        Rows whose text was set to NULL lose their vectors (they are no longer found).
        Rows whose text is empty or only whitespace get no vectors, are not claimed again
        until their text changes, and are named in a warning. Returns the rows embedded.
        """
        from tqdm.auto import tqdm

        if self.spec.text_column is None:
            raise CollectionError(f"collection {self.spec.name!r} has no text column to sync")
        batch_size = _check_batch_size(batch_size)
        total, blank, first = 0, [], True
        with tqdm(desc=f"sync {self.spec.name}", unit="row", disable=progress is False) as bar:
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
        **options: Any,
    ) -> list[tuple[int, float]]:
        """Top-k ``(id, score)``, best first, through the SQL function of the strategy.

        ``query`` is a text (encoded as a query) or a vector (for multivector: an (n, d)
        array of token vectors). ``options`` go to the SQL function: ``oversample``,
        ``prefix``, ``rescore``, ``candidates``, ``ef_search``, ``iterative_scan``, ``probes``.
        """
        from pgembed import sqlfuncs

        plan, opts = strategies.check_search(self.spec, strategy, k, options)
        if isinstance(query, str):
            if plan.tokens:
                q: Any = self.encoder.encode_tokens([query], "query", progress=False)[0]
            else:
                q = self.encoder.encode([query], "query", progress=False)[0]
        else:
            q = query
        q = strategies.check_query(self.spec, plan, q, opts)
        stmt = sa.select(getattr(sqlfuncs, plan.function)(self.spec.name, q, k=int(k), **opts))
        with _connect(self.engine) as conn, translate_sql_errors(self.spec.name):
            return [(int(i), float(s)) for i, s in conn.execute(stmt).all()]


def _check_batch_size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(
            f"batch_size must be a positive integer, got {value!r}; use e.g. {DEFAULT_BATCH}"
        )
    return value


def _check_same_declaration(recorded: sch.CollectionSpec, declared: sch.CollectionSpec) -> None:
    rec, dec = recorded.to_catalog(), declared.to_catalog()
    differ = [f"{k}: recorded {rec[k]!r}, declared {dec[k]!r}" for k in rec if rec[k] != dec[k]]
    if differ:
        raise CollectionError(
            f"collection {declared.name!r} is recorded with another declaration than this "
            f"Collection's ({'; '.join(differ)}), so writing would leave rows partial or "
            f"land in another table. Write through Collection.open(engine, "
            f"{declared.name!r}), which uses the recorded declaration, or drop the "
            "collection and create() it anew"
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
        raise IngestError(f"writing to {spec.name!r} failed: {first}") from None


@contextlib.contextmanager
def _connect(engine: Engine) -> Iterator[Connection]:
    """engine.connect() with connection failures turned into DatabaseUnavailableError."""

    with translate_errors(str(engine.url)):
        conn = engine.connect()
    with conn:
        yield conn
