"""The search strategies: the one table of their names, the kind each needs, its SQL
function, and the options it accepts with their types and ranges.

``Collection.search``, the ``pgembed search`` command line and the SQLAlchemy builders
(:mod:`pgembed.sqlfuncs`, :mod:`pgembed.query`) all validate through this module, so an
option or a value is refused with the same message wherever it comes from, and before any
SQL runs. The ranges are those of pgembed's SQL functions (``pgembed.search_*``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pgembed.errors import (
    ConfigError,
    DimensionError,
    EmptyInputError,
    InputError,
    NonFiniteError,
    UnknownKindError,
)

if TYPE_CHECKING:
    from pgembed.storage.schema import CollectionSpec

MAX_K = 100_000
"""Most results one search returns (the SQL functions' limit)."""
KNN_EF_SEARCH = 100
"""knn's default HNSW breadth, at least k (``pgembed.search_knn``): 40 kept 0.955 of exact
search's top-10 on MiniLM vectors of about 33,000 short texts, 100 kept 0.987. The funnel's
and binary's default oversample (16, 20; below) were raised from 8 and 10 the same way: on
the Wikipedia sample's passages with MiniLM, 8 kept 0.949 (128-dim prefix) and 10 kept
0.968; 16 and 20 kept 0.979 and 0.989 (benchmarks/RESULTS.md, "Recall targets")."""
MULTIVECTOR_CANDIDATES = 300
"""multivector's default FDE candidates reranked by exact MaxSim (``pgembed.search_multivector``):
on MiniLM token vectors of 6,000 Wikipedia passages, 100 kept 0.939 of exact MaxSim's top-10,
200 kept 0.970, 300 kept 0.979 (benchmarks/RESULTS.md, "Multivector default")."""
HALFVEC_MAX = 65504.0
"""Largest magnitude a halfvec element holds."""

Vector = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class Option:
    """A search option: an integer in ``low..high``, a number in ``low..high`` (``real``),
    or one of ``choices``."""

    name: str
    help: str
    low: float = 1
    high: float = MAX_K
    choices: tuple[str, ...] = ()
    real: bool = False
    low_open: bool = False
    """``low`` itself is refused (a number in (low, high])."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type:
        """The type a command line flag parses its text to."""
        return str if self.choices else float if self.real else int

    def check(self, value: Any) -> Any:
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ConfigError(
                    f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return value
        if self.real and self.low_open:
            interval = f"({self.low:g}, {self.high:g}]"
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(
                    f"{self.name} must be a number in {interval}, got {value!r} "
                    f"({type(value).__name__}); pass a float"
                )
            if not self.low < float(value) <= self.high:  # NaN fails too
                raise ConfigError(f"{self.name} must be a number in {interval}, got {value!r}")
            return float(value)
        if self.real:
            return check_real(self.name, value, self.low, self.high)
        return check_int(self.name, value, int(self.low), int(self.high))


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("ef_search", "HNSW search breadth (rows the graph scan keeps; knn default: "
               f"max(k, {KNN_EF_SEARCH}))", 1, 1000),
        Option(
            "iterative_scan",
            "keep scanning the index when filters drop rows",
            choices=("off", "relaxed_order", "strict_order"),
        ),
        Option("prefix", "Matryoshka prefix whose index ranks candidates", 1, 16000),
        Option("oversample", "candidates per result reranked exactly (k*oversample)", 1, 1000),
        Option("rescore", "rows kept by the multi-bit score, in k..k*oversample", 1, 10**8),
        Option("probes", "IVFFlat lists to probe (a binary IVFFlat index)", 1, 32768),
        Option("candidates", "FDE candidates reranked by exact MaxSim, at least k", 1, MAX_K),
        Option("k1", "BM25 term frequency saturation (default 1.2)", 0, 100, real=True),
        Option("b", "BM25 document length normalization (default 0.75)", 0, 1, real=True),
        Option("dense", "hybrid: the dense side's strategy (default knn)",
               choices=("knn", "funnel", "binary", "multivector")),
        Option("fusion", "hybrid: reciprocal rank fusion or a convex combination (default rrf)",
               choices=("rrf", "convex")),
        Option("rrf_k", "hybrid rrf: the constant k of 1/(k + rank) (default 60)", 0, MAX_K),
        Option("bm25_weight", "hybrid rrf: weight of the BM25 side (default 1)", 0, 1000,
               real=True),
        Option("dense_weight", "hybrid rrf: weight of the dense side (default 1)", 0, 1000,
               real=True),
        Option("alpha", "hybrid convex: weight of the dense side, BM25 gets 1 - alpha "
               "(default 0.5)", 0, 1, real=True),
        Option("depth", "hybrid: rows each side fetches before fusion, at least k "
               "(default max(k, 100))", 1, MAX_K),
        Option("target_recall", "the cheapest calibrated setting whose recall@k against "
               "exact search meets this, in (0, 1] (needs `pgembed calibrate`; explicit "
               "options win)", 0, 1, real=True, low_open=True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str
    """The vector kind the collection must store."""
    function: str
    """Its SQL function in schema pgembed, and the same-named builder in sqlfuncs."""
    options: tuple[str, ...]
    """Keyword options, in the SQL function's argument order."""
    defaults: Mapping[str, int] = field(default_factory=dict)
    """The SQL function's defaults of the options that have one (used when neither the
    caller nor, with ``target_recall``, a calibration gives them)."""
    tokens: bool = False
    """The query is a set of token vectors, not one vector."""
    text: bool = False
    """The query is a text searched lexically (bm25; hybrid with a vector beside it)."""

    def takes_tokens(self, options: Mapping[str, Any]) -> bool:
        """Whether the dense query is token vectors (for hybrid: its ``dense`` strategy)."""
        if self.name == "hybrid":
            return STRATEGIES[options.get("dense") or "knn"].tokens
        return self.tokens


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("knn", "single", "search_knn", ("ef_search", "iterative_scan", "target_recall")),
        Strategy("funnel", "matryoshka", "search_funnel",
                 ("prefix", "oversample", "ef_search", "iterative_scan", "target_recall"),
                 {"oversample": 16}),
        Strategy("binary", "binary", "search_binary",
                 ("oversample", "rescore", "ef_search", "iterative_scan", "probes",
                  "target_recall"),
                 {"oversample": 20}),
        Strategy("multivector", "fde", "search_multivector",
                 ("candidates", "oversample", "ef_search", "iterative_scan", "target_recall"),
                 {"candidates": MULTIVECTOR_CANDIDATES, "oversample": 10}, tokens=True),
        Strategy("bm25", "lexical", "search_bm25", ("k1", "b"), text=True),
        Strategy("hybrid", "lexical", "search_hybrid",
                 ("dense", "fusion", "rrf_k", "bm25_weight", "dense_weight", "alpha", "depth",
                  "k1", "b", "ef_search", "target_recall"), {"rrf_k": 60}, text=True),
    )
}  # fmt: skip
NAMES = tuple(STRATEGIES)
KIND = {s.name: s.kind for s in STRATEGIES.values()}
DENSE = ("knn", "funnel", "binary", "multivector")
"""The strategies hybrid search can fuse with BM25."""


