"""Reading stored vectors back: binary, in batches, straight into numpy.

The one owner of reading vectors out of the database. Text results cost a Python float per
element (a 4,000-passage collection's token arrays are about 200 million of them); here the
rows come through a server-side cursor in PostgreSQL's binary format, ``size`` rows at a
time, and each batch of a vector column is decoded with one ``np.frombuffer``.

Binary formats, the counterparts of what :mod:`pgembed.storage._pgcopy` writes: pgvector's
``halfvec_send``/``vector_send`` (uint16 dim, uint16 unused, then big-endian float16 or
float32 values), PostgreSQL's ``bit_send`` (int32 bit length, then the bits packed
big-endian) and ``array_send`` (int32 number of dimensions, int32 has-NULLs flag, int32
element type oid, an int32 length and lower bound per dimension, then each element as an
int32 byte length, -1 for NULL, and its bytes).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pgembed.db import raw_connection
from pgembed.errors import DatabaseError

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    from pgembed.storage.schema import CollectionSpec

DEFAULT_BATCH = 1024
"""Rows fetched per round trip: bounds memory by the batch, not the table."""

_VECTOR_DTYPES: dict[str, np.dtype[Any]] = {"halfvec": np.dtype(">f2"), "vector": np.dtype(">f4")}
_ARRAY_HEAD = struct.Struct(">iii")
_names = (f"pgembed_read_{i}" for i in itertools.count())

Decoder = Callable[[list[Any]], list[Any]]


def batches(
    conn: sa.Connection, stmt: sa.Select[Any], *, size: int = DEFAULT_BATCH
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``stmt``, in lists of at most ``size``, read in binary.

    ``halfvec`` and ``vector`` values come back as float32 ``(d,)`` arrays, ``bit`` and
    ``varbit`` as bool ``(n,)`` arrays, ``halfvec[]`` and ``vector[]`` as float32 ``(n, d)``
    arrays (``(0, 0)`` when empty); NULL as None; any other column as psycopg loads it.
    Bound parameters of ``stmt`` go to psycopg as they are (plain values, not vectors).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    import psycopg
    from sqlalchemy.exc import DBAPIError

    raw = raw_connection(conn)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.params
    try:
        with raw.cursor(name=next(_names), binary=True, withhold=raw.autocommit) as cur:
            cur.itersize = size
            cur.execute(sql, params)
            decoders: list[Decoder | None] | None = None
            while rows := cur.fetchmany(size):
                if decoders is None:
                    assert cur.description is not None
                    decoders = _decoders(raw, [c.type_code for c in cur.description])
                columns = [
                    dec([r[j] for r in rows]) if dec else [r[j] for r in rows]
                    for j, dec in enumerate(decoders)
                ]
                yield list(zip(*columns, strict=True))
    except psycopg.Error as exc:  # as SQLAlchemy raises it: db.error_for and callers know it
        raise DBAPIError.instance(sql, params, exc, psycopg.Error) from exc


def rows(
    conn: sa.Connection, stmt: sa.Select[Any], *, size: int = DEFAULT_BATCH
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``stmt`` one by one, decoded as :func:`batches` does."""
    for batch in batches(conn, stmt, size=size):
        yield from batch


def texts(engine: Engine, spec: CollectionSpec, ids: Sequence[int]) -> dict[int, str | None]:
    """The text column of the rows with these ids (all None when the collection has none)."""
    import sqlalchemy as sa

    from pgembed.db import translate_errors, translate_sql_errors
    from pgembed.storage.schema import table

    if spec.text_column is None or not ids:
        return dict.fromkeys(ids)
    t = table(spec)
    key, text = t.c[spec.id_column], t.c[spec.text_column]
    stmt = sa.select(key, text).where(key.in_(list(ids)))
    with (
        translate_errors(str(engine.url)),
        translate_sql_errors(spec.name),
        engine.connect() as conn,
    ):
        found: dict[int, str | None] = dict(conn.execute(stmt).tuples().all())
    return {i: found.get(i) for i in ids}


def _decoders(raw: psycopg.Connection[Any], oids: list[int]) -> list[Decoder | None]:
    """A decoder per result column, from the names of the columns' types."""
    found = raw.execute(
        "SELECT t.oid, t.typcategory = 'A', coalesce(e.typname, t.typname) FROM pg_type t "
        "LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "WHERE t.oid = ANY(%s)",
        [list(set(oids))],
    ).fetchall()
    types = {int(oid): (bool(is_array), str(name)) for oid, is_array, name in found}
    out: list[Decoder | None] = []
    for oid in oids:
        is_array, name = types.get(oid, (False, ""))
        if name in _VECTOR_DTYPES:
            dtype = _VECTOR_DTYPES[name]
            out.append(_array_decoder(dtype) if is_array else _vector_decoder(dtype))
        elif name in ("bit", "varbit") and not is_array:
            out.append(_bits)
        else:
            out.append(None)
    return out


