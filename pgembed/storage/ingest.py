"""Writing rows into a collection: binary COPY into a staging table, then an upsert by id
(:func:`write`), or for bulk loads binary COPY straight into the table (:func:`copy_new`).

Each call is one transaction of the caller's, so a batch lands whole or not at all, and
re-running an interrupted ingest gives exactly the rows: ids already embedded from the same
text are skipped (:func:`stored`, :func:`already_embedded`), the rest are written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from pgembed.db import raw_connection
from pgembed.errors import DimensionError, EmptyInputError, InputError, NonFiniteError
from pgembed.storage import _pgcopy

if TYPE_CHECKING:
    from psycopg import Connection as PgConnection
    from sqlalchemy.engine import Connection

    from pgembed.storage.schema import CollectionSpec

_STAGE = "pgembed_stage"


@dataclass
class Rows:
    """Column-wise rows for one batch; a kind's array is None when the collection lacks it."""

    ids: np.ndarray[Any, np.dtype[np.int64]]
    texts: Sequence[str] | None = None
    embedding: np.ndarray[Any, np.dtype[np.float32]] | None = None
    embedding_bits: np.ndarray[Any, np.dtype[np.uint8]] | None = None
    """Packed b-bit codes, (n, ceil(b*d/8)), big-endian bit order."""
    fde: np.ndarray[Any, np.dtype[np.float32]] | None = None
    tokens: Sequence[np.ndarray[Any, np.dtype[np.float32]]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def check_ids(ids: Sequence[Any] | np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InputError(f"ids must be a flat sequence of integers, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"ids must be integers (the id column is bigint), got {arr.dtype}")
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise InputError(f"ids must fit in bigint ({lo}..{hi}); got {int(arr.max())}")
    arr = arr.astype(np.int64)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"duplicate ids in one call: {uniq[counts > 1][:5].tolist()}")
    return arr


def _check_matrix(name: str, x: np.ndarray[Any, Any], n: int, dim: int) -> None:
    if x.ndim != 2 or x.shape != (n, dim):
        raise DimensionError(f"{name} has shape {x.shape}; the collection expects ({n}, {dim})")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))[:5].tolist()
        raise NonFiniteError(f"{name} holds NaN or infinity in rows {bad}")


def validate(spec: CollectionSpec, rows: Rows) -> None:
    """Every kind of the collection present, with the right shapes, finite."""
    n = len(rows.ids)
    if spec.text_column is not None and rows.texts is not None and len(rows.texts) != n:
        raise InputError(f"{len(rows.texts)} texts for {n} ids")
    columns = spec.vector_columns()
    for name in columns:
        if getattr(rows, name) is None:
            raise InputError(f"collection {spec.name!r} stores {name}, but the batch lacks it")
    if rows.embedding is not None and "embedding" in columns:
        _check_matrix("embedding", rows.embedding, n, spec.dim)
    if rows.fde is not None and "fde" in columns:
        assert spec.fde_dim is not None
        _check_matrix("fde", rows.fde, n, spec.fde_dim)
    if rows.embedding_bits is not None and "embedding_bits" in columns:
        width = (spec.binary_bits * spec.dim + 7) // 8
        if rows.embedding_bits.shape != (n, width):
            raise DimensionError(
                f"embedding_bits has shape {rows.embedding_bits.shape}; expected ({n}, {width})"
            )
    if rows.tokens is not None and "tokens" in columns:
        if len(rows.tokens) != n:
            raise InputError(f"{len(rows.tokens)} token sets for {n} ids")
        for i, t in enumerate(rows.tokens):
            if t.ndim != 2 or t.shape[0] == 0:
                raise EmptyInputError(f"row {i} (id {rows.ids[i]}) has an empty token set")
            _check_matrix(f"tokens of row {i}", t, t.shape[0], spec.dim)


