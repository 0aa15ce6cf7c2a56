"""PostgreSQL's binary COPY format, built from numpy columns.

Fixed-width columns (bigint, halfvec, vector, bit) are encoded for all rows at once; only the
final join of a row's fields is per row. Formats: ``src/backend/commands/copy*.c`` for the
frame, pgvector's ``halfvec_send``/``vector_send`` (uint16 dim, uint16 unused, big-endian
floats) and PostgreSQL's ``bit_send`` (int32 bit length, packed bytes) and ``array_send``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_MD5_LEN = struct.pack(">i", 32)


def _framed(payload: np.ndarray[Any, Any]) -> list[bytes]:
    """Prefix each row of a 2-D uint8 array with its int32 length."""
    n, width = payload.shape
    out = np.empty((n, 4 + width), dtype=np.uint8)
    out[:, :4] = np.frombuffer(struct.pack(">i", width), dtype=np.uint8)
    out[:, 4:] = payload
    return [row.tobytes() for row in out]


def bigint_fields(values: np.ndarray[Any, Any]) -> list[bytes]:
    return _framed(np.asarray(values, dtype=">i8").reshape(-1, 1).view(np.uint8))


def text_fields(values: Sequence[str | None]) -> list[bytes]:
    out = []
    for v in values:
        if v is None:
            out.append(_NULL)
        else:
            b = v.encode("utf-8")
            out.append(struct.pack(">i", len(b)) + b)
    return out


def md5_fields(values: Sequence[str | None]) -> list[bytes]:
    """md5 hex digests of UTF-8 texts as text values: what PostgreSQL's ``md5(text)`` gives
    in a UTF8 database (NULL for NULL)."""
    out = []
    for v in values:
        if v is None:
            out.append(_NULL)
        else:
            digest = hashlib.md5(v.encode("utf-8"), usedforsecurity=False).hexdigest()
            out.append(_MD5_LEN + digest.encode())
    return out


def _vec_payload(x: np.ndarray[Any, Any], half: bool) -> np.ndarray[Any, Any]:
    x = np.ascontiguousarray(x, dtype=">f2" if half else ">f4")
    n, d = x.shape
    head = np.frombuffer(struct.pack(">HH", d, 0), dtype=np.uint8)
    return np.concatenate([np.broadcast_to(head, (n, 4)), x.view(np.uint8).reshape(n, -1)], axis=1)


def vector_fields(x: np.ndarray[Any, Any], *, half: bool) -> list[bytes]:
    """halfvec (half=True) or vector values, one per row of x."""
    return _framed(_vec_payload(np.atleast_2d(x), half))


def bit_fields(packed: np.ndarray[Any, Any], nbits: int) -> list[bytes]:
    """bit(nbits) values from rows of np.packbits output (big-endian bit order)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    head = np.frombuffer(struct.pack(">i", nbits), dtype=np.uint8)
    n = packed.shape[0]
    return _framed(np.concatenate([np.broadcast_to(head, (n, 4)), packed], axis=1))


def vector_array_fields(
    matrices: Sequence[np.ndarray[Any, Any]], elem_oid: int, *, half: bool
) -> list[bytes]:
    """halfvec[] (or vector[]) values: one 1-D array of token vectors per row."""
    out = []
    for m in matrices:
        m = np.atleast_2d(m)
        n, d = m.shape
        elem_len = 4 + (2 if half else 4) * d
        elems = np.empty((n, 4 + elem_len), dtype=np.uint8)
        elems[:, :4] = np.frombuffer(struct.pack(">i", elem_len), dtype=np.uint8)
        elems[:, 4:] = _vec_payload(m, half)
        body = struct.pack(">iiiii", 1, 0, elem_oid, n, 1) + elems.tobytes()
        out.append(struct.pack(">i", len(body)) + body)
    return out


def rows(columns: Sequence[list[bytes]]) -> bytes:
    """The whole COPY payload from per-column field lists of equal length."""
    count = struct.pack(">h", len(columns))
    body = b"".join(count + b"".join(fields) for fields in zip(*columns, strict=True))
    return HEADER + body + TRAILER
