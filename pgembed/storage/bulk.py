"""Bulk loads: the collection's indexes deferred, binary COPY straight into its table, then
every index built anew, one ``CREATE INDEX`` each, sized to the server.

Inserting a row into an HNSW graph costs about as much as building the graph for seven
rows at once (pgvector on 2 cores: about 450 inserts/s against 3,250 rows/s for a build),
so a load that adds many rows goes faster without its indexes. ``Collection.add`` chooses
(:func:`choose`): **bulk** into an empty collection, or when the new rows are at least
:data:`BULK_SHARE` of the rows present (and at least :data:`BULK_MIN_ROWS`), or when an
earlier bulk load left indexes missing; **incremental** (upserts into the indexed table,
:func:`pgembed.storage.ingest.write`) otherwise.

A bulk load, in order:

1. takes the collection's *load* lock (a shared advisory lock, held by its own session, so
   several loaders may run at once and a killed one releases it);
2. drops the collection's indexes when its first batch is written (one short transaction:
   concurrent searches wait for it, as they do for any ``DROP INDEX``);
3. COPYs each batch straight into the table, one committed transaction per batch, so an
   interrupted load keeps every batch it wrote;
4. releases the load lock and, if no other loader still holds it, builds every missing
   or invalid index (:func:`finish`) under the *build* lock (an exclusive advisory lock,
   session-level on the building connection, so a build a killed client left running on
   the server is waited for rather than duplicated).

What concurrent searches see: while the indexes are missing, pgembed's search functions
answer from a sequential scan (exact results, slower); while an index is being built
(``CREATE INDEX`` holds a SHARE lock: reads go on, writes wait), the same. They never
error over a missing index. Concurrent incremental writers are not blocked by the COPY
phase, and wait while an index is being built.

Resuming: ``add``/``ingest`` of the same input skips ids already embedded from the same
text and writes the rest; ``Collection.add``, ``Collection.create()``,
``Collection.finish_bulk()`` and ``Collection.reindex()`` build any index a bulk load left
missing. Indexes are built with ``maintenance_work_mem`` and
``max_parallel_maintenance_workers`` read from the server (:func:`build_settings`), and
report progress from ``pg_stat_progress_create_index``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

from pgembed.errors import ConfigError
from pgembed.storage import ownership
from pgembed.storage import schema as sch
from pgembed.storage.indexes import built
from pgembed.storage.names import qualified, run_ddl

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

Mode = Literal["auto", "bulk", "incremental"]
MODES: tuple[str, ...] = ("auto", "bulk", "incremental")

BULK_MIN_ROWS = 1000
"""``mode="auto"`` never goes bulk for fewer new rows than this (unless indexes are missing):
rebuilding a small collection's indexes costs more than inserting a few rows."""
BULK_SHARE = 0.2
"""``mode="auto"`` goes bulk when the new rows are at least this share of the rows present:
rebuilding N+n rows at about 3,250 rows/s beats n HNSW inserts at about 450 rows/s once n
exceeds about N/6 (measured on 2 cores)."""

_LOAD = sa.text("SELECT pg_advisory_lock_shared(hashtext('pgembed.bulk_load'), hashtext(:k))")
_UNLOAD = sa.text("SELECT pg_advisory_unlock_shared(hashtext('pgembed.bulk_load'), hashtext(:k))")
_NO_LOADER = sa.text("SELECT pg_try_advisory_lock(hashtext('pgembed.bulk_load'), hashtext(:k))")
_NO_LOADER_END = sa.text("SELECT pg_advisory_unlock(hashtext('pgembed.bulk_load'), hashtext(:k))")
_BUILD = sa.text("SELECT pg_advisory_lock(hashtext('pgembed.index_build'), hashtext(:k))")
_BUILD_END = sa.text("SELECT pg_advisory_unlock(hashtext('pgembed.index_build'), hashtext(:k))")
_BUILD_XACT = sa.text("SELECT pg_advisory_xact_lock(hashtext('pgembed.index_build'), hashtext(:k))")
_PROGRESS = sa.text(
    "SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total "
    "FROM pg_catalog.pg_stat_progress_create_index WHERE pid = :pid"
)


@dataclass(frozen=True)
class Progress:
    """One progress report of an ingest: a batch written, or an index build's state."""

    stage: Literal["write", "index"]
    name: str
    """The collection (``write``) or the index (``index``)."""
    done: int
    """Rows written so far (``write``); tuples or blocks done (``index``)."""
    total: int | None
    """Rows of the call (``write``); tuples or blocks to do, when PostgreSQL knows."""
    phase: str = ""
    """``index``: ``start``, PostgreSQL's phase (``building index: loading tuples``...),
    then ``done``."""


ProgressCallback = Callable[[Progress], None]


