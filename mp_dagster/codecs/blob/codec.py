"""``<blob>``: the built-in codec of the in-row blob format (also ``blob``, ``longblob``...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..base import Codec
from .pack import pack
from .unpack import unpack


class BlobCodec(Codec):
    """Numpy arrays and plain Python values in a ``bytes`` column (see :mod:`mp_dagster.codecs.blob`)."""

    name = "blob"
    dtype = "bytes"

    def get_dtype(self, is_store: bool) -> str:
        """In-row ``bytes``; ``<blob@store>`` chains to ``<hash@store>`` (content-addressed)."""
        return "<hash>" if is_store else "bytes"

    def encode(self, value: Any, *, key: dict | None = None, store_name: str | None = None) -> bytes:
        return pack(value)

    def decode(self, stored: Any, *, key: dict | None = None) -> Any:
        return unpack(stored)

    def encoder(self, store_name: str | None = None) -> Callable[[Any], bytes]:
        return pack  # no wrapper on the hot path; with a store, <hash@store> writes the bytes

    def decoder(self, store_name: str | None = None) -> Callable[[Any], Any]:
        return unpack