def get(name: str) -> Strategy:
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose from {list(NAMES)}")
    return STRATEGIES[name]


def accepting(option: str) -> list[str]:
    """Names of the strategies that take ``option``."""
    return [s.name for s in STRATEGIES.values() if option in s.options]


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """A real integer (not bool, float or str) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(
            f"{name} must be an integer in {low}..{high}, got {value!r} "
            f"({type(value).__name__}); pass an int"
        )
    if not low <= int(value) <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any, low: float, high: float) -> float:
    """A real number (int or float, not bool or str, not NaN) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"{name} must be a number in {low:g}..{high:g}, got {value!r} "
            f"({type(value).__name__}); pass a float"
        )
    if not low <= float(value) <= high:
        raise ConfigError(f"{name} must be a number in {low:g}..{high:g}, got {value!r}")
    return float(value)


def check_k(k: Any) -> int:
    return check_int("k", k, 1, MAX_K)


def check_options(name: str, options: Mapping[str, Any], *, k: int) -> dict[str, Any]:
    """The options of one search of strategy ``name``, each checked; None means default."""
    s = get(name)
    k = check_k(k)
    out: dict[str, Any] = {}
    for opt, value in options.items():
        if opt not in s.options:
            where = accepting(opt)
            applies = f"it applies to {', '.join(where)}" if where else "no strategy takes it"
            raise ConfigError(
                f"option {opt!r} does not apply to strategy {name!r} ({applies}); "
                f"{name} accepts: {', '.join(s.options)}"
            )
        if value is not None:
            out[opt] = OPTIONS[opt].check(value)
    oversample = out.get("oversample", s.defaults.get("oversample", 1))
    if "rescore" in out and not k <= out["rescore"] <= k * oversample:
        raise ConfigError(
            f"rescore must be in k..k*oversample = {k}..{k * oversample}, got {out['rescore']}"
        )
    if name == "hybrid":
        if out.get("depth", max(k, 100)) < k:
            raise ConfigError(
                f"depth ({out['depth']}) must be at least k ({k}); each side fetches depth "
                "rows before fusion"
            )
        if out.get("bm25_weight") == 0 and out.get("dense_weight") == 0:
            raise ConfigError(
                "bm25_weight and dense_weight are both 0, so every score would be 0; give "
                "at least one side a positive weight"
            )
    calibrated = "target_recall" in out and "candidates" not in out  # then at least k
    if (
        "candidates" in s.options
        and not calibrated
        and out.get("candidates", s.defaults["candidates"]) < k
    ):
        raise ConfigError(
            f"candidates ({out.get('candidates', s.defaults['candidates'])}) must be at least "
            f"k ({k}); raise candidates or ask for fewer results"
        )
    return out