def _elem_oid(raw: PgConnection[Any]) -> int:
    row = raw.execute(
        "SELECT t.oid FROM pg_type t JOIN pg_extension e ON e.extnamespace = t.typnamespace "
        "WHERE e.extname = 'vector' AND t.typname = 'halfvec'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _fields(
    raw: PgConnection[Any], spec: CollectionSpec, rows: Rows, *, with_hash: bool = False
) -> tuple[list[str], list[list[bytes]]]:
    """The COPY columns of ``spec`` and their binary fields; ``with_hash`` adds
    ``embedded_hash`` computed here (md5 of the UTF-8 text, as the server's md5 gives)."""
    cols: list[str] = [spec.id_column]
    fields: list[list[bytes]] = [_pgcopy.bigint_fields(rows.ids)]
    if spec.text_column is not None and rows.texts is not None:
        cols.append(spec.text_column)
        fields.append(_pgcopy.text_fields(rows.texts))
        if with_hash:
            cols.append("embedded_hash")
            fields.append(_pgcopy.md5_fields(rows.texts))
    half = spec.precision == "halfvec"
    columns = spec.vector_columns()
    if "embedding" in columns:
        assert rows.embedding is not None
        cols.append("embedding")
        fields.append(_pgcopy.vector_fields(rows.embedding, half=half))
    if "embedding_bits" in columns:
        assert rows.embedding_bits is not None
        cols.append("embedding_bits")
        fields.append(_pgcopy.bit_fields(rows.embedding_bits, spec.binary_bits * spec.dim))
    if "fde" in columns:
        assert rows.fde is not None
        cols.append("fde")
        fields.append(_pgcopy.vector_fields(rows.fde, half=True))
    if "tokens" in columns:
        assert rows.tokens is not None
        cols.append("tokens")
        fields.append(_pgcopy.vector_array_fields(rows.tokens, _elem_oid(raw), half=True))
    return cols, fields


def _stage_name(spec: CollectionSpec) -> str:
    """The session's staging table for ``spec``: one per table layout, so a collection
    re-declared with other columns in the same session gets a staging table of its own."""
    layout = json.dumps([spec.to_catalog(), spec.precision, spec.binary_bits], sort_keys=True)
    return f"{_STAGE}_{hashlib.sha256(layout.encode()).hexdigest()[:16]}"


def _stage(raw: PgConnection[Any], spec: CollectionSpec) -> sql.Identifier:
    """The session-lifetime staging table (``ON COMMIT DELETE ROWS``), created on a
    connection's first write and reused by every later batch: no DDL per batch."""
    name = _stage_name(spec)
    found = raw.execute("SELECT to_regclass(%s)", [f"pg_temp.{name}"]).fetchone()
    stage = sql.Identifier(name)
    if found is None or found[0] is None:
        raw.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                stage, sql.Identifier(spec.schema, spec.table_name)
            )
        )
    else:
        # earlier writes of this transaction (rows stay until it commits)
        raw.execute(sql.SQL("DELETE FROM pg_temp.{}").format(stage))
    return stage


def write(conn: Connection, spec: CollectionSpec, rows: Rows) -> int:
    """Upsert the rows (binary COPY + INSERT ... ON CONFLICT); returns the row count.

    The COPY goes into a temporary staging table that lives as long as the connection
    (``ON COMMIT DELETE ROWS``): created on the connection's first write, reused after, so
    a batch runs no DDL. Writes exactly the vector columns of ``spec``'s kinds; arrays of
    other kinds in ``rows`` are ignored (the table has no column for them).
    """
    validate(spec, rows)
    if len(rows) == 0:
        return 0
    raw = raw_connection(conn)
    target = sql.Identifier(spec.schema, spec.table_name)
    cols, fields = _fields(raw, spec, rows)
    stage = _stage(raw, spec)
    idents = sql.SQL(", ").join(map(sql.Identifier, cols))
    with raw.cursor().copy(
        sql.SQL("COPY pg_temp.{} ({}) FROM STDIN (FORMAT binary)").format(stage, idents)
    ) as copy:
        copy.write(_pgcopy.rows(fields))

    insert_cols = list(cols)
    select_exprs: list[sql.Composable] = [sql.Identifier(c) for c in cols]
    if spec.text_column is not None and rows.texts is not None:
        insert_cols.append("embedded_hash")
        select_exprs.append(sql.SQL("md5({})").format(sql.Identifier(spec.text_column)))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in insert_cols[1:]
    )
    raw.execute(
        sql.SQL(
            # id order: concurrent upserts of the same ids take row locks in one global
            # order, so they wait for each other instead of deadlocking.
            "INSERT INTO {target} ({cols}) SELECT {exprs} FROM pg_temp.{stage} ORDER BY {id} "
            "ON CONFLICT ({id}) DO UPDATE SET {updates}"
        ).format(
            target=target,
            cols=sql.SQL(", ").join(map(sql.Identifier, insert_cols)),
            exprs=sql.SQL(", ").join(select_exprs),
            stage=stage,
            id=sql.Identifier(spec.id_column),
            updates=updates,
        )
    )
    return len(rows)


