"""Element codec for chunk plans: tensors to raw bytes and back, raw bytes to float64 and back.

Raw bytes are the elements in C order, little-endian (the host order, which is checked).
"""

from __future__ import annotations

import sys
from typing import Any, cast

import numpy as np
import torch

from fltorrent.errors import LearnError

if sys.byteorder != "little":  # pragma: no cover - the byte layout is defined as little-endian
    raise ImportError("fltorrent.learn chunk plans support little-endian hosts only")


def _dtypes(*names: str) -> tuple[torch.dtype, ...]:
    # Newer dtypes (uint16..64, float8) are absent from older torch releases.
    found = (getattr(torch, name, None) for name in names)
    return tuple(d for d in found if isinstance(d, torch.dtype))


# Dtypes whose elements numpy can hold, used to convert chunks to and from float64 vectors.
_NUMPY_DTYPES: dict[torch.dtype, np.dtype[np.generic]] = {
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
    torch.uint8: np.dtype(np.uint8),
    torch.bool: np.dtype(np.bool_),
}
for _dt in _dtypes("uint16", "uint32", "uint64"):
    _NUMPY_DTYPES[_dt] = np.dtype(str(_dt).removeprefix("torch."))

SUPPORTED_DTYPES: frozenset[torch.dtype] = frozenset(
    (
        *_NUMPY_DTYPES,
        torch.bfloat16,
        torch.complex64,
        torch.complex128,
        *_dtypes("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"),
    )
)
"""Dtypes a chunk plan carries. Float64 vectors additionally exclude complex and float8."""


def check_tensor(name: str, value: object) -> None:
    """LearnError unless ``value`` is a dense tensor."""
    if not isinstance(value, torch.Tensor):
        raise LearnError(f"{name}: expected a tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise LearnError(f"{name}: only dense tensors can be chunked, got {value.layout}")


def tensor_bytes(value: torch.Tensor) -> np.ndarray:
    """The raw bytes of ``value`` as a flat uint8 array (possibly sharing its memory)."""
    if value.numel() == 0:
        return np.zeros(0, dtype=np.uint8)
    # Lazily conjugated or negated views must be materialised before reading bytes.
    t = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy()


def bytes_tensor(raw: np.ndarray, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor over the bytes ``raw`` (a writable uint8 array it takes over)."""
    if raw.size == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def _vector_dtype(name: str, dtype: torch.dtype) -> np.dtype[np.generic]:
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        raise LearnError(f"{name}: {dtype} has no float64 vector form")
    return np_dtype


def decode(raw: np.ndarray, name: str, dtype: torch.dtype) -> np.ndarray:
    """Raw bytes of ``dtype`` elements to float64 (exact for every float dtype)."""
    if dtype == torch.bfloat16:
        # bfloat16 is the upper half of a float32, so shifting gives the exact value.
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.view(_vector_dtype(name, dtype)).astype(np.float64)


def encode(vec: np.ndarray, name: str, dtype: torch.dtype) -> np.ndarray:
    """float64 values to a new writable uint8 array of ``dtype`` elements.

    Floats round to nearest (overflow gives ±inf); integers and bools round to nearest (ties to
    even), clip to the range float64 can express for the dtype, and map NaN to 0.
    """
    if dtype == torch.bfloat16:
        # numpy has no bfloat16; torch rounds to nearest even. torch.tensor copies, so a
        # read-only input is fine.
        t = torch.tensor(vec, dtype=torch.float64).to(torch.bfloat16)
        return t.view(torch.int16).numpy().view(np.uint8)
    np_dtype = _vector_dtype(name, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if np_dtype.kind == "f":
            return vec.astype(np_dtype).view(np.uint8)
        lo, hi = _int_range(np_dtype)
        rounded = np.nan_to_num(np.rint(vec), nan=0.0, posinf=hi, neginf=lo)
        out: np.ndarray = np.clip(rounded, lo, hi).astype(np_dtype)
        return out.view(np.uint8)


def _int_range(np_dtype: np.dtype[np.generic]) -> tuple[float, float]:
    """The float64 range that casts to ``np_dtype`` without overflow."""
    if np_dtype.kind == "b":
        return 0.0, 1.0
    info = np.iinfo(cast("np.dtype[np.integer[Any]]", np_dtype))
    lo, hi = float(info.min), float(info.max)
    if int(hi) > info.max:  # 2**63 - 1 rounds up to 2**63 as a float64
        hi = float(np.nextafter(hi, 0.0))
    return lo, hi