def check_mode(mode: object) -> Mode:
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use one of {', '.join(map(repr, MODES))}")
    return mode  # type: ignore[return-value]


def choose(mode: Mode, new_rows: int, rows_present: int, indexes_missing: bool) -> Mode:
    """The mode ``auto`` stands for (see the module docstring); others are kept."""
    if mode != "auto":
        return mode
    if indexes_missing:
        return "bulk"
    if new_rows >= BULK_MIN_ROWS and new_rows >= BULK_SHARE * rows_present:
        return "bulk"
    return "incremental"


def _key(spec: sch.CollectionSpec) -> dict[str, str]:
    return {"k": f"{spec.schema}.{spec.table_name}"}


# --- which indexes ----------------------------------------------------------------------


def indexes(spec: sch.CollectionSpec) -> list[sa.Index]:
    """The collection's indexes, as :func:`pgembed.storage.schema.table` declares them."""
    return sorted(sch.table(spec, sa.MetaData()).indexes, key=lambda i: str(i.name))


def _legacy_name(spec: sch.CollectionSpec, name: str) -> str:
    """The name an index had before long names were hashed: table name + suffix, cut by
    PostgreSQL at 63 bytes."""
    suffix = name[len(sch.index_base(spec.table_name)) :]
    raw = (spec.table_name + suffix).encode("utf-8")[: sch.MAX_IDENTIFIER_BYTES]
    return raw.decode("utf-8", errors="ignore")


def _present(conn: Connection, spec: sch.CollectionSpec) -> dict[str, bool]:
    """Index name -> indisvalid, for the indexes of the table (the primary key aside)."""
    return {b.name: b.valid for b in built(conn, spec) if not b.primary}


def missing(conn: Connection, spec: sch.CollectionSpec) -> list[tuple[sa.Index, list[str]]]:
    """Indexes of the collection that are absent or invalid, each with the names of its
    invalid leftovers (to drop before building). Empty when the table does not exist."""
    if ownership.table_oid(conn, spec) is None:
        return []
    present = _present(conn, spec)
    out: list[tuple[sa.Index, list[str]]] = []
    for idx in indexes(spec):
        names = dict.fromkeys((str(idx.name), _legacy_name(spec, str(idx.name))))
        if any(present.get(n) for n in names):
            continue
        out.append((idx, [n for n in names if n in present]))
    return out


def _drop(conn: Connection, spec: sch.CollectionSpec, names: list[str]) -> None:
    for name in names:
        run_ddl(conn, f"DROP INDEX IF EXISTS {qualified(spec.schema, name)}")


# --- the load -----------------------------------------------------------------------------


class Load:
    """A bulk load in progress: the load lock, and the indexes dropped on first use.

    ``check`` runs in the transaction that drops the indexes (``Collection`` passes its
    catalog and ownership checks).
    """

    def __init__(
        self, engine: Engine, spec: sch.CollectionSpec, check: Callable[[Connection], None]
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.check = check
        self._lock: Connection | None = None
        self.dropped = False

    def start(self) -> None:
        """Take the load lock: shared, so it waits for no other loader."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(_LOAD, _key(self.spec))
        except BaseException:
            conn.close()
            raise
        self._lock = conn

    def drop_indexes(self) -> None:
        """Drop the collection's indexes (once), waiting for a build in progress."""
        if self.dropped:
            return
        with self.engine.connect() as conn, conn.begin():
            conn.execute(_BUILD_XACT, _key(self.spec))
            self.check(conn)
            names = [str(i.name) for i in indexes(self.spec)]
            present = _present(conn, self.spec)
            legacy = [_legacy_name(self.spec, n) for n in names]
            _drop(conn, self.spec, [n for n in dict.fromkeys(names + legacy) if n in present])
        self.dropped = True

    def end(self) -> None:
        """Release the load lock (idempotent; a dead connection has released it already)."""
        conn, self._lock = self._lock, None
        if conn is None:
            return
        try:
            conn.execute(_UNLOAD, _key(self.spec))
        except sa.exc.DBAPIError:
            conn.invalidate()
        finally:
            conn.close()


# --- the build ----------------------------------------------------------------------------


def build_settings(
    conn: Connection, maintenance_work_mem: str | None = None, workers: int | None = None
) -> dict[str, str]:
    """Session settings for index builds, from the server's own.

    ``maintenance_work_mem``: the server's (pgembed's embedded server sizes it to the
    machine) unless given. ``max_parallel_maintenance_workers``: the server's unless given,
    never more than ``max_parallel_workers`` or ``max_worker_processes`` allow.
    """
    names = ["max_parallel_maintenance_workers", "max_parallel_workers", "max_worker_processes"]
    got: dict[str, str] = dict(
        conn.execute(
            sa.text("SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(:n)"),
            {"n": names},
        ).all()
    )
    limit = min(int(got["max_parallel_workers"]), int(got["max_worker_processes"]))
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)):
        raise ConfigError(f"workers must be an integer, got {workers!r}")
    want = int(got["max_parallel_maintenance_workers"]) if workers is None else workers
    mem = maintenance_work_mem
    if mem is None:
        mem = str(conn.execute(sa.text("SELECT current_setting('maintenance_work_mem')")).scalar())
    return {
        "maintenance_work_mem": mem,
        "max_parallel_maintenance_workers": str(max(0, min(want, limit))),
    }