def check_search(
    spec: CollectionSpec, name: str, k: Any, options: Mapping[str, Any]
) -> tuple[Strategy, dict[str, Any]]:
    """Strategy, kind, k and options of a search on collection ``spec``."""
    s = get(name)
    if name == "hybrid" and isinstance(options.get("dense"), str):
        dense = options["dense"]
        need = KIND.get(dense)
        if need is not None and not spec.has(need):
            raise UnknownKindError(
                f"hybrid with dense={dense!r} needs the {need!r} kind, which collection "
                f"{spec.name!r} does not store (it has {list(spec.all_kinds)}); choose dense "
                f"from {[n for n, kind in KIND.items() if spec.has(kind) and n in DENSE]}"
            )
    if name == "hybrid" and options.get("dense") is None and not spec.has("single"):
        raise UnknownKindError(
            f"hybrid's default dense side is knn, which needs the 'single' kind; collection "
            f"{spec.name!r} stores {list(spec.all_kinds)}: pass dense="
            f"{[n for n, kind in KIND.items() if spec.has(kind) and n in DENSE]}"
        )
    if not spec.has(s.kind):
        raise UnknownKindError(
            f"strategy {name!r} needs the {s.kind!r} kind, which collection {spec.name!r} "
            f"does not store (it has {list(spec.all_kinds)}); use one of "
            f"{[n for n, kind in KIND.items() if spec.has(kind)]}"
        )
    opts = check_options(name, options, k=k)
    prefix = opts.get("prefix")
    if prefix is not None and prefix not in spec.matryoshka_dims:
        raise ConfigError(
            f"collection {spec.name!r} has no index on prefix {prefix}; its prefixes are "
            f"{list(spec.matryoshka_dims)} (leave prefix out for the smallest)"
        )
    ivf = spec.index.binary == "ivfflat"
    if name == "binary" and ivf and "ef_search" in opts:
        raise ConfigError(
            f"ef_search applies to an HNSW index, but collection {spec.name!r} has an "
            "IVFFlat binary index; pass probes instead"
        )
    if name == "binary" and not ivf and "probes" in opts:
        raise ConfigError(
            f"probes applies to an IVFFlat index, but collection {spec.name!r} has an HNSW "
            "binary index; pass ef_search instead"
        )
    if name == "binary" and "probes" in opts and opts["probes"] > spec.index.lists:
        raise ConfigError(
            f"probes must be in 1..{spec.index.lists} (the index's lists), got {opts['probes']}"
        )
    return s, opts


def _array(q: Any, what: str) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(q, dtype=np.float32)
    except (ValueError, TypeError) as exc:  # ragged, or not numbers
        raise InputError(
            f"the {what} is not a numeric array ({exc}); pass a list or numpy array of floats"
            + (", every token vector of the same length" if "token" in what else "")
        ) from None