def copy_new(conn: Connection, spec: CollectionSpec, rows: Rows) -> int:
    """Binary COPY straight into the collection's table: rows whose ids are not there yet.

    The bulk path (:mod:`pgembed.storage.bulk`): no staging table, no upsert. An id that
    is already there fails the COPY with a unique violation (the caller's transaction is
    then lost; :func:`write` upserts instead). ``embedded_hash`` is computed here, so a
    database whose encoding is not UTF8 goes through :func:`write`.
    """
    validate(spec, rows)
    if len(rows) == 0:
        return 0
    raw = raw_connection(conn)
    if spec.text_column is not None and raw.info.parameter_status("server_encoding") != "UTF8":
        return write(conn, spec, rows)
    cols, fields = _fields(raw, spec, rows, with_hash=True)
    with raw.cursor().copy(
        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            sql.Identifier(spec.schema, spec.table_name),
            sql.SQL(", ").join(map(sql.Identifier, cols)),
        )
    ) as copy:
        copy.write(_pgcopy.rows(fields))
    return len(rows)


def stored(
    conn: Connection, spec: CollectionSpec, ids: np.ndarray[Any, Any], texts: Sequence[str] | None
) -> tuple[np.ndarray[Any, np.dtype[np.bool_]], np.ndarray[Any, np.dtype[np.bool_]]]:
    """``(done, present)`` masks of ``ids``: embedded from that very text (skip on re-run),
    and present at all (an upsert, not a plain insert)."""
    import sqlalchemy as sa

    from pgembed.storage.schema import table

    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    t = table(spec)
    id_col = t.c[spec.id_column]
    if spec.text_column is None or texts is None:
        found = conn.execute(sa.select(id_col).where(_any_id(id_col, ids))).scalars()
        present_ids = {int(i) for i in found}
        present = np.array([int(i) in present_ids for i in ids], dtype=bool)
        return np.zeros(n, dtype=bool), present
    text_col = t.c[spec.text_column]
    got: dict[int, str | None] = {
        int(i): text
        for i, text in conn.execute(
            sa.select(
                id_col,
                sa.case((t.c.embedded_hash == sa.func.md5(text_col), text_col), else_=None),
            ).where(_any_id(id_col, ids))
        ).all()
    }
    present = np.array([int(i) in got for i in ids], dtype=bool)
    done = np.array(
        [got.get(int(i)) == text for i, text in zip(ids, texts, strict=True)], dtype=bool
    )
    return done, present


def _any_id(id_col: Any, ids: np.ndarray[Any, Any]) -> Any:
    """``id = ANY(:ids)``: one array parameter, however many ids."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql as pg

    values = sa.bindparam("ids", np.asarray(ids).tolist(), type_=pg.ARRAY(sa.BigInteger))
    return id_col == sa.any_(values)


def already_embedded(
    conn: Connection, spec: CollectionSpec, ids: np.ndarray[Any, Any], texts: Sequence[str]
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Mask of (id, text) pairs stored and embedded from that very text: skip on re-run."""
    if spec.text_column is None:
        return np.zeros(len(ids), dtype=bool)
    return stored(conn, spec, ids, texts)[0]


