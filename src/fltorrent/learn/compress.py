"""Lossy compression of a chunk's update delta, with error feedback, for low-end devices.

Theory of operation
-------------------
A peer's update for one chunk is the float64 vector ``delta = new - base`` (``n`` elements, see
:meth:`fltorrent.learn.ChunkPlan.chunk_to_vector`). Instead of the raw chunk bytes (``4 n`` for
float32 parameters, :func:`raw_size`) a peer may send a lossy encoding of ``delta``:

* ``topk`` keeps the ``k = clamp(round(ratio * n), 1, n)`` coordinates of largest magnitude
  (:func:`topk_count`; ``k = 0`` only when ``n = 0``) as sorted indices plus float32 values.
* ``q8`` maps each coordinate affinely onto 256 levels between the chunk's float32 ``lo``
  (rounded down) and ``hi`` (rounded up): ``x ~ lo + q * (hi - lo) / 255`` with ``q`` a uint8,
  rounded to nearest (error <= half a step) or stochastically (unbiased) when given a seeded
  :class:`numpy.random.Generator`. A constant chunk (``lo == hi``) decodes exactly if its value
  is a float32.
* ``none`` (config only) is the uncompressed chunk, handled by the caller.

Both encoders return the bytes *and* the dense float64 vector the receiver will decode
(bit-identical to :func:`decode`), so the sender knows exactly what it lost. :class:`ErrorFeedback`
keeps that loss per chunk and adds it to the next round's delta (``e' = delta + e - decoded``), so
coordinates that top-k drops are delayed, not lost: over T rounds the sum of what was sent equals
the sum of the deltas minus one bounded residual (Stich, Cordonnier and Jaggi, "Sparsified SGD
with Memory", NeurIPS 2018; Karimireddy, Rebjock, Stich and Jaggi, "Error Feedback Fixes
SignSGD and other Gradient Compression Schemes", ICML 2019).

Byte layout
-----------
Encoded chunks come from remote, possibly malicious peers; :func:`decode` accepts exactly this
layout and raises :class:`CompressionError` for anything else (missing or trailing bytes, unknown
codec id, non-zero reserved flag bits, a non-canonical index width, a length other than the
expected one, a bad ``k``, indices not strictly increasing or out of range, non-finite floats,
``lo > hi``).

======  ====================  ===========================================================
Offset  Size                  Field
======  ====================  ===========================================================
0       1                     codec id: 1 = topk, 2 = q8
1       1                     flags: bit 0 = uint32 indices (topk only; set iff n > 65536);
                              bits 1-7 must be zero
2       4                     n, vector length, uint32 **big-endian**; must equal the
                              length the receiver expects
*topk*
6       4                     k, uint32 little-endian; 1 <= k <= n (k = 0 iff n = 0)
10      k * w                 indices, little-endian uint16 (w = 2) or uint32 (w = 4),
                              strictly increasing, < n
10+k*w  k * 4                 values, little-endian float32, finite
*q8*
6       4                     lo, little-endian float32, finite
10      4                     hi, little-endian float32, finite, lo <= hi
14      n                     q, uint8; coordinate i decodes to lo + q[i] * (hi - lo) / 255
======  ====================  ===========================================================

Sizes: topk ``10 + k (w + 4)`` (n = 1000, ratio 0.1: 610 bytes against 4000), q8 ``14 + n``.
"""

from __future__ import annotations

import math
import struct
from typing import Literal

import numpy as np
import numpy.typing as npt

from fltorrent.errors import LearnError

Codec = Literal["none", "topk", "q8"]
Vector = npt.NDArray[np.float64]

TOPK_ID = 1
Q8_ID = 2
FLAG_U32_INDICES = 0x01
MAX_U16_LENGTH = 65536
_HEADER = struct.Struct(">BBI")
_U32 = struct.Struct("<I")
_LOHI = struct.Struct("<ff")
_F32_MAX = float(np.finfo(np.float32).max)


class CompressionError(LearnError):
    """An encoded chunk is malformed, or a delta cannot be encoded."""


def raw_size(n: int) -> int:
    """Bytes of ``n`` uncompressed float32 parameters, the baseline for savings."""
    return 4 * n


def topk_count(n: int, ratio: float) -> int:
    """How many coordinates ``topk`` keeps: ``round(ratio * n)`` clamped to [1, n] (0 if n = 0)."""
    _check_ratio(ratio)
    return min(n, max(1, math.floor(ratio * n + 0.5)))


