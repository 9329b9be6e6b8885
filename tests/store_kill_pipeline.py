"""The pipeline of the store kill trials: entries whose parts keep their arrays in a store.

``Source(key)`` -> ``Result(key)`` (``summary : <blob@kill>``) with ``n_parts(key)`` rows in
``Result.Chunk`` (``data : <npy@kill>``, ``meta : <blob@kill>``), all computed from (key, chunk),
so a test can check any entry it finds. ``signal_dir``: ``make`` creates
``computing-<key>`` when it starts and ``computed-<key>`` once its rows are collected (its
objects written, its transaction not yet begun).
"""

from __future__ import annotations

import os

import numpy as np

import mp_dagster as mp

CHUNK_KB = 256


def n_parts(key: int) -> int:
    return 6 + (key * 5) % 7


def payload(key: int, chunk: int) -> np.ndarray:
    return np.random.default_rng([key, chunk]).random(CHUNK_KB * 128)


def declare(schema: mp.Schema, signal_dir: str | None = None):
    @schema
    class Source(mp.Manual):
        definition = """
        key : int
        """

    @schema
    class Result(mp.Computed):
        definition = """  # parts with arrays in store 'kill'
        -> Source
        ---
        summary : <blob@kill>
        """

        class Chunk(mp.Part):
            definition = """
            -> master
            chunk : int
            ---
            data : <npy@kill>
            meta : <blob@kill>
            """

        def make(self, key):
            k = key["key"]
            if signal_dir:
                open(os.path.join(signal_dir, f"computing-{k}"), "w").close()
            self.insert1(dict(key, summary={"key": k, "parts": n_parts(k)}))
            for c in range(n_parts(k)):
                self.Chunk.insert1(dict(key, chunk=c, data=payload(k, c), meta={"chunk": c, "of": n_parts(k)}))
            if signal_dir:
                open(os.path.join(signal_dir, f"computed-{k}"), "w").close()

    return Source, Result