def loaders_active(conn: Connection, spec: sch.CollectionSpec) -> bool:
    """Whether some session holds the collection's load lock."""
    if conn.execute(_NO_LOADER, _key(spec)).scalar():
        conn.execute(_NO_LOADER_END, _key(spec))
        return False
    return True


def finish(
    engine: Engine,
    spec: sch.CollectionSpec,
    *,
    check: Callable[[Connection], None],
    show: bool = False,
    on_progress: ProgressCallback | None = None,
    maintenance_work_mem: str | None = None,
    workers: int | None = None,
    poll: float = 0.2,
) -> list[str]:
    """Build every missing or invalid index of the collection; returns their names.

    Does nothing while a bulk load of the collection runs (the last loader to finish
    builds). Waits for another build (its own session's lock). Each index is one
    ``CREATE INDEX`` in its own transaction, so an interrupted build keeps the ones done.
    """
    with _session(engine) as conn:
        if not missing(conn, spec) or loaders_active(conn, spec):
            return []
        conn.execute(_BUILD, _key(spec))
        try:
            check(conn)
            todo = missing(conn, spec)  # again: another build may have made them
            if not todo:
                return []
            settings = build_settings(conn, maintenance_work_mem, workers)
            try:
                for name, value in settings.items():
                    conn.execute(
                        sa.text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value}
                    )
            except sa.exc.DataError as exc:
                raise ConfigError(
                    f"index build settings {settings} were refused by the server: "
                    f"{str(exc.orig).strip().splitlines()[0]}; give a size such as '1GB'"
                ) from None
            # fresh statistics: the builds report progress against reltuples, and searches
            # after a bulk load plan with them
            run_ddl(conn, f"ANALYZE {qualified(spec.schema, spec.table_name)}")
            built = []
            for idx, leftovers in todo:
                _drop(conn, spec, leftovers)
                _build(engine, conn, idx, show=show, on_progress=on_progress, poll=poll)
                built.append(str(idx.name))
            conn.exec_driver_sql("RESET maintenance_work_mem")
            conn.exec_driver_sql("RESET max_parallel_maintenance_workers")
            return built
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.execute(_BUILD_END, _key(spec))


@contextmanager
def _session(engine: Engine) -> Iterator[Connection]:
    from pgembed.db import translate_errors

    with translate_errors(str(engine.url)):
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield conn
    except BaseException:
        conn.invalidate()  # session settings and locks go with it
        raise
    finally:
        conn.close()


def _build(
    engine: Engine,
    conn: Connection,
    idx: sa.Index,
    *,
    show: bool,
    on_progress: ProgressCallback | None,
    poll: float,
) -> None:
    """One CREATE INDEX on ``conn`` in a thread, its progress polled from another session."""
    from tqdm.auto import tqdm

    name = str(idx.name)
    pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    failed: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute(sa.schema.CreateIndex(idx, if_not_exists=True))
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    report = on_progress or (lambda p: None)
    worker = threading.Thread(target=run, name=f"pgembed build {name}", daemon=True)
    with (
        tqdm(desc=f"index {name}", unit="tuple", disable=not show, leave=show) as bar,
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as mon,
    ):
        worker.start()
        report(Progress("index", name, 0, None, "start"))
        last: tuple[str, int, int | None] = ("start", 0, None)
        try:
            while worker.is_alive():
                worker.join(poll)
                row = mon.execute(_PROGRESS, {"pid": pid}).first()
                if row is None:
                    continue
                phase, t_done, t_total, b_done, b_total = row
                done, total, unit = (
                    (int(t_done), int(t_total), "tuple")
                    if t_total
                    else (int(b_done or 0), int(b_total) if b_total else None, "block")
                )
                bar.unit, bar.total = unit, total
                bar.n = done
                bar.set_postfix_str(str(phase), refresh=True)
                if (phase, done, total) != last:
                    last = (str(phase), done, total)
                    report(Progress("index", name, done, total, str(phase)))
        except BaseException:
            raw = conn.connection.driver_connection
            if raw is not None:
                raw.cancel()  # do not leave the build running on the server
            worker.join()
            raise
        if failed:
            raise failed[0]
        if bar.total:
            bar.n = bar.total
            bar.refresh()
        report(Progress("index", name, last[1] if last[2] is None else last[2], last[2], "done"))