def encoded_size_bound(n: int, codec: Codec, ratio: float) -> int:
    """Largest encoding our encoder produces for an ``n``-element chunk (exact for n > 0).

    ``none`` raises :class:`ValueError`: uncompressed chunk sizes depend on the parameter dtypes
    and come from the chunk plan.
    """
    if n < 0:
        raise ValueError(f"negative length {n}")
    if codec == "topk":
        return _HEADER.size + 4 + topk_count(n, ratio) * (_index_width(n) + 4)
    if codec == "q8":
        return _HEADER.size + _LOHI.size + n
    raise ValueError(f"no encoded size bound for codec {codec!r}")


def encode_topk(delta: npt.ArrayLike, ratio: float) -> tuple[bytes, Vector]:
    """Top-k sparsification: (encoded bytes, the dense vector the receiver decodes)."""
    vec = _as_delta(delta)
    n = vec.size
    k = topk_count(n, ratio)
    if k == n:
        idx = np.arange(n, dtype=np.int64)
    else:
        idx = np.sort(np.argpartition(np.abs(vec), n - k)[n - k :])
    values = vec[idx].astype("<f4")
    width = _index_width(n)
    flags = FLAG_U32_INDICES if width == 4 else 0
    data = b"".join(
        (
            _HEADER.pack(TOPK_ID, flags, n),
            _U32.pack(k),
            idx.astype("<u4" if width == 4 else "<u2").tobytes(),
            values.tobytes(),
        )
    )
    out = np.zeros(n, dtype=np.float64)
    out[idx] = values
    return data, out


def encode_q8(delta: npt.ArrayLike, rng: np.random.Generator | None = None) -> tuple[bytes, Vector]:
    """8-bit quantization (round to nearest, or stochastic with ``rng``): (bytes, decoded)."""
    vec = _as_delta(delta)
    n = vec.size
    lo = hi = np.float32(0.0)
    if n:
        lo, hi = np.float32(vec.min()), np.float32(vec.max())
        if float(lo) > vec.min():
            lo = np.nextafter(lo, np.float32(-np.inf))
        if float(hi) < vec.max():
            hi = np.nextafter(hi, np.float32(np.inf))
    step = (float(hi) - float(lo)) / 255.0
    scaled = (vec - float(lo)) / step if step > 0 else np.zeros(n)
    rounded = np.rint(scaled) if rng is None else np.floor(scaled + rng.random(n))
    q = np.clip(rounded, 0, 255).astype(np.uint8)
    data = _HEADER.pack(Q8_ID, 0, n) + _LOHI.pack(lo, hi) + q.tobytes()
    return data, _dequantize(float(lo), float(hi), q)


def decode(data: bytes | bytearray | memoryview, expected_length: int) -> Vector:
    """The dense float64 delta of an encoded chunk; strict, see the module docstring."""
    buf = memoryview(data).cast("B")
    if len(buf) < _HEADER.size:
        raise CompressionError(f"truncated header: {len(buf)} of {_HEADER.size} bytes")
    codec_id, flags, n = _HEADER.unpack_from(buf)
    if n != expected_length:
        raise CompressionError(f"length mismatch: encoded n={n}, expected {expected_length}")
    if codec_id == TOPK_ID:
        return _decode_topk(buf, flags, n)
    if codec_id == Q8_ID:
        if flags:
            raise CompressionError(f"bad flags 0x{flags:02x} for q8 (must be 0)")
        return _decode_q8(buf, n)
    raise CompressionError(f"unknown codec id {codec_id}")


