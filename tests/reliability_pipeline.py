"""The pipeline of the reliability tests: parts whose number and contents follow from the key.

``Source(key)`` -> ``Result(key)`` with ``n_parts(key)`` rows in ``Result.Chunk``; every chunk
carries a payload array (``chunk_kb`` KiB of pseudo-random int64, incompressible, so a write
of large parts takes a measurable time) and a text tag, both computed from (key, chunk) alone,
so a test can check any entry it finds against what ``make`` produced, row by row.
"""

from __future__ import annotations

import os
import time

import numpy as np

import mp_dagster as mp


def n_parts(key: int) -> int:
    """How many part rows ``make`` inserts for ``key`` (always >= 8: written with COPY)."""
    return 24 + (key * 7) % 17


def payload(key: int, chunk: int, chunk_kb: int) -> np.ndarray:
    return np.random.default_rng([key, chunk]).integers(0, 2**62, size=chunk_kb * 128, dtype=np.int64)


def tag(key: int, chunk: int) -> str:
    return f"k{key}-c{chunk}-of-{n_parts(key)}"


def declare(schema: mp.Schema, chunk_kb: int = 64, compute_s: float = 0.0, signal_dir: str | None = None):
    """Declare ``Source`` and ``Result`` in ``schema``; returns both classes.

    ``compute_s``: seconds ``make`` spends before its first insert (the "compute" phase).
    ``MP_TEST_CALL_LOG`` (environment): a file to which every ``make`` call appends "key pid".
    ``signal_dir``: ``make`` creates ``<dir>/computing-<key>`` when it starts and
    ``<dir>/computed-<key>`` once every row is collected (before the write).
    """

    @schema
    class Source(mp.Manual):
        definition = """
        key : int
        """

    @schema
    class Result(mp.Computed):
        definition = """  # a result with many large parts
        -> Source
        ---
        n_parts : int
        """

        class Chunk(mp.Part):
            definition = """
            -> master
            chunk : smallint
            ---
            tag : text
            data : longblob
            """

        def make(self, key):
            k = key["key"]
            call_log = os.environ.get("MP_TEST_CALL_LOG")
            if call_log:  # every make call, one line each (O_APPEND: whole lines from any process)
                with open(call_log, "a") as log:
                    log.write(f"{k} {os.getpid()}\n")
            if signal_dir:
                open(os.path.join(signal_dir, f"computing-{k}"), "w").close()
            deadline = time.monotonic() + compute_s
            while time.monotonic() < deadline:  # bounded: compute_s seconds
                time.sleep(min(0.01, max(deadline - time.monotonic(), 0)))
            self.insert1(dict(key, n_parts=n_parts(k)))
            self.Chunk.insert(
                dict(key, chunk=c, tag=tag(k, c), data=payload(k, c, chunk_kb)) for c in range(n_parts(k))
            )
            if signal_dir:
                open(os.path.join(signal_dir, f"computed-{k}"), "w").close()

    return Source, Result


def declare_downstream(schema: mp.Schema, result_cls):
    """``Summary(key)`` -> ``Result``: one ``Summary.Item`` per chunk of the Result entry.

    ``make`` reads the upstream parts in ONE query and refuses to summarise an entry whose
    parts are gone (deleted meanwhile), as a careful ``make`` does.
    """
    Result = result_cls  # noqa: N806 - the name the definition refers to

    @schema
    class Summary(mp.Computed):
        definition = """  # downstream of Result
        -> Result
        ---
        n_items : int
        """

        class Item(mp.Part):
            definition = """
            -> master
            item : smallint
            ---
            tag_length : int
            """

        def make(self, key):
            chunks = (Result.Chunk & key).fetch("chunk", "tag", order_by="chunk")
            chunk_ids, tags = chunks
            if len(chunk_ids) == 0:
                raise RuntimeError(f"upstream entry {key} is gone")
            self.insert1(dict(key, n_items=len(chunk_ids)))
            self.Item.insert(dict(key, item=int(c), tag_length=len(t)) for c, t in zip(chunk_ids, tags))

    return Summary