def _vector_decoder(dtype: np.dtype[Any]) -> Decoder:
    def decode(values: list[Any]) -> list[Any]:
        return _batched(values, lambda vs: list(_vectors(b"".join(vs), len(vs), dtype)))

    return decode


def _array_decoder(dtype: np.dtype[Any]) -> Decoder:
    def decode(values: list[Any]) -> list[Any]:
        return [None if v is None else _vector_array(v, dtype) for v in values]

    return decode


def _batched(values: list[Any], decode: Callable[[list[bytes]], list[Any]]) -> list[Any]:
    """Decode the non-NULL values of equal length together, the others one by one."""
    present = [v for v in values if v is not None]
    if present and len({len(v) for v in present}) == 1:
        decoded = iter(decode(present))
    else:
        decoded = iter([x for v in present for x in decode([v])])
    return [None if v is None else next(decoded) for v in values]


def _vectors(buf: bytes, n: int, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """(n, d) float32 from n concatenated halfvec/vector values of one length."""
    width = len(buf) // n
    d = (width - 4) // dtype.itemsize
    dims = np.frombuffer(buf, dtype=">u2").reshape(n, -1)[:, 0] if width % 2 == 0 else None
    if dims is None or width != 4 + d * dtype.itemsize or (dims != d).any():
        raise DatabaseError(
            f"a stored vector's binary value ({width} bytes) does not hold the dimension its "
            "header declares; is the column really a pgvector type?"
        )
    # the 4-byte header is 2 float16 or 1 float32 wide: skip it in the same view
    values = np.frombuffer(buf, dtype=dtype).reshape(n, -1)[:, 4 // dtype.itemsize :]
    return values.astype(np.float32)


def _vector_array(value: bytes, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """(n, d) float32 from one binary halfvec[]/vector[] value."""
    ndim, _, _ = _ARRAY_HEAD.unpack_from(value)
    if ndim == 0:
        return np.empty((0, 0), dtype=np.float32)
    if ndim != 1:
        raise DatabaseError(f"expected a 1-D array of vectors, got {ndim} dimensions")
    (n,) = struct.unpack_from(">i", value, 12)
    body = value[20:]
    width = (len(body) // n) if n else 0
    if n and width * n == len(body):
        lengths = np.frombuffer(body, dtype=np.uint8).reshape(n, width)[:, :4]
        if (lengths.copy().view(">i4")[:, 0] == width - 4).all():
            elements = np.frombuffer(body, dtype=np.uint8).reshape(n, width)[:, 4:]
            return _vectors(elements.tobytes(), n, dtype)
    # elements of differing lengths (or NULL ones): walk them
    out, pos = [], 0
    for _ in range(n):
        (length,) = struct.unpack_from(">i", body, pos)
        if length < 0:
            raise DatabaseError("a stored array of vectors holds a NULL element")
        out.append(_vectors(body[pos + 4 : pos + 4 + length], 1, dtype)[0])
        pos += 4 + length
    if len({len(v) for v in out}) > 1:
        raise DatabaseError("a stored array of vectors mixes dimensions")
    return np.stack(out)


def _bits(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        (nbits,) = struct.unpack_from(">i", v)
        out.append(np.unpackbits(np.frombuffer(v, dtype=np.uint8, offset=4))[:nbits] == 1)
    return out


class TopK:
    """Exact top-k of several queries over scores that arrive a batch of rows at a time.

    Memory is queries x (k + batch), whatever the number of rows. Ranks match one stable
    sort of all the scores: best first, ties to the key pushed earlier (push in key order
    for ties to the lower key).
    """

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.keys = np.empty((n_queries, 0), dtype=np.int64)
        self.scores = np.empty((n_queries, 0), dtype=np.float32)

    def push(self, keys: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> None:
        """Scores (n_queries, n) of the rows with these n keys."""
        all_keys = np.concatenate([self.keys, np.broadcast_to(keys, scores.shape)], axis=1)
        all_scores = np.concatenate([self.scores, scores.astype(np.float32)], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, : self.k]
        self.keys = np.take_along_axis(all_keys, order, axis=1)
        self.scores = np.take_along_axis(all_scores, order, axis=1)