def _check_values(arr: Vector, what: str, precision: str) -> None:
    if not np.isfinite(arr).all():
        raise NonFiniteError(f"the {what} holds NaN or infinity; pass finite values")
    if precision == "halfvec":
        big = float(np.abs(arr).max())
        if big > HALFVEC_MAX:
            raise InputError(
                f"the {what} holds {big:g}, beyond halfvec's range ±{HALFVEC_MAX:g}; "
                "normalize it (q / np.linalg.norm(q))"
            )


def _check_norm(arr: Vector, what: str, precision: str) -> None:
    """Not all zero, and not all zero once stored at the precision (cosine needs a norm)."""
    if not arr.any():
        raise InputError(
            f"the {what} is all zeros, so its similarity to anything is undefined; "
            "pass a non-zero vector"
        )
    stored = arr.astype(np.float16 if precision == "halfvec" else np.float32)
    sq = float(np.dot(stored.astype(np.float32), stored.astype(np.float32)))
    if not 0 < sq < np.inf:
        raise InputError(
            f"the {what} {'underflows to zero' if sq == 0 else 'overflows'} as {precision} "
            f"(largest |x| = {float(np.abs(arr).max()):g}); normalize it "
            "(q / np.linalg.norm(q))"
        )


def query_vector(
    q: Any,
    dim: int | None = None,
    *,
    precision: str = "vector",
    nonzero: bool = True,
    prefix: int | None = None,
    what: str = "query vector",
) -> Vector:
    """One finite query vector of ``dim`` values, storable at ``precision``, not all zero
    (nor its first ``prefix`` values, which the funnel ranks candidates by)."""
    arr = _array(q, what)
    if arr.ndim != 1 or arr.size == 0:
        raise DimensionError(f"the {what} must be one non-empty vector, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise DimensionError(
            f"the {what} has {arr.shape[0]} dimensions; the collection stores {dim}: "
            "encode the query with the collection's encoder"
        )
    _check_values(arr, what, precision)
    if nonzero:
        _check_norm(arr, what, precision)
        if prefix is not None:
            _check_norm(arr[:prefix], f"{what}'s first {prefix} values", precision)
    return arr


def query_tokens(q: Any, dim: int | None = None, *, what: str = "query") -> Vector:
    """A multivector query: an (n > 0, dim) array of finite token vectors, not all zero."""
    arr = _array(q, f"{what}'s token vectors")
    if arr.size == 0:
        raise EmptyInputError(
            f"the {what} has no token vectors (shape {arr.shape}); pass an (n, d) array "
            "with n >= 1, e.g. encoder.encode_tokens([text], 'query')[0]"
        )
    if arr.ndim != 2:
        raise DimensionError(
            f"the {what} must be an (n, d) array of token vectors, got shape {arr.shape}; "
            "wrap a single vector as [v]"
        )
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(
            f"the {what}'s token vectors have {arr.shape[1]} dimensions; the collection "
            f"stores {dim}"
        )
    _check_values(arr, f"{what}'s token vectors", "halfvec")  # tokens are stored as halfvec
    zero = np.flatnonzero(~arr.astype(np.float16).any(axis=1))
    if zero.size:
        raise InputError(
            f"the {what}'s token vector {int(zero[0])} is all zeros (as halfvec), so it "
            "scores nothing; drop it or pass real token vectors"
        )
    return arr


def query_text(q: Any) -> str:
    """A lexical query: a non-blank str (PostgreSQL says whether it holds a searchable word)."""
    if not isinstance(q, str):
        raise InputError(
            f"a lexical search takes the query as text, got {type(q).__name__}; pass a str"
        )
    if not q.strip():
        raise EmptyInputError("the query text is empty; pass words to search for")
    if "\x00" in q:
        raise InputError("the query text holds a NUL character, which PostgreSQL refuses")
    return q


def check_query(spec: CollectionSpec, s: Strategy, q: Any, opts: Mapping[str, Any]) -> Vector:
    """The (dense) query of strategy ``s`` on collection ``spec``, checked."""
    if s.name == "hybrid":
        dense = STRATEGIES[opts.get("dense") or "knn"]
        return check_query(spec, dense, q, {})
    if s.tokens:
        return query_tokens(q, spec.dim)
    prefix = opts.get("prefix") or (min(spec.matryoshka_dims) if s.name == "funnel" else None)
    return query_vector(q, spec.dim, precision=spec.precision, prefix=prefix)
