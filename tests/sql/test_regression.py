"""The psql regression pairs: every tests/sql/NAME.sql prints exactly NAME.expected, and the
values in search.expected are recomputed independently in numpy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _sqlcoll import _topk
from sqlalchemy.engine import make_url

from pgembed import migrate
from pgembed.vectors import binary
from pgembed.vectors.fde import FDEConfig, FDEEncoder
from pgembed.vectors.maxsim import maxsim as np_maxsim

HERE = Path(__file__).parent


# --- psql --------------------------------------------------------------------------------


def _psql(pg_home: Path | None) -> str:
    if pg_home is not None:
        from pgembed.server import EmbeddedServer

        return str(EmbeddedServer(pg_home).binary("psql"))
    found = shutil.which("psql")
    if found is None:
        pytest.skip("no psql binary on PATH for an external server")
    return found


# One regression pair per function family, pgvector's test/sql + expected style: every
# tests/sql/NAME.sql runs alone, in a fresh database, and prints exactly NAME.expected.
SQL_SCRIPTS = sorted(HERE.glob("*.sql"))


def test_every_regression_script_has_its_expected_output() -> None:
    scripts = {p.stem for p in SQL_SCRIPTS}
    expected = {p.stem for p in HERE.glob("*.expected")}
    assert scripts == expected, scripts ^ expected
    assert {"search", "maxsim", "fde", "binary", "helpers"} <= scripts


@pytest.mark.parametrize("script", SQL_SCRIPTS, ids=lambda p: p.stem)
def test_psql_script_matches_expected(
    make_database: Any, pg_home: Path | None, script: Path
) -> None:
    url = make_database()  # a fresh database: the error messages list every collection
    eng = sa.create_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    out = subprocess.run(
        [_psql(pg_home), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), libpq],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == script.with_suffix(".expected").read_text()


def _expected() -> dict[str, str]:
    lines = (HERE / "search.expected").read_text().splitlines()
    return dict(line.split("|", 1) for line in lines)


def _hits_text(ids: list[int], scores: np.ndarray) -> str:
    return " ".join(f"{i}:{s:.4f}" for i, s in zip(ids, scores, strict=True))


def test_psql_expected_values_match_numpy() -> None:
    """Every value in search.expected, recomputed independently."""
    exp = _expected()
    emb = np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [-1, 0, 0.5, 0], [0.5, 0.5, 0.5, 0.5]],
        dtype=np.float32,
    )
    ids = np.arange(1, 6)
    tokens = [
        np.array(t, dtype=np.float32)
        for t in (
            [[1, 0, 0, 0], [0, 1, 0, 0]],
            [[0, 1, 0, 0], [0, 0, 1, 0]],
            [[1, 1, 0, 0]],
            [[-1, 0, 0, 0], [0, 0, 1, 1]],
            [[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 1]],
        )
    ]
    q = np.array([1, 0.5, 0, 0], dtype=np.float32)
    qt = np.array([[1, 0.5, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    # the script's literals are what Python would store
    script = (HERE / "search.sql").read_text()
    bits = binary.residual_texts(binary.residual_encode(emb, 2))
    enc = FDEEncoder.from_arrays(FDEConfig(4, 1, 1, "identity"), simhash=[[[1], [0], [0], [0]]])
    for i, (b, f) in enumerate(zip(bits, enc.encode_document(tokens), strict=True)):
        fde = "[" + ",".join(f"{x:g}" for x in f) + "]"
        assert f"({i + 1}, '[" in script and f"B'{b}', '{fde}'" in script, (b, fde)

    assert exp["version"] == "0.5.1"
    assert float(exp["maxsim vector[]"]) == pytest.approx(np_maxsim(qt, [tokens[4]])[0])
    assert float(exp["maxsim halfvec[]"]) == pytest.approx(np_maxsim(qt, [tokens[3]])[0])
    assert exp["maxsim empty doc"] == "NULL"
    want_fde = "[" + ",".join(f"{x:g}" for x in enc.encode_query([qt])[0]) + "]"
    assert exp["fde_query config"] == exp["fde_query collection"] == want_fde
    code = binary.residual_encode(q, 2)
    levels = binary.residual_texts(code)[0]
    assert exp["residual_levels"] == (
        f"{{{levels[:4]},{levels[4:]}}} {{{code.scales[0][0]:g},{code.scales[0][1]:g}}}"
    )

    cos = (emb @ q) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    top = _topk(cos, ids, 3)
    assert exp["search_knn"] == _hits_text(top, cos[np.array(top) - 1])
    pre = (emb[:, :2] @ q[:2]) / (np.linalg.norm(emb[:, :2], axis=1) * np.linalg.norm(q[:2]))
    cand = np.array(_topk(pre, ids, 2)) - 1  # k * oversample = 2 from the prefix
    top = _topk(cos[cand], ids[cand], 2)
    assert exp["search_funnel"] == _hits_text(top, cos[np.array(top) - 1])
    ham = [sum(a != b for a, b in zip(bits[i][:4], levels[:4], strict=True)) for i in range(5)]
    cand = np.array(_topk(-np.array(ham, dtype=float), ids, 4)) - 1  # k * oversample = 4
    stored = binary.residual_from_packed(
        binary.pack_residual(emb, 2), np.repeat(code.scales, 5, axis=0), 4
    )
    sim = binary.residual_inner_product(code, stored)[0]
    keep = np.array(_topk(sim[cand], ids[cand], 2)) - 1  # rescore default max(k, 4 / 2)
    top = _topk(cos[keep], ids[keep], 2)
    assert exp["search_binary"] == _hits_text(top, cos[np.array(top) - 1])
    assert exp["search_binary ivfflat"] == exp["search_binary"]
    fdes = enc.encode_document(tokens) @ enc.encode_query([qt])[0]
    cand = np.array(_topk(fdes, ids, 3)) - 1  # candidates = 3
    ms = np_maxsim(qt, tokens)
    top = _topk(ms[cand], ids[cand], 2)
    assert exp["search_multivector"] == _hits_text(top, ms[np.array(top) - 1])

    errors = {k: v for k, v in exp.items() if k.startswith("error")}
    # SQLSTATE, then pgembed's own message
    assert len(errors) == 12
    assert all(re.match(r"[0-9A-Z]{5} pgembed", v) for v in errors.values()), errors
    assert "no collection named 'psql docs; DROP TABLE x'" in errors["error injection"]
