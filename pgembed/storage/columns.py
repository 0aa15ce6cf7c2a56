"""SQLAlchemy column types for the vector kinds.

pgvector-python's ``VECTOR``, ``HALFVEC`` and ``BIT`` cover single vectors, FDEs and binary
codes. :class:`MultiVector` adds ``halfvec(d)[]``, the per-token vectors of a row, with a
comparator for MaxSim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Float
from sqlalchemy.sql import ClauseElement, bindparam, func
from sqlalchemy.types import TypeEngine, UserDefinedType

from pgembed.errors import DimensionError, EmptyInputError, NonFiniteError


def halfvec_array_literal(tokens: Any, dim: int | None = None) -> str:
    """Text literal of a ``halfvec[]`` or ``vector[]`` from an (n, d) array: ``{"[..]","[..]"}``.

    The repr of each float32 widened to float round-trips exactly through the types' input.
    """
    arr = np.asarray(tokens, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise EmptyInputError(f"a multi-vector needs shape (n>0, d), got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(f"token vectors have {arr.shape[1]} dims, the column {dim}")
    if not np.isfinite(arr).all():
        raise NonFiniteError("token vectors hold NaN or infinity")
    rows = ('"[' + ",".join(repr(float(x)) for x in row) + ']"' for row in arr)
    return "{" + ",".join(rows) + "}"


class VectorArray(UserDefinedType[Any]):
    """``vector[]``: a set of token vectors, bound from an (n, d) array (query side)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "VECTOR[]"

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> str | None:
            return None if value is None else halfvec_array_literal(value)

        return process


_ELEMENT = re.compile(r"\[([^\]]*)\]")


def parse_halfvec_array(value: str | Sequence[Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """(n, d) float32 from a ``halfvec[]`` text value or a list of vectors."""
    if isinstance(value, str):
        # PostgreSQL quotes an element only when it must ('{"[1,2]"}' but '{[1]}').
        rows = [[float(x) for x in m.split(",")] for m in _ELEMENT.findall(value)]
        return np.array(rows, dtype=np.float32)
    return np.array(
        [np.asarray(getattr(v, "to_numpy", lambda v=v: v)()) for v in value], dtype=np.float32
    )


class MultiVector(UserDefinedType[Any]):
    """``halfvec(d)[]``: one row's token vectors, for MaxSim."""

    cache_ok = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def get_col_spec(self, **kw: Any) -> str:
        return "HALFVEC[]" if self.dim is None else f"HALFVEC({self.dim})[]"

    def bind_processor(self, dialect: Any) -> Any:
        dim = self.dim

        def process(value: Any) -> str | None:
            return None if value is None else halfvec_array_literal(value, dim)

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        def process(value: Any) -> Any:
            return None if value is None else parse_halfvec_array(value)

        return process

    class Comparator(TypeEngine.Comparator[Any]):
        def maxsim(self, other: Any) -> Any:
            """MaxSim of a query multi-vector against this column (higher is closer).

            ``other`` is an SQL expression, or the query's token vectors (an (n, d) array
            or a list of vectors), sent as this column's ``halfvec(d)[]``.
            """
            if not isinstance(other, ClauseElement):
                other = bindparam(None, other, type_=self.type, unique=True)
            return func.pgembed.maxsim(other, self.expr, type_=Float)

    comparator_factory = Comparator
