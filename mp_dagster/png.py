"""A minimal PNG encoder (numpy + zlib) for pictures in Dagster metadata: no plotting library."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (height, width, 3) uint8 image, or of a 2-D array scaled to grey."""
    image = np.asarray(rgb)
    if image.ndim == 2:
        image = grey(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("encode_png expects (height, width, 3) or a 2-D array")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, _ = image.shape
    raw = np.empty((height, width * 3 + 1), dtype=np.uint8)
    raw[:, 0] = 0  # filter type "none" per row
    raw[:, 1:] = image.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))


def grey(values: np.ndarray) -> np.ndarray:
    """A 2-D array scaled to 0..255 grey, as (height, width, 3) uint8."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.nanmin(v) if v.size else 0.0, np.nanmax(v) if v.size else 1.0
    scaled = np.zeros_like(v) if hi <= lo else (v - lo) / (hi - lo)
    g = np.nan_to_num(scaled * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so small images stay visible in the UI."""
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb
