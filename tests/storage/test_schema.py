"""CollectionSpec and IndexParams: declarations checked, FDE index chosen, catalog rows read."""

from __future__ import annotations

from typing import Any

import pytest

from pgembed.errors import CollectionError, ConfigError, DimensionError
from pgembed.storage.schema import CollectionSpec, IndexParams


def test_spec_errors_name_the_problem() -> None:
    with pytest.raises(CollectionError, match="unknown kind"):
        CollectionSpec("c", 8, "e", kinds=("dense",))
    with pytest.raises(DimensionError, match="HNSW limit of 2000 for vector"):
        CollectionSpec("c", 3000, "e", precision="vector")
    with pytest.raises(DimensionError, match="matryoshka_dims"):
        CollectionSpec("c", 8, "e", kinds=("matryoshka",), matryoshka_dims=(8,))
    assert CollectionSpec("c", 8, "e", kinds=("fde",), fde_dim=5000).fde_index == "bit"


def test_fde_index_choice() -> None:
    def spec(**kw: Any) -> CollectionSpec:
        return CollectionSpec("c", 8, "e", kinds=("fde",), **kw)

    assert spec(fde_dim=100).fde_index == "bit"  # the default since 0.4.0
    assert spec(fde_dim=100, index=IndexParams(fde="halfvec")).fde_index == "halfvec"
    assert spec(fde_dim=5000, index=IndexParams(fde="halfvec")).fde_index == "bit"  # > 4000
    with pytest.raises(ConfigError, match="fde index 'hnsw': use 'bit' or 'halfvec'"):
        IndexParams(fde="hnsw")  # type: ignore[arg-type]
    # A catalog row from before 0.4.0 names the halfvec index, or none for it: halfvec.
    row = {"name": "c", "encoder": "e", "table_name": "c", "table_schema": "public",
           "id_column": "id", "text_column": "content",
           "kinds": {"fde": {"column": "fde", "dim": 100}, "multivector": {"dim": 8}}}  # fmt: skip
    assert CollectionSpec.from_catalog(row).fde_index == "halfvec"
    row["kinds"]["fde"]["index"] = "bit"
    assert CollectionSpec.from_catalog(row).fde_index == "bit"
    assert spec(fde_dim=100).kinds_json()["fde"]["index"] == "bit"
