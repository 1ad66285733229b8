"""Delta compression: top-k and 8-bit codecs, byte layout, strict decoding, error feedback."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest

from fltorrent.errors import LearnError
from fltorrent.learn.compress import (
    CompressionError,
    ErrorFeedback,
    decode,
    encode_q8,
    encode_topk,
    encoded_size_bound,
    raw_size,
    topk_count,
)


def _gauss(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


# --- top-k ---------------------------------------------------------------------------------


def test_topk_keeps_exactly_the_largest_magnitudes() -> None:
    delta = _gauss(1000)
    data, sent = encode_topk(delta, 0.1)
    top = np.argsort(-np.abs(delta))[:100]
    assert set(np.flatnonzero(sent)) == set(top.tolist())
    np.testing.assert_array_equal(sent[top], delta[top].astype(np.float32))
    assert np.all(np.delete(sent, top) == 0.0)
    np.testing.assert_array_equal(decode(data, 1000), sent)
    # the smallest kept magnitude is at least the largest dropped one
    assert np.abs(delta[top]).min() >= np.abs(np.delete(delta, top)).max()


def test_topk_size_matches_layout_and_index_width() -> None:
    data, _ = encode_topk(_gauss(1000), 0.1)
    assert len(data) == 1 + 1 + 4 + 4 + 100 * 2 + 100 * 4 == encoded_size_bound(1000, "topk", 0.1)
    assert data[:6] == bytes([1, 0]) + struct.pack(">I", 1000)
    assert struct.unpack_from("<I", data, 6) == (100,)
    idx = np.frombuffer(data, dtype="<u2", count=100, offset=10)
    assert np.all(np.diff(idx.astype(np.int64)) > 0)

    edge, _ = encode_topk(_gauss(65536), 0.01)  # still fits uint16 indices
    assert edge[1] == 0 and len(edge) == 10 + 655 * 6

    n = 70_000
    big, sent = encode_topk(_gauss(n, 1), 0.01)
    assert big[1] == 1  # uint32 indices
    assert len(big) == 10 + 700 * (4 + 4) == encoded_size_bound(n, "topk", 0.01)
    np.testing.assert_array_equal(decode(big, n), sent)


def test_topk_count_and_ratio_validation() -> None:
    assert topk_count(1000, 0.1) == 100
    assert topk_count(5, 0.01) == 1  # at least one coordinate
    assert topk_count(7, 1.0) == 7
    assert topk_count(0, 0.5) == 0
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            encode_topk(_gauss(10), bad)
        with pytest.raises(ValueError, match="ratio"):
            ErrorFeedback("topk", ratio=bad)


def test_empty_and_zero_vectors_round_trip() -> None:
    for encode in (lambda v: encode_topk(v, 0.1), encode_q8):
        data, sent = encode(np.zeros(0))
        assert sent.size == 0 and decode(data, 0).size == 0
        data, sent = encode(np.zeros(37))
        np.testing.assert_array_equal(decode(data, 37), np.zeros(37))
        np.testing.assert_array_equal(sent, np.zeros(37))
    assert len(encode_q8(np.zeros(0))[0]) == 14 == encoded_size_bound(0, "q8", 0.1)


# --- q8 ------------------------------------------------------------------------------------


def test_q8_error_is_at_most_half_a_step() -> None:
    delta = _gauss(10_000) * 1e-3
    data, sent = encode_q8(delta)
    assert len(data) == 14 + 10_000 == encoded_size_bound(10_000, "q8", 0.1)
    lo, hi = struct.unpack_from("<ff", data, 6)
    assert lo <= delta.min() and hi >= delta.max()
    half_step = (hi - lo) / 255 / 2
    assert np.max(np.abs(sent - delta)) <= half_step * (1 + 1e-9)
    np.testing.assert_array_equal(decode(data, 10_000), sent)


@pytest.mark.parametrize("value", [0.0, -0.375, 2.0**-20, float(np.float32(0.1))])
def test_q8_constant_vector_is_exact(value: float) -> None:
    delta = np.full(64, value)
    data, sent = encode_q8(delta)
    lo, hi = struct.unpack_from("<ff", data, 6)
    assert lo == hi == value
    np.testing.assert_array_equal(sent, delta)
    np.testing.assert_array_equal(decode(data, 64), delta)


def test_q8_constant_vector_not_a_float32_is_within_one_float32_ulp() -> None:
    delta = np.full(64, 0.1)  # lo and hi are the float32 neighbours of 0.1
    _, sent = encode_q8(delta)
    assert np.max(np.abs(sent - delta)) <= np.spacing(np.float32(0.1))


def test_q8_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1234)
    step = 2.0 / 255
    # endpoints fix lo = -1, hi = 1; the rest sit 0.3 of a step above a level
    delta = np.concatenate(([-1.0, 1.0], -1.0 + (np.arange(1, 201) + 0.3) * step))
    draws = 2000
    total = np.zeros_like(delta)
    for _ in range(draws):
        data, sent = encode_q8(delta, rng)
        total += sent
    mean_err = total / draws - delta
    # per draw the error is within one step; the mean of 2000 has sd <= step / 2 / sqrt(2000)
    assert np.max(np.abs(mean_err)) < 0.1 * step
    assert abs(mean_err.mean()) < 0.01 * step
    biased = encode_q8(delta)[1] - delta  # round-to-nearest always loses the 0.3 step
    np.testing.assert_allclose(biased[2:], -0.3 * step, rtol=1e-6)
    np.testing.assert_array_equal(decode(data, delta.size), sent)


def test_encoders_reject_non_finite_or_unrepresentable_deltas() -> None:
    for bad in (np.array([1.0, np.nan]), np.array([np.inf]), np.array([1e39, 0.0])):
        with pytest.raises(CompressionError, match="non-finite"):
            encode_topk(bad, 0.5)
        with pytest.raises(CompressionError, match="non-finite"):
            encode_q8(bad)
    with pytest.raises(ValueError, match="1-D"):
        encode_q8(np.zeros((2, 2)))
    assert issubclass(CompressionError, LearnError)


# --- strict decoding -----------------------------------------------------------------------


def _topk(n: int, idx: list[int], values: list[float], *, flags: int = 0, k: int = -1) -> bytes:
    fmt = "I" if flags & 1 else "H"
    head = struct.pack(">BBI", 1, flags, n) + struct.pack("<I", len(idx) if k < 0 else k)
    return head + struct.pack(f"<{len(idx)}{fmt}", *idx) + struct.pack(f"<{len(values)}f", *values)


def _q8(n: int, lo: float, hi: float, *, flags: int = 0) -> bytes:
    return struct.pack(">BBI", 2, flags, n) + struct.pack("<ff", lo, hi) + bytes(range(n))


GOOD_TOPK = _topk(10, [1, 4, 9], [0.5, -2.0, 3.0])
GOOD_Q8 = _q8(10, -1.0, 1.0)

MALFORMED: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", "truncated header"),
    "short header": (lambda: GOOD_TOPK[:5], "truncated header"),
    "topk without k": (lambda: GOOD_TOPK[:8], "truncated topk header"),
    "topk truncated": (lambda: GOOD_TOPK[:-1], "layout needs"),
    "topk trailing": (lambda: GOOD_TOPK + b"\x00", "layout needs"),
    "q8 truncated": (lambda: GOOD_Q8[:-1], "layout needs"),
    "q8 trailing": (lambda: GOOD_Q8 + b"\x00", "layout needs"),
    "q8 without range": (lambda: GOOD_Q8[:10], "layout needs"),
    "unknown codec 0": (lambda: b"\x00" + GOOD_Q8[1:], "unknown codec id 0"),
    "unknown codec 3": (lambda: b"\x03" + GOOD_Q8[1:], "unknown codec id 3"),
    "topk bad flags": (lambda: _topk(10, [1], [1.0], flags=0x02), "bad flags"),
    "topk u32 for small n": (lambda: _topk(10, [1], [1.0], flags=0x01), "not canonical"),
    "topk u16 for big n": (lambda: _topk(70_000, [1], [1.0])[:6], "not canonical"),
    "q8 bad flags": (lambda: _q8(10, -1.0, 1.0, flags=0x01), "bad flags"),
    "length mismatch": (lambda: _topk(11, [1], [1.0]), "length mismatch"),
    "k zero": (lambda: _topk(10, [], []), "bad k=0"),
    "k above n": (lambda: _topk(10, [], [], k=11), "bad k=11"),
    "unsorted": (lambda: _topk(10, [4, 1], [1.0, 2.0]), "strictly increasing"),
    "duplicate": (lambda: _topk(10, [4, 4], [1.0, 2.0]), "strictly increasing"),
    "out of range": (lambda: _topk(10, [3, 10], [1.0, 2.0]), "out of range"),
    "topk nan": (lambda: _topk(10, [3], [float("nan")]), "NaN or infinity"),
    "topk inf": (lambda: _topk(10, [3, 5], [1.0, float("-inf")]), "NaN or infinity"),
    "q8 nan lo": (lambda: _q8(10, float("nan"), 1.0), "not finite"),
    "q8 inf hi": (lambda: _q8(10, 0.0, float("inf")), "not finite"),
    "q8 lo above hi": (lambda: _q8(10, 1.0, -1.0), "inverted"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_decode_rejects_malformed(case: str) -> None:
    build, message = MALFORMED[case]
    expected = 70_000 if "big n" in case else 10
    with pytest.raises(CompressionError, match=message):
        decode(build(), expected)


def test_decode_accepts_the_hand_built_encodings() -> None:
    out = decode(GOOD_TOPK, 10)
    np.testing.assert_array_equal(out, [0, 0.5, 0, 0, -2.0, 0, 0, 0, 0, 3.0])
    np.testing.assert_allclose(decode(GOOD_Q8, 10), -1.0 + np.arange(10) * 2 / 255)
    assert decode(memoryview(bytearray(GOOD_Q8)), 10).dtype == np.float64


# --- error feedback ------------------------------------------------------------------------


def _two_scale_delta() -> np.ndarray:
    delta = np.full(100, 0.01)
    delta[::10] = 1.0  # 10 large coordinates, exactly what k = 10 keeps
    return delta


def test_topk_without_feedback_loses_small_coordinates_forever() -> None:
    delta, rounds = _two_scale_delta(), 300
    ef = ErrorFeedback("topk", ratio=0.1, enabled=False)
    total = sum((decode(ef.compress(0, delta), 100) for _ in range(rounds)), np.zeros(100))
    small = delta < 0.5
    assert np.all(total[small] == 0.0)  # never sent: the loss grows as T * 0.01
    np.testing.assert_array_equal(total[~small], rounds * 1.0)
    assert ef.residual_norm(0) == 0.0


def test_topk_with_feedback_transmits_the_cumulative_sum() -> None:
    delta = _two_scale_delta()
    ef = ErrorFeedback("topk", ratio=0.1)
    # Stich et al.: top-k is contractive, |x - C(x)|^2 <= (1 - k/n) |x|^2, so with a constant
    # delta the residual stays below sqrt(1 - d) / (1 - sqrt(1 - d)) |delta|, d = k/n.
    c = np.sqrt(1 - 0.1)
    bound = c / (1 - c) * np.linalg.norm(delta) * (1 + 1e-6)
    total = np.zeros(100)
    for t in range(1, 1001):
        total += decode(ef.compress(7, delta), 100)
        res = ef.residual(7)
        assert res is not None
        np.testing.assert_allclose(total + res, t * delta, rtol=1e-9, atol=1e-9)
        assert ef.residual_norm(7) <= bound
    small = delta < 0.5
    # after 1000 rounds each small coordinate has sent ~10.0 of its 10.0, within the residual
    assert np.all(total[small] > 0)
    assert np.max(np.abs(total - 1000 * delta)) <= bound
    assert np.max(np.abs(total[small] - 10.0)) < 1.5
    ef.reset()
    assert ef.residual_norm(7) == 0.0


def test_q8_feedback_residual_stays_within_half_a_step() -> None:
    delta = _gauss(500, 3)
    ef = ErrorFeedback("q8")
    total = np.zeros(500)
    for t in range(1, 51):
        total += decode(ef.compress(0, delta), 500)
        res = ef.residual(0)
        assert res is not None and np.max(np.abs(res)) <= (delta.max() - delta.min()) / 255
        np.testing.assert_allclose(total + res, t * delta, atol=1e-9)
    step = (delta.max() - delta.min()) / 255
    assert np.max(np.abs(total - 50 * delta)) <= step  # not 50 half-steps: errors cancel


def test_error_feedback_configuration() -> None:
    with pytest.raises(ValueError, match="lossy codec"):
        ErrorFeedback("none")
    ef = ErrorFeedback("q8", stochastic=True, seed=5)
    first = [ef.compress(i, _gauss(50, i)) for i in range(3)]
    ef.reset()
    assert [ef.compress(i, _gauss(50, i)) for i in range(3)] == first  # seeded, reproducible
    with pytest.raises(ValueError, match="residual"):
        ef.compress(0, np.zeros(51))
    assert raw_size(10_000) == 40_000
    with pytest.raises(ValueError, match="codec"):
        encoded_size_bound(10, "none", 0.1)
