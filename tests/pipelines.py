"""The seeds' pipelines, declared into a given schema, for tests (the demo lives in examples/)."""

from __future__ import annotations

import itertools
import os
import time

import numpy as np

import mp_dagster as mp


def segment(image: np.ndarray, n_rois: int = 45):
    """A deterministic stand-in segmentation: ``n_rois`` ROIs of growing size."""
    flat = np.asarray(image, dtype=np.float64).ravel()
    for i in range(n_rois):
        pixels = np.arange(i, i + 1 + i % 7, dtype=np.int64) % max(len(flat), 1)
        yield pixels, flat[pixels] if len(flat) else np.zeros(len(pixels))


def declare_imaging(schema: mp.Schema, n_rois: int = 45, fail_after: int | None = None,
                    sleep_before_write: float = 0.0, blob_kb: int = 0):
    """Image -> Segmentation(ROI) as in the seeds. ``fail_after`` raises after that many ROIs;
    ``blob_kb`` makes every ROI carry a weights array of that size (slow writes)."""
    big = np.random.default_rng(0).random(blob_kb * 128) if blob_kb else None

    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : longblob
        """

    @schema
    class Segmentation(mp.Computed):
        definition = """  # image segmentation
        -> Image
        """

        class ROI(mp.Part):
            definition = """  # Region of interest resulting from segmentation
            -> Segmentation
            roi  : smallint   # roi number
            ---
            roi_pixels  : longblob   #  indices of pixels
            roi_weights : longblob   #  weights of pixels
            """

        def make(self, key):
            image = (Image & key).fetch1("image")
            self.insert1(key)
            count = itertools.count()
            rows = []
            for p, w in segment(image, n_rois):
                n = next(count)
                if fail_after is not None and n == fail_after:
                    raise RuntimeError(f"segmentation failed after {n} ROIs")
                rows.append(dict(key, roi=n, roi_pixels=p, roi_weights=w if big is None else big))
                Segmentation.ROI().insert([rows[-1]])
            if sleep_before_write:
                time.sleep(sleep_before_write)
            if os.environ.get("MP_TEST_SIGNAL_FILE"):
                open(os.environ["MP_TEST_SIGNAL_FILE"], "a").write(f"{key['image_id']}\n")

    return Image, Segmentation


def declare_ephys(schema: mp.Schema, electrodes: int = 4, channels: int = 8):
    """ArrayResponse with ElectrodeResponse and ChannelResponse (-> ElectrodeResponse)."""

    @schema
    class Recording(mp.Manual):
        definition = """
        array : int
        ---
        signals : longblob   # (channels, samples)
        """

    @schema
    class ArrayResponse(mp.Computed):
        definition = """
        -> Recording
        """

        class ElectrodeResponse(mp.Part):
            definition = """
            -> master
            electrode: int    # electrode number on the probe
            """

        class ChannelResponse(mp.Part):
            definition = """
            -> ArrayResponse.ElectrodeResponse
            channel: int
            ---
            response: longblob  # response of a channel
            """

        def make(self, key):
            signals = (Recording & key).fetch1("signals")
            # children first on purpose: the write path must order parents before children
            self.ChannelResponse.insert(
                dict(key, electrode=e, channel=c, response=signals[(e * channels + c) % len(signals)])
                for e in range(electrodes)
                for c in range(channels)
            )
            self.ElectrodeResponse.insert(dict(key, electrode=e) for e in range(electrodes))
            self.insert1(key)

    return Recording, ArrayResponse
