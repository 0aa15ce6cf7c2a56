"""Binary codes: pgvector's bit rule and layout, bit text, residual levels, distances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgembed.errors import DimensionError, InputError, NonFiniteError
from pgembed.vectors.binary import (
    ResidualCode,
    binary_quantize,
    bit_text,
    bit_texts,
    hamming_distance,
    pack_bits,
    pack_residual,
    parse_bit_text,
    residual_decode,
    residual_distance,
    residual_encode,
    residual_from_packed,
    residual_inner_product,
    residual_packed,
    residual_score,
    residual_texts,
    unpack_bits,
)


def test_binary_quantize_follows_pgvector() -> None:
    # pgvector: binary_quantize('[1,-2,0,3.5,-0.1,0,0,7,2]') = '100100011' (bit i: v[i] > 0)
    v = np.array([1, -2, 0, 3.5, -0.1, 0, 0, 7, 2], dtype=np.float32)
    packed = binary_quantize(v)
    assert packed.tolist() == [0b10010001, 0b10000000]  # big-endian, zero padded
    assert bit_text(unpack_bits(packed, 9)) == "100100011"
    batch = binary_quantize(np.stack([v, -v]))
    assert batch.shape == (2, 2)
    assert bit_texts(unpack_bits(batch, 9)) == ["100100011", "010010000"]


def test_bit_text_parse() -> None:
    assert parse_bit_text("0110").tolist() == [False, True, True, False]
    assert parse_bit_text("").shape == (0,)
    with pytest.raises(InputError, match="found '2' at 3"):
        parse_bit_text("0102")
    with pytest.raises(InputError, match="found 'é' at 1"):
        parse_bit_text("1é")
    with pytest.raises(DimensionError, match="one code"):
        bit_text(np.zeros((2, 3), dtype=bool))
    with pytest.raises(InputError, match="0/1"):
        pack_bits(np.array([0, 2, 1]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=200))
def test_bit_text_and_packing_round_trip(bits: list[bool]) -> None:
    arr = np.array(bits, dtype=bool)
    text = bit_text(arr)
    assert text == "".join("1" if b else "0" for b in bits)
    assert parse_bit_text(text).tolist() == bits
    packed = pack_bits(arr)
    assert packed.shape == ((len(bits) + 7) // 8,)
    assert unpack_bits(packed, len(bits)).tolist() == bits
    # bit i is bit 7 - i % 8 of byte i // 8 (PostgreSQL's bit layout)
    for i, b in enumerate(bits):
        assert ((int(packed[i // 8]) >> (7 - i % 8)) & 1) == int(b)


def test_hamming_matches_naive() -> None:
    rng = np.random.default_rng(0)
    a_bits = rng.random((7, 77)) > 0.5
    b_bits = rng.random((11, 77)) > 0.5
    got = hamming_distance(pack_bits(a_bits), pack_bits(b_bits))
    naive = [[sum(x != y for x, y in zip(a, b, strict=True)) for b in b_bits] for a in a_bits]
    assert got.tolist() == naive
    assert hamming_distance(pack_bits(a_bits[0]), pack_bits(b_bits)).shape == (1, 11)
    with pytest.raises(DimensionError, match="differ in length"):
        hamming_distance(pack_bits(a_bits), pack_bits(b_bits[:, :70]))
    with pytest.raises(InputError, match="packed uint8"):
        hamming_distance(a_bits, b_bits)


def test_residual_levels_follow_the_definition() -> None:
    x = np.array([[0.9, -0.3, 0.2, -0.8]], dtype=np.float32)
    code = residual_encode(x, 2)
    # level 0: sign(x) = + - + -, scale mean|x| = 0.55
    s0 = 0.55
    np.testing.assert_allclose(code.scales[0, 0], s0, rtol=1e-6)
    r1 = x[0] - s0 * np.array([1, -1, 1, -1])  # 0.35, 0.25, -0.35, -0.25
    assert code.signs()[0, 0].tolist() == [1, -1, 1, -1]
    assert code.signs()[0, 1].tolist() == [1, 1, -1, -1]
    np.testing.assert_allclose(code.scales[0, 1], np.abs(r1).mean(), rtol=1e-6)
    np.testing.assert_allclose(
        residual_decode(code)[0],
        s0 * np.array([1, -1, 1, -1]) + 0.3 * np.array([1, 1, -1, -1]),
        rtol=1e-6,
    )
    # stored as bit(2*4): level 0 first
    assert residual_texts(code) == ["10101100"]
    assert residual_packed(code).tolist() == [[0b10101100]]


def test_residual_error_decreases_with_bits() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    errors = [
        float(np.mean(np.sum((residual_decode(residual_encode(x, b)) - x) ** 2, axis=1)))
        for b in (1, 2, 3, 4, 6)
    ]
    assert all(e1 > e2 for e1, e2 in itertools.pairwise(errors)), errors
    # 1 bit keeps about 2/pi of the energy for Gaussian coordinates; 6 bits almost all
    assert 0.3 < errors[0] < 0.42
    assert errors[-1] < 0.03


def test_residual_pack_round_trip_and_distances() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 37)).astype(np.float32)
    b = rng.standard_normal((6, 37)).astype(np.float32)
    ca, cb = residual_encode(a, 3), residual_encode(b, 3)
    packed = residual_packed(ca)
    assert packed.shape == (5, (3 * 37 + 7) // 8)
    assert np.array_equal(pack_residual(a, 3), packed)
    back = residual_from_packed(packed, ca.scales, 37)
    assert np.array_equal(back.levels, ca.levels) and np.array_equal(back.scales, ca.scales)
    texts = residual_texts(ca)
    assert all(len(t) == 111 for t in texts)
    assert np.array_equal(pack_bits(np.stack([parse_bit_text(t) for t in texts])), packed)
    ra, rb = residual_decode(ca).astype(np.float64), residual_decode(cb).astype(np.float64)
    np.testing.assert_allclose(residual_inner_product(ca, cb), ra @ rb.T, rtol=1e-4, atol=1e-4)
    sq = ((ra[:, None, :] - rb[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(residual_distance(ca, cb), sq, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(residual_score(a, cb), a @ rb.T, rtol=1e-4, atol=1e-4)
    # more bits: the symmetric estimate gets closer to the true inner product
    true = a.astype(np.float64) @ b.T.astype(np.float64)
    err1 = np.abs(residual_inner_product(residual_encode(a, 1), residual_encode(b, 1)) - true)
    err4 = np.abs(residual_inner_product(residual_encode(a, 4), residual_encode(b, 4)) - true)
    assert err4.mean() < 0.5 * err1.mean()


def test_residual_bad_input() -> None:
    x = np.ones((2, 8), dtype=np.float32)
    with pytest.raises(InputError, match=r"bits must be \[1, 16\], got 0"):
        residual_encode(x, 0)
    with pytest.raises(InputError, match="bits must be"):
        residual_encode(x, 17)
    x[1, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"NaN or infinity \(first at index \(1, 3\)\)"):
        residual_encode(x, 2)
    with pytest.raises(NonFiniteError, match="NaN"):
        binary_quantize(np.array([1.0, np.inf]))
    with pytest.raises(DimensionError, match="does not match"):
        ResidualCode(
            levels=np.zeros((1, 2, 1), np.uint8), scales=np.zeros((1, 3), np.float32), dim=8
        )
    c8, c9 = residual_encode(np.ones((1, 8)), 2), residual_encode(np.ones((1, 9)), 2)
    with pytest.raises(DimensionError, match="differ in dim: 8 vs 9"):
        residual_inner_product(c8, c9)
    with pytest.raises(DimensionError, match="need 2 bytes"):
        unpack_bits(np.zeros(3, dtype=np.uint8), 9)
