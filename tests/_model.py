"""What the model-based machines share: kind sets, names, texts and the model's exact search
(tests/test_model_based.py, tests/shards/test_model_based_sharded.py)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData

KIND_SETS = (
    ("single",),
    ("single", "binary"),
    ("matryoshka",),
    ("fde",),
    ("single", "lexical"),
    ("matryoshka", "binary", "fde", "lexical"),
)
NAMES = ("mb {}", "MB Mixed {}", "mb é {}", "mb; drop {}")
IDS = st.integers(0, 24)
QUERIES = ("storm damage in the city", "interest rates and the economy", "a cricket match")
CAL_QUERIES = (
    *QUERIES,
    "bushfires near Sydney",
    "the police said on Sunday",
    "peace talks in the Middle East",
    "a new government minister",
    "the airline's pilots went on strike",
)
"""Queries a calibration is measured with, so that its claim can be checked on them."""
EXAMPLES = int(os.environ.get("PGEMBED_MODEL_EXAMPLES", "6"))


def machine_settings(examples: int, steps: int = 12) -> settings:
    """Derandomized: the same sequences on every run, so a failure reproduces.
    PGEMBED_MODEL_EXPLORE=1 draws fresh ones (looking for new failures by hand);
    PGEMBED_MODEL_VERBOSE=1 prints every step."""
    from hypothesis import Verbosity

    verbose = bool(os.environ.get("PGEMBED_MODEL_VERBOSE"))
    return settings(
        verbosity=Verbosity.debug if verbose else Verbosity.normal,
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=not os.environ.get("PGEMBED_MODEL_EXPLORE"),
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def sentences() -> list[str]:
    from pgembed.corpus import lee_background

    out = [s for d in lee_background() for s in d.split(". ") if 4 < len(s.split()) < 30]
    return out[:200]


def half(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return x.astype(np.float16).astype(np.float32)


def exact(encoder: Any, rows: Mapping[int, str], text: str, k: int) -> list[int]:
    """The exact top-k ids by cosine over the model's own (halfvec-rounded) encodings, ties
    by id, as the database orders them."""
    q = encoder.encode([text], "query", progress=False)[0]
    ids = sorted(rows)
    emb = half(encoder.encode([rows[i] for i in ids], "document", progress=False))
    cos = emb @ half(q) / np.linalg.norm(emb, axis=1) / np.linalg.norm(half(q))
    order = np.lexsort((np.array(ids), -cos))
    return [ids[i] for i in order[:k]]


def recall(want: list[int], got: list[int]) -> float:
    return len(set(want) & set(got)) / len(want) if want else 1.0


def autogenerate(engine: Any, declared: Mapping[str, dict[str, Any]]) -> list[Any]:
    """The upgrade ops alembic's autogenerate writes for a MetaData declaring ``declared``
    (name -> declare_collection options, the tiny encoder's); a declaration that differs from
    the record fails (CollectionChangeWarning as an error)."""
    import warnings

    from alembic.autogenerate import produce_migrations
    from alembic.migration import MigrationContext

    from pgembed.alembic_ops import (
        CollectionChangeWarning,
        declare_collection,
        include_object,
        manage_collections,
        render_item,
    )
    from pgembed.encoders.testing import TINY_NAME

    md = MetaData()
    manage_collections(md)
    for name, options in declared.items():
        declare_collection(md, name, encoder=TINY_NAME, **options)
    opts = {"target_metadata": md, "include_object": include_object, "render_item": render_item}
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("error", CollectionChangeWarning)
        script = produce_migrations(MigrationContext.configure(conn, opts=opts), md)
    assert script.upgrade_ops is not None
    return list(script.upgrade_ops.ops)


def add_rows(
    coll: Any, rows: dict[int, str], texts: list[str], ids: list[int], pick: int, mode: str
) -> None:
    """The machines' add rule: texts picked from ``texts``, written by ``mode``, recorded in
    the model ``rows``."""
    picked = [texts[(pick + 7 * i) % len(texts)] for i in range(len(ids))]
    if mode == "bulk" and set(ids) & rows.keys():
        mode = "incremental"  # bulk COPY writes new ids; upserts go incremental
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long sentences
        written = coll.add(picked, ids, mode=mode, progress=False)
    assert written <= len(ids)
    rows.update(zip(ids, picked, strict=True))