def row_bytes(spec: CollectionSpec, rows: Rows) -> np.ndarray[Any, np.dtype[np.int64]]:
    """About how many bytes each row takes in a COPY (to size transactions by bytes)."""
    n = len(rows)
    size = np.full(n, 8 + 4, dtype=np.int64)
    if spec.text_column is not None and rows.texts is not None:
        size += np.fromiter((len(t) for t in rows.texts), dtype=np.int64, count=n) + 40
    columns = spec.vector_columns()
    if "embedding" in columns:
        size += (2 if spec.precision == "halfvec" else 4) * spec.dim + 8
    if "embedding_bits" in columns:
        size += (spec.binary_bits * spec.dim + 7) // 8 + 8
    if "fde" in columns and spec.fde_dim is not None:
        size += 2 * spec.fde_dim + 8
    if "tokens" in columns and rows.tokens is not None:
        size += (
            np.fromiter((len(t) for t in rows.tokens), dtype=np.int64, count=n) * (2 * spec.dim + 8)
            + 24
        )
    return size


def take(rows: Rows, index: np.ndarray[Any, Any] | slice) -> Rows:
    """The rows at ``index`` (an index array or a slice), every column alike."""
    idx = np.arange(len(rows))[index] if isinstance(index, slice) else np.asarray(index)

    def pick(a: Any) -> Any:
        return None if a is None else a[idx]

    return Rows(
        ids=rows.ids[idx],
        texts=None if rows.texts is None else [rows.texts[int(i)] for i in idx],
        embedding=pick(rows.embedding),
        embedding_bits=pick(rows.embedding_bits),
        fde=pick(rows.fde),
        tokens=None if rows.tokens is None else [rows.tokens[int(i)] for i in idx],
    )


def split_by_bytes(spec: CollectionSpec, rows: Rows, budget: int) -> list[Rows]:
    """Consecutive slices of ``rows`` of at most ``budget`` bytes each (at least one row)."""
    sizes = row_bytes(spec, rows)
    if int(sizes.sum()) <= budget:
        return [rows]
    out: list[Rows] = []
    start, acc = 0, 0
    for i, b in enumerate(sizes.tolist()):
        if acc and acc + b > budget:
            out.append(take(rows, slice(start, i)))
            start, acc = i, 0
        acc += b
    out.append(take(rows, slice(start, len(rows))))
    return out


def claim_stale(conn: Connection, spec: CollectionSpec, limit: int) -> list[tuple[int, str]]:
    """Lock up to ``limit`` rows whose text is new or changed since it was embedded.

    ``FOR UPDATE SKIP LOCKED`` lets several workers sync one collection at once, each
    taking rows no other holds. The lock lasts until the caller's transaction ends.
    """
    import sqlalchemy as sa

    from pgembed.storage.schema import table

    if spec.text_column is None:
        return []
    t = table(spec)
    id_col, text_col = t.c[spec.id_column], t.c[spec.text_column]
    stmt = (
        sa.select(id_col, text_col)
        .where(text_col.is_not(None), t.c.embedded_hash.is_distinct_from(sa.func.md5(text_col)))
        .order_by(id_col)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(int(i), str(text)) for i, text in conn.execute(stmt).all()]


def clear_vectors(
    conn: Connection, spec: CollectionSpec, ids: Sequence[int] | None = None
) -> list[int]:
    """Remove the vectors of rows that have nothing to embed; returns their ids.

    With ``ids``: those rows (locked by :func:`claim_stale`; their text is blank), marked
    as embedded from that text so sync does not claim them again. Without: every row whose
    text was set to NULL since it was embedded, so its old vectors stop being found.
    """
    import sqlalchemy as sa

    from pgembed.storage.schema import table

    if spec.text_column is None:
        return []
    t = table(spec)
    id_col, text_col = t.c[spec.id_column], t.c[spec.text_column]
    cleared: dict[str, Any] = {c: None for c in spec.vector_columns()}
    if ids is None:
        # SKIP LOCKED: a row another worker holds is cleared by that worker's next sync.
        stale = sa.select(id_col).where(text_col.is_(None), t.c.embedded_hash.is_not(None))
        where = [id_col.in_(stale.with_for_update(skip_locked=True))]
        cleared["embedded_hash"] = None
    else:
        if not len(ids):
            return []
        where = [id_col.in_([int(i) for i in ids])]
        cleared["embedded_hash"] = sa.func.md5(text_col)
    stmt = t.update().where(*where).values(**cleared).returning(id_col)
    return sorted(int(i) for i in conn.execute(stmt).scalars())
