"""MUVERA FDE: golden values, the reference's rules, parity with muvera-python, bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from _tolerance import assert_sums_close
from hypothesis import given, settings
from hypothesis import strategies as st

from pgembed import fde_torch
from pgembed.errors import (
    DeviceUnavailableError,
    DimensionError,
    EmptyInputError,
    FDEConfigError,
    InputError,
    NonFiniteError,
    PgembedError,
)
from pgembed.vectors.fde import (
    FDEConfig,
    FDEEncoder,
    partition_index,
    partition_sign_bits,
)

# --- a literal transcription of the reference C++ (loops), the oracle for the fast code ---


def reference_fde(enc: FDEEncoder, tokens: np.ndarray, *, query: bool) -> np.ndarray:
    cfg = enc.config
    r_n, k, dp, nb = (
        cfg.num_repetitions,
        cfg.num_simhash_projections,
        cfg.block_dim,
        cfg.num_partitions,
    )
    x = tokens.astype(np.float64)
    n = x.shape[0]
    out = np.zeros(cfg.intermediate_dim, dtype=np.float64)
    for rep in range(r_n):
        sketch = x @ enc.simhash[rep].astype(np.float64)
        if enc.ams_index is None:
            proj = x
        else:
            proj = np.zeros((n, dp))
            for j in range(cfg.dimension):
                proj[:, enc.ams_index[rep, j]] += enc.ams_sign[rep, j] * x[:, j]
        sizes = np.zeros(nb)
        for i in range(n):
            p = 0
            for j in range(k):  # AppendToGrayCode
                p = (p << 1) + (int(sketch[i, j] > 0) ^ (p & 1))
            base = (rep * nb + p) * dp
            out[base : base + dp] += proj[i]
            sizes[p] += 1
        if query:
            continue
        for p in range(nb):
            base = (rep * nb + p) * dp
            if sizes[p] == 0 and k > 0:
                if cfg.fill_empty_partitions:
                    best, best_dist = -1, 1 << 40
                    for i in range(n):  # DistanceToSimHashPartition
                        bits, dist = p ^ (p >> 1), 0
                        for j in range(k - 1, -1, -1):
                            dist += int(sketch[i, j] > 0) != (bits & 1)
                            bits >>= 1
                        if dist < best_dist:
                            best, best_dist = i, dist
                    out[base : base + dp] = proj[best]
                continue
            out[base : base + dp] /= sizes[p]
    if enc.final_index is None:
        return out
    final = np.zeros(cfg.output_dim)
    for i in range(out.shape[0]):
        final[enc.final_index[i]] += enc.final_sign[i] * out[i]
    return final


# --- Gray-code partitions ------------------------------------------------------------------


def test_gray_code_partitions_hand_worked() -> None:
    # Bits b0 b1 b2 (b0 most significant) → partition = binary value of that Gray code.
    table = {
        (0, 0, 0): 0,
        (0, 0, 1): 1,
        (0, 1, 1): 2,
        (0, 1, 0): 3,
        (1, 1, 0): 4,
        (1, 1, 1): 5,
        (1, 0, 1): 6,
        (1, 0, 0): 7,
    }
    sketches = np.array([[1.0 if b else -1.0 for b in bits] for bits in table], dtype=np.float32)
    assert partition_index(sketches).tolist() == list(table.values())
    # and back: the sign bits of partition p are p XOR (p >> 1)
    assert partition_sign_bits(np.arange(8), 3).astype(int).tolist() == [
        list(bits) for bits in table
    ]
    # a zero dot product is not > 0: bit 0, as in the reference
    assert partition_index(np.array([0.0, 1.0, 0.0])).item() == 3  # bits 010


def test_partition_index_matches_append_to_gray_code() -> None:
    rng = np.random.default_rng(3)
    sketch = rng.standard_normal((200, 9))
    expected = []
    for row in sketch:
        p = 0
        for v in row:
            p = (p << 1) + (int(v > 0) ^ (p & 1))
        expected.append(p)
    assert partition_index(sketch).tolist() == expected


# --- golden values: seeds, a small FDE, the fill rule -----------------------------------------


def test_golden_default_matrices() -> None:
    enc = FDEEncoder()
    assert enc.config == FDEConfig()
    assert enc.output_dim == 3936 and enc.config.intermediate_dim == 3936
    assert enc.simhash.shape == (41, 384, 3) and enc.simhash.dtype == np.float32
    np.testing.assert_allclose(
        enc.simhash[0, :3, :].ravel(),
        [
            *(0.0172687, 0.6799254, -0.9039918, -0.9966796, -0.5633558, -0.298054),
            *(0.3412767, -0.6394755, 0.0026511),
        ],
        atol=1e-6,
    )
    np.testing.assert_allclose(enc.simhash[40, 383], [0.3316806, -2.5603, -1.6644758], atol=1e-6)
    assert enc.ams_index is not None and enc.ams_sign is not None
    assert enc.ams_index.dtype == np.int32 and enc.ams_index.shape == (41, 384)
    assert enc.ams_index[0, :10].tolist() == [3, 11, 1, 3, 4, 10, 1, 8, 10, 7]
    assert enc.ams_sign[0, :10].tolist() == [-1, 1, 1, -1, -1, -1, 1, 1, -1, 1]
    assert enc.final_index is None and enc.final_sign is None
    with_final = FDEEncoder(FDEConfig(final_projection_dimension=4000))
    assert with_final.final_index is not None and with_final.final_sign is not None
    assert with_final.final_index.shape == (3936,) and with_final.final_index.dtype == np.int32
    expected_index = [876, 2227, 3438, 2393, 3379, 1888, 1691, 2486, 1368, 3765]
    assert with_final.final_index[:10].tolist() == expected_index
    assert with_final.final_sign[:10].tolist() == [-1, 1, -1, 1, 1, -1, -1, 1, 1, -1]


SMALL = FDEConfig(
    dimension=4,
    num_repetitions=2,
    num_simhash_projections=2,
    projection="ams_sketch",
    projection_dimension=3,
    final_projection_dimension=6,
    seed=7,
)
SMALL_TOKENS = np.array([[1, -2, 0.5, 3], [0, 1, 1, -1], [-2, -1, 0.25, 0.5]], dtype=np.float32)


def test_golden_small_fde() -> None:
    enc = FDEEncoder(SMALL)
    assert enc.ams_index is not None
    assert enc.ams_index.tolist() == [[0, 1, 2, 2], [0, 0, 0, 1]]
    doc = enc.encode_document([SMALL_TOKENS])[0]
    query = enc.encode_query([SMALL_TOKENS])[0]
    np.testing.assert_allclose(doc, [3.0, 9.875, -2.0, -3.0, 0.0, -2.0], atol=1e-5)
    np.testing.assert_allclose(query, [0.0, 6.0, -1.0, -3.0, 0.0, -5.0], atol=1e-5)
    np.testing.assert_allclose(doc, reference_fde(enc, SMALL_TOKENS, query=False), atol=1e-5)
    np.testing.assert_allclose(query, reference_fde(enc, SMALL_TOKENS, query=True), atol=1e-5)


def _hand_encoder(simhash: np.ndarray, fill: bool = True) -> FDEEncoder:
    r, d, k = simhash.shape
    cfg = FDEConfig(
        dimension=d,
        num_repetitions=r,
        num_simhash_projections=k,
        projection="identity",
        fill_empty_partitions=fill,
        final_projection_dimension=None,
    )
    return FDEEncoder.from_arrays(cfg, simhash=simhash.astype(np.float32))


def test_fill_rule_hand_worked_k2() -> None:
    # Sign bits = (x0 > 0, x1 > 0). Partitions: bits 00 → 0, 01 → 1, 11 → 2, 10 → 3.
    enc = _hand_encoder(np.eye(2)[None])
    doc = np.array([[1, 1], [2, 3], [-1, 2]], dtype=np.float32)  # bits 11, 11, 01
    got = enc.encode_document([doc])[0].reshape(4, 2)
    # p0 (bits 00): t2 is 1 bit away, t0/t1 two → t2. p1: t2 alone. p2: mean(t0, t1).
    # p3 (bits 10): t0 and t1 are 1 bit away → the first, t0.
    np.testing.assert_array_equal(got, [[-1, 2], [-1, 2], [1.5, 2], [1, 1]])
    no_fill = _hand_encoder(np.eye(2)[None], fill=False).encode_document([doc])[0]
    np.testing.assert_array_equal(no_fill.reshape(4, 2), [[0, 0], [-1, 2], [1.5, 2], [0, 0]])
    # queries sum and never fill
    np.testing.assert_array_equal(
        enc.encode_query([doc])[0].reshape(4, 2), [[0, 0], [-1, 2], [3, 4], [0, 0]]
    )


def test_fill_rule_uses_p_xor_p_shift_1() -> None:
    # k = 3. t0 has bits 010 (partition 3), t1 bits 111 (partition 5). Empty partition 4 has
    # sign bits 4 ^ 2 = 110: t0 and t1 are both 1 bit away, so t0 (first) fills it. A port
    # that decodes 4 as the bits 111 (prefix XOR, as muvera-python 0.2 does) picks t1.
    enc = _hand_encoder(np.eye(3)[None])
    t0, t1 = [-1.0, 2.0, -3.0], [4.0, 5.0, 6.0]
    got = enc.encode_document([np.array([t0, t1], dtype=np.float32)])[0].reshape(8, 3)
    expected = [t0, t0, t0, t0, t0, t1, t1, t0]  # worked out bit by bit in the docstring
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    k=st.integers(0, 4),
    reps=st.integers(1, 3),
    ams=st.booleans(),
    final=st.sampled_from([None, 7, 50]),
    fill=st.booleans(),
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=4),
)
def test_matches_reference_transcription(
    seed: int, k: int, reps: int, ams: bool, final: int | None, fill: bool, lengths: list[int]
) -> None:
    cfg = FDEConfig(
        dimension=5,
        num_repetitions=reps,
        num_simhash_projections=k,
        projection="ams_sketch" if ams else "identity",
        projection_dimension=3,
        fill_empty_partitions=fill,
        final_projection_dimension=final,
        seed=seed % 1000,
    )
    enc = FDEEncoder(cfg)
    rng = np.random.default_rng(seed)
    sets = [rng.standard_normal((n, 5)).astype(np.float32) for n in lengths]
    docs, queries = enc.encode_document(sets), enc.encode_query(sets)
    for i, s in enumerate(sets):
        np.testing.assert_allclose(docs[i], reference_fde(enc, s, query=False), atol=1e-4)
        np.testing.assert_allclose(queries[i], reference_fde(enc, s, query=True), atol=1e-4)


def test_closed_form_one_partition() -> None:
    # R = 1, k = 0, identity: FDE(q) = sum of q's tokens, FDE(d) = mean of d's tokens.
    cfg = FDEConfig(
        dimension=8,
        num_repetitions=1,
        num_simhash_projections=0,
        projection="identity",
        final_projection_dimension=None,
    )
    enc = FDEEncoder(cfg)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    docs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 4, 11)]
    scores = enc.encode_document(docs) @ enc.encode_query([q])[0]
    expected = [sum(float(t @ d.mean(axis=0)) for t in q) for d in docs]
    scale = [float(np.abs(q).sum(0) @ np.abs(d).mean(0)) for d in docs]
    assert_sums_close(scores, expected, scale, terms=8 + max(len(d) for d in docs))


def test_batching_and_3d_input_do_not_change_results() -> None:
    enc = FDEEncoder(FDEConfig(dimension=16, num_repetitions=5, final_projection_dimension=300))
    rng = np.random.default_rng(1)
    sets = [rng.standard_normal((int(n), 16)).astype(np.float32) for n in rng.integers(1, 50, 40)]
    together = enc.encode_document(sets)
    alone = np.vstack([enc.encode_document([s]) for s in sets])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    cube = rng.standard_normal((6, 7, 16)).astype(np.float32)
    np.testing.assert_allclose(enc.encode_query(cube), enc.encode_query(list(cube)), atol=1e-6)
    assert together.dtype == np.float32 and together.shape == (40, 300)


def test_chunking_over_many_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    import pgembed.vectors.fde as fde_mod

    enc = FDEEncoder(FDEConfig(dimension=8, num_repetitions=3, final_projection_dimension=None))
    rng = np.random.default_rng(2)
    sets = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(1, 30, 50)]
    whole = enc.encode_document(sets)
    monkeypatch.setattr(fde_mod, "_CHUNK_TOKENS", 17)  # many small chunks, one set each
    np.testing.assert_allclose(enc.encode_document(sets), whole, atol=1e-6)
    monkeypatch.setattr(fde_mod, "_CHUNK_TOKENS", 1 << 20)
    monkeypatch.setattr(fde_mod, "_CHUNK_FDE_ELEMENTS", 3 * enc.config.intermediate_dim)
    np.testing.assert_allclose(enc.encode_document(sets), whole, atol=1e-6)  # 3 sets a chunk


# --- parity with muvera-python on the same matrices ----------------------------------------


def _muvera_pair(
    reps: int, k: int, dp: int, final: int | None, seed: int, fill: bool
) -> tuple[FDEEncoder, object]:
    import muvera  # a dev dependency: never skipped
    from muvera.helper import ams_projection_matrix_from_seed, simhash_matrix_from_seed

    d = 32
    cfg = FDEConfig(
        dimension=d,
        num_repetitions=reps,
        num_simhash_projections=k,
        projection_dimension=dp,
        fill_empty_partitions=fill,
        final_projection_dimension=final,
        seed=seed,
    )
    sim = np.stack([simhash_matrix_from_seed(d, k, seed + r) for r in range(reps)])
    ams = np.stack([ams_projection_matrix_from_seed(d, dp, seed + r) for r in range(reps)])
    kw: dict[str, np.ndarray] = {
        "ams_index": np.abs(ams).argmax(axis=2).astype(np.int32),
        "ams_sign": ams.sum(axis=2).astype(np.float32),
    }
    if final is not None:  # muvera draws the count sketch from default_rng(seed)
        rng = np.random.default_rng(seed)
        kw["final_index"] = rng.integers(0, final, size=cfg.intermediate_dim).astype(np.int32)
        kw["final_sign"] = rng.choice(
            np.array([-1.0, 1.0], dtype=np.float32), size=cfg.intermediate_dim
        )
    ours = FDEEncoder.from_arrays(cfg, simhash=sim, **kw)
    theirs = muvera.Muvera(
        num_repetitions=reps,
        num_simhash_projections=k,
        dimension=d,
        projection_type="ams_sketch",
        projection_dimension=dp,
        fill_empty_partitions=fill,
        final_projection_dimension=final,
        seed=seed,
    )
    return ours, theirs


@pytest.mark.parametrize(
    ("reps", "k", "dp", "final", "fill"),
    [(6, 4, 8, None, False), (6, 2, 8, None, True), (5, 4, 8, 500, False), (4, 0, 8, None, True)],
)
def test_parity_with_muvera_python(
    reps: int, k: int, dp: int, final: int | None, fill: bool
) -> None:
    ours, theirs = _muvera_pair(reps, k, dp, final, seed=11, fill=fill)
    rng = np.random.default_rng(5)
    sets = [rng.standard_normal((int(n), 32)).astype(np.float32) for n in rng.integers(1, 40, 30)]
    np.testing.assert_allclose(
        ours.encode_document(sets),
        theirs.encode_documents(sets),
        atol=2e-4,  # type: ignore[attr-defined]
    )
    np.testing.assert_allclose(
        ours.encode_query(sets),
        theirs.encode_queries(sets),
        atol=2e-4,  # type: ignore[attr-defined]
    )


def test_muvera_python_fill_differs_from_reference_for_k3() -> None:
    # Documented divergence: muvera-python 0.2 maps an empty partition to sign bits by a
    # prefix XOR; the reference (and pgembed) use p ^ (p >> 1). Same matrices, k = 3.
    ours, theirs = _muvera_pair(3, 3, 8, None, seed=11, fill=True)
    rng = np.random.default_rng(6)
    sets = [rng.standard_normal((3, 32)).astype(np.float32) for _ in range(20)]
    diff = np.abs(ours.encode_document(sets) - theirs.encode_documents(sets))  # type: ignore[attr-defined]
    assert diff.max() > 0.1
    for s in sets:  # while ours follows the reference transcription
        np.testing.assert_allclose(
            ours.encode_document([s])[0], reference_fde(ours, s, query=False), atol=1e-4
        )


# --- serialization and determinism -----------------------------------------------------------


def test_to_bytes_round_trip_is_lossless() -> None:
    for cfg in (
        FDEConfig(),
        FDEConfig(dimension=8, projection="identity", final_projection_dimension=None),
        FDEConfig(dimension=8, num_simhash_projections=0, final_projection_dimension=77, seed=5),
    ):
        enc = FDEEncoder(cfg)
        blob = enc.to_bytes()
        back = FDEEncoder.from_bytes(blob)
        assert back == enc and back.config == cfg
        assert back.to_bytes() == blob
        for name, arr in enc.arrays().items():
            other = getattr(back, name)
            assert (arr is None) == (other is None), name
            if arr is not None:
                assert arr.dtype == other.dtype and np.array_equal(arr, other)
    assert FDEEncoder(FDEConfig(seed=1)) != FDEEncoder(FDEConfig(seed=2))


def test_from_arrays_equals_generated() -> None:
    enc = FDEEncoder(FDEConfig(dimension=6, num_repetitions=2, final_projection_dimension=9))
    again = FDEEncoder.from_arrays(enc.config, **{k: v for k, v in enc.arrays().items()})
    assert again == enc
    tokens = [np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)]
    np.testing.assert_array_equal(again.encode_query(tokens), enc.encode_query(tokens))


_CHILD = """
import hashlib, numpy as np
from pgembed.vectors.fde import FDEConfig, FDEEncoder
enc = FDEEncoder(FDEConfig())
x = np.random.default_rng(9).standard_normal((2, 50, 384)).astype(np.float32)
print(hashlib.sha256(enc.to_bytes()).hexdigest())
print(hashlib.sha256(enc.encode_document(x).tobytes()).hexdigest())
"""


def test_deterministic_across_processes() -> None:
    enc = FDEEncoder(FDEConfig())
    x = np.random.default_rng(9).standard_normal((2, 50, 384)).astype(np.float32)
    mine = [
        hashlib.sha256(enc.to_bytes()).hexdigest(),
        hashlib.sha256(enc.encode_document(x).tobytes()).hexdigest(),
    ]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == mine


# --- torch path -----------------------------------------------------------------------------


def test_vectors_never_import_torch() -> None:
    code = (
        "import sys, pkgutil, importlib, pgembed.vectors as v\n"
        "for m in pkgutil.iter_modules(v.__path__):\n"
        "    importlib.import_module(f'{v.__name__}.{m.name}')\n"
        "heavy = ('torch', 'onnxruntime', 'sqlalchemy')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_cpu_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    sets = [rng.standard_normal((int(n), 24)).astype(np.float32) for n in rng.integers(1, 40, 25)]
    for cfg in (
        FDEConfig(dimension=24, num_repetitions=6, final_projection_dimension=500),
        FDEConfig(
            dimension=24, num_repetitions=3, projection="identity", final_projection_dimension=None
        ),
        FDEConfig(dimension=24, num_repetitions=3, num_simhash_projections=0),
    ):
        enc = FDEEncoder(cfg)
        for query in (True, False):
            fn = enc.encode_query if query else enc.encode_document
            on_torch = fde_torch.encode_query if query else fde_torch.encode_document
            np.testing.assert_allclose(on_torch(enc, sets, device="cpu"), fn(sets), atol=1e-4)


def test_cuda_matches_numpy_or_is_a_clear_error() -> None:
    import torch

    enc = FDEEncoder(SMALL)
    if torch.cuda.is_available():
        got = fde_torch.encode_query(enc, [SMALL_TOKENS], device="cuda")
        np.testing.assert_allclose(got, enc.encode_query([SMALL_TOKENS]), atol=1e-4)
        return
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        fde_torch.encode_query(enc, [SMALL_TOKENS], device="cuda")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_simhash_projections", 31, "num_simhash_projections=31"),
        ("num_simhash_projections", -1, r"\[0, 30\]"),
        ("num_repetitions", 0, "num_repetitions=0"),
        ("dimension", True, "dimension=True"),
        ("projection", "gaussian", "'identity' or 'ams_sketch'"),
        ("projection_dimension", 0, "projection_dimension=0"),
        ("final_projection_dimension", 0, "final_projection_dimension=0"),
        ("fill_empty_partitions", "yes", "must be a bool"),
        ("seed", -1, "seed=-1"),
        ("seed", 1.5, "seed=1.5"),
    ],
)
def test_config_errors_carry_the_value(field: str, value: object, match: str) -> None:
    with pytest.raises(FDEConfigError, match=match) as info:
        FDEConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field  # type: ignore[attr-defined]
    assert info.value.value == value  # type: ignore[attr-defined]
    assert isinstance(info.value, PgembedError) and isinstance(info.value, ValueError)


def test_config_refuses_oversized_intermediate() -> None:
    with pytest.raises(FDEConfigError, match="exceeds"):
        FDEConfig(num_repetitions=1000, num_simhash_projections=30)


def test_config_dims() -> None:
    cfg = FDEConfig(num_repetitions=20, num_simhash_projections=5, projection_dimension=16)
    assert (cfg.num_partitions, cfg.block_dim, cfg.intermediate_dim) == (32, 16, 10240)
    assert cfg.output_dim == 10240
    assert FDEConfig(projection="identity", dimension=8).block_dim == 8
    assert FDEConfig().output_dim == 3936
    assert FDEConfig(final_projection_dimension=4000).output_dim == 4000


@pytest.mark.parametrize("query", [True, False])
def test_bad_token_sets(query: bool) -> None:
    enc = FDEEncoder(SMALL)
    encode = enc.encode_query if query else enc.encode_document
    kind = "query" if query else "document"
    ok = SMALL_TOKENS
    with pytest.raises(EmptyInputError, match=f"{kind} 1 is empty"):
        encode([ok, np.zeros((0, 4), dtype=np.float32)])
    with pytest.raises(EmptyInputError, match="batch"):
        encode([])
    bad = ok.copy()
    bad[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match=f"{kind} 1 holds NaN or infinity"):
        encode([ok, bad])
    bad[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match="token 1"):
        encode([ok, bad])
    with pytest.raises(DimensionError, match="5 dims per token, expected 4"):
        encode([np.ones((2, 5), dtype=np.float32)])
    with pytest.raises(DimensionError, match="wrap a single"):
        encode(ok)
    with pytest.raises(DimensionError, match="must be 2-D"):
        encode([ok[0]])


def test_from_arrays_and_bytes_errors() -> None:
    enc = FDEEncoder(SMALL)
    arrays = enc.arrays()
    with pytest.raises(DimensionError, match="simhash has shape"):
        FDEEncoder.from_arrays(SMALL, **{**arrays, "simhash": np.zeros((2, 4, 3))})
    with pytest.raises(InputError, match=r"ams_index values must be in \[0, 3\)"):
        FDEEncoder.from_arrays(SMALL, **{**arrays, "ams_index": np.full((2, 4), 3)})
    with pytest.raises(InputError, match="final_sign must hold only -1 and \\+1"):
        FDEEncoder.from_arrays(SMALL, **{**arrays, "final_sign": np.full(24, 0.5)})
    with pytest.raises(InputError, match="final_index is required"):
        FDEEncoder.from_arrays(SMALL, **{**arrays, "final_index": None})
    with pytest.raises(InputError, match="simhash holds NaN"):
        FDEEncoder.from_arrays(SMALL, **{**arrays, "simhash": np.full((2, 4, 2), np.nan)})
    blob = enc.to_bytes()
    with pytest.raises(InputError, match="bad magic"):
        FDEEncoder.from_bytes(b"nope" + blob)
    with pytest.raises(InputError, match="cut short"):
        FDEEncoder.from_bytes(blob[:-1])
    with pytest.raises(InputError, match="trailing"):
        FDEEncoder.from_bytes(blob + b"\0")


@pytest.mark.parametrize("slab", [1 << 22, 7])
def test_fill_paths_agree_with_reference_for_larger_k(
    slab: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long sets → fill by partition; short sets with 64 partitions → fill by token. A tiny
    # slab forces many partition slabs. All must equal the reference transcription.
    import pgembed.vectors.fde as fde_mod

    monkeypatch.setattr(fde_mod, "_FILL_SLAB", slab)
    cfg = FDEConfig(
        dimension=6, num_repetitions=2, num_simhash_projections=6, projection_dimension=4
    )
    enc = FDEEncoder(cfg)
    rng = np.random.default_rng(8)
    for lengths in ([200, 150], [3, 1, 5]):
        sets = [rng.standard_normal((n, 6)).astype(np.float32) for n in lengths]
        got = enc.encode_document(sets)
        for i, s in enumerate(sets):
            np.testing.assert_allclose(got[i], reference_fde(enc, s, query=False), atol=1e-4)


def test_partitions_method() -> None:
    enc = FDEEncoder(FDEConfig(dimension=8, num_repetitions=3, num_simhash_projections=4))
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    got = enc.partitions(x)
    assert got.shape == (5, 3)
    for r in range(3):
        assert got[:, r].tolist() == partition_index(x @ enc.simhash[r]).tolist()


def test_numpy_integer_fields_serialize() -> None:
    cfg = FDEConfig(dimension=np.int64(8), num_repetitions=np.int32(2), seed=np.uint16(3))  # type: ignore[arg-type]
    enc = FDEEncoder(cfg)
    back = FDEEncoder.from_bytes(enc.to_bytes())
    assert back == enc and back.config.to_dict()["dimension"] == 8
    assert type(back.config.dimension) is int