class ErrorFeedback:
    """Per-chunk residual memory around one codec (``topk`` or ``q8``).

    ``compress`` encodes ``delta + residual`` and keeps what the receiver will not see as the
    next residual. With ``enabled=False`` it only encodes. ``q8`` rounds stochastically, from a
    generator seeded with ``seed``, when ``stochastic`` is set.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        ratio: float = 0.1,
        enabled: bool = True,
        seed: int = 0,
        stochastic: bool = False,
    ) -> None:
        if codec not in ("topk", "q8"):
            raise ValueError(f"error feedback needs a lossy codec (topk or q8), not {codec!r}")
        _check_ratio(ratio)
        self.codec: Codec = codec
        self.ratio = ratio
        self.enabled = enabled
        self.seed = seed
        self.stochastic = stochastic
        self._rng = np.random.default_rng(seed)
        self._residuals: dict[int, Vector] = {}

    def compress(self, chunk_index: int, delta: npt.ArrayLike) -> bytes:
        """Encode ``delta`` plus the chunk's residual and store the new residual."""
        vec = _as_delta(delta)
        old = self._residuals.get(chunk_index)
        if old is not None:
            if old.shape != vec.shape:
                raise ValueError(
                    f"chunk {chunk_index}: delta has {vec.size} elements, residual {old.size}"
                )
            vec = vec + old
        if self.codec == "topk":
            data, decoded = encode_topk(vec, self.ratio)
        else:
            data, decoded = encode_q8(vec, self._rng if self.stochastic else None)
        if self.enabled:
            self._residuals[chunk_index] = vec - decoded
        return data

    def residual(self, chunk_index: int) -> Vector | None:
        """A copy of the chunk's stored residual, or None."""
        res = self._residuals.get(chunk_index)
        return None if res is None else res.copy()

    def residual_norm(self, chunk_index: int) -> float:
        """L2 norm of the chunk's stored residual (0.0 if none)."""
        res = self._residuals.get(chunk_index)
        return 0.0 if res is None else float(np.linalg.norm(res))

    def reset(self) -> None:
        """Forget every residual and restart the rounding generator."""
        self._residuals.clear()
        self._rng = np.random.default_rng(self.seed)


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")


def _index_width(n: int) -> int:
    return 2 if n <= MAX_U16_LENGTH else 4


def _as_delta(delta: npt.ArrayLike) -> Vector:
    vec = np.asarray(delta, dtype=np.float64)
    if vec.ndim != 1:
        raise ValueError(f"delta must be a 1-D vector, got shape {vec.shape}")
    if vec.size > 0xFFFFFFFF:
        raise CompressionError(f"delta of {vec.size} elements does not fit a uint32 length")
    if vec.size and not (np.all(np.isfinite(vec)) and np.max(np.abs(vec)) <= _F32_MAX):
        raise CompressionError("delta has non-finite values or values beyond float32 range")
    return vec


def _dequantize(lo: float, hi: float, q: npt.NDArray[np.uint8]) -> Vector:
    if lo == hi:
        return np.full(q.size, lo, dtype=np.float64)
    return lo + q.astype(np.float64) * ((hi - lo) / 255.0)


def _decode_topk(buf: memoryview, flags: int, n: int) -> Vector:
    if flags & ~FLAG_U32_INDICES:
        raise CompressionError(f"bad flags 0x{flags:02x} for topk (only bit 0 is defined)")
    width = 4 if flags & FLAG_U32_INDICES else 2
    if width != _index_width(n):
        raise CompressionError(f"index width {width} bytes is not canonical for n={n}")
    if len(buf) < _HEADER.size + 4:
        raise CompressionError(f"truncated topk header: {len(buf)} bytes")
    (k,) = _U32.unpack_from(buf, _HEADER.size)
    if not (1 <= k <= n or k == n == 0):
        raise CompressionError(f"bad k={k} for n={n} (need 1 <= k <= n)")
    start = _HEADER.size + 4
    expected = start + k * (width + 4)
    if len(buf) != expected:
        raise CompressionError(f"topk payload is {len(buf)} bytes, layout needs {expected}")
    idx = np.frombuffer(buf, dtype="<u4" if width == 4 else "<u2", count=k, offset=start)
    values = np.frombuffer(buf, dtype="<f4", count=k, offset=start + k * width)
    idx64 = idx.astype(np.int64)
    if k and not np.all(np.diff(idx64) > 0):
        raise CompressionError("topk indices are not strictly increasing")
    if k and idx64[-1] >= n:
        raise CompressionError(f"topk index {int(idx64[-1])} out of range for n={n}")
    if not np.all(np.isfinite(values)):
        raise CompressionError("topk values contain NaN or infinity")
    out = np.zeros(n, dtype=np.float64)
    out[idx64] = values
    return out


def _decode_q8(buf: memoryview, n: int) -> Vector:
    expected = _HEADER.size + _LOHI.size + n
    if len(buf) != expected:
        raise CompressionError(f"q8 payload is {len(buf)} bytes, layout needs {expected}")
    lo, hi = _LOHI.unpack_from(buf, _HEADER.size)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CompressionError(f"q8 range is not finite: lo={lo}, hi={hi}")
    if lo > hi:
        raise CompressionError(f"q8 range is inverted: lo={lo} > hi={hi}")
    q = np.frombuffer(buf, dtype=np.uint8, count=n, offset=_HEADER.size + _LOHI.size)
    return _dequantize(lo, hi, q)
