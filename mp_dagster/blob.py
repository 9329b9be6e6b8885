"""The in-row blob codec's functions, where they always were: ``mp_dagster.blob.pack`` and
``unpack``. The code (and the format's description) lives in :mod:`mp_dagster.codecs.blob`."""

from __future__ import annotations

from .codecs.blob import MAGIC, MAX_DEPTH, pack, unpack

__all__ = ["MAGIC", "MAX_DEPTH", "pack", "unpack"]
