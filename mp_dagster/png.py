"""A minimal PNG encoder (numpy + zlib) for pictures in Dagster metadata, and a decoder for the
simple PNGs instruments write (images arriving as files): no imaging library."""

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


_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (grey, RGB, grey+alpha, RGBA)
MAX_PIXELS = 2**28  # a PNG claiming more pixels than this is refused before anything is inflated


class PNGError(ValueError):
    """Bytes that are not a PNG this decoder reads (it says which part)."""


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of a non-interlaced 8- or 16-bit grey, grey+alpha, RGB or RGBA PNG: a 2-D
    array for grey images, else (height, width, channels); uint8 or uint16. Palette, interlaced
    and sub-byte images are refused with a :class:`PNGError` (read them with a full library)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise PNGError("not a PNG (bad signature)")
    pos, header, idat = 8, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise PNGError(f"truncated {kind!r} chunk")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise PNGError("no IHDR or no IDAT chunk")
    width, height, depth, colour, _, _, interlace = header
    if colour not in _CHANNELS or depth not in (8, 16) or interlace:
        raise PNGError(f"unsupported PNG (colour type {colour}, bit depth {depth}, interlace {interlace})")
    if width * height > MAX_PIXELS or not width or not height:
        raise PNGError(f"unsupported PNG size {width}x{height}")
    channels, step = _CHANNELS[colour], depth // 8
    bpp, stride = channels * step, width * channels * step
    inflater = zlib.decompressobj()
    raw = inflater.decompress(b"".join(idat), height * (stride + 1))
    if len(raw) != height * (stride + 1):
        raise PNGError("truncated image data")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            current = line.copy()
        elif kind == 2:
            current = line + previous
        elif kind in (1, 3, 4):
            current = _unfilter_row(int(kind), line, previous, bpp)
        else:
            raise PNGError(f"bad filter type {kind} in row {y}")
        out[y] = previous = current
    pixels = out.view(">u2").astype(np.uint16) if depth == 16 else out
    pixels = pixels.reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def _unfilter_row(kind: int, line: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    """Sub (1), Average (3) and Paeth (4) depend on the bytes just decoded: one byte at a time."""
    cur = bytearray(line.tobytes())
    prev = up.tobytes()
    for i in range(len(cur)):
        left = cur[i - bpp] if i >= bpp else 0
        if kind == 1:
            cur[i] = (cur[i] + left) & 0xFF
        elif kind == 3:
            cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF
        else:
            ul = prev[i - bpp] if i >= bpp else 0
            p = left + prev[i] - ul
            pa, pb, pc = abs(p - left), abs(p - prev[i]), abs(p - ul)
            pred = left if pa <= pb and pa <= pc else (prev[i] if pb <= pc else ul)
            cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)
