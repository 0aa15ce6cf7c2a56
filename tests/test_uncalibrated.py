"""target_recall on a strategy without a calibration runs that strategy's defaults, never
less (0.5.0 ran knn at ef_search = k and multivector at candidates = k), with a
CalibrationWarning; through Collection.search and the SQL functions alike."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pgembed import Collection, strategies
from pgembed.calibration import CalibrationWarning
from pgembed.corpus import lee_background
from pgembed.storage.schema import IndexParams

DIM = 32  # the tiny encoder's
QUERIES = ("storm damage after the fire", "interest rates and the economy", "cricket match")


def _clustered(n: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def collections(engine: Engine, tiny_encoder: Any) -> Iterator[dict[str, Collection]]:
    """Vectors on a thin HNSW graph (settings matter) and real text with every other kind."""
    thin = IndexParams(m=4, ef_construction=16)
    vec = Collection(engine, f"uncal vec {uuid.uuid4().hex[:6]}", tiny_encoder,
                     kinds=("matryoshka", "binary"), matryoshka_dims=(8, 16), text_column=None,
                     index=thin).create()  # fmt: skip
    n = 3000
    vec.add([f"row {i}" for i in range(n)], ids=range(n), vectors=_clustered(n, 1), progress=False)
    texts = [s for d in lee_background() for s in d.split(". ") if len(s.split()) > 3][:800]
    txt = Collection(engine, f"uncal txt {uuid.uuid4().hex[:6]}", tiny_encoder,
                     kinds=("single", "fde", "lexical"), index=thin).create()  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of a few long sentences
        txt.add(texts, ids=range(len(texts)), progress=False)
    yield {"vec": vec, "txt": txt}
    vec.drop(force=True)
    txt.drop(force=True)


def _owner(colls: dict[str, Collection], strategy: str) -> Collection:
    kind = strategies.KIND[strategy]
    return colls["vec"] if kind in ("matryoshka", "binary") else colls["txt"]


def _queries(c: Collection) -> list[Any]:
    if c.spec.text_column is None:
        return list(_clustered(6, 9))
    return list(QUERIES)


@pytest.mark.parametrize("strategy", strategies.accepting("target_recall"))
def test_target_recall_without_calibration_runs_the_defaults(
    collections: dict[str, Collection], strategy: str
) -> None:
    c = _owner(collections, strategy)
    for q in _queries(c):
        want = c.search(q, k=10, strategy=strategy)
        with pytest.warns(CalibrationWarning, match="no calibration"):
            got = c.search(q, k=10, strategy=strategy, target_recall=0.95)
        assert [i for i, _ in got] == [i for i, _ in want], (strategy, q)


@pytest.mark.parametrize("function", ["search_knn", "search_multivector"])
def test_sql_functions_without_calibration_run_the_defaults(
    collections: dict[str, Collection], function: str
) -> None:
    """The same in SQL: target_recall changes nothing when there is nothing to read."""
    c = collections["vec"] if function == "search_knn" else collections["txt"]
    with c.engine.connect() as conn:
        if function == "search_knn":
            arg, cast = str(_clustered(1, 5)[0].tolist()), "vector"
        else:
            tokens = c.encoder.encode_tokens([QUERIES[0]], "query")[0]
            arg, cast = "{" + ",".join(f'"{t.tolist()}"' for t in tokens) + "}", "vector[]"
        call = f"SELECT id FROM pgembed.{function}(:c, CAST(:q AS {cast}), 10{{}})"
        want = conn.execute(sa.text(call.format("")), {"c": c.spec.name, "q": arg}).scalars().all()
        got = (
            conn.execute(
                sa.text(call.format(", target_recall => 0.95")), {"c": c.spec.name, "q": arg}
            )
            .scalars()
            .all()
        )
    assert got == want
