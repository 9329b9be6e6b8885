"""The demo pipelines from the seeds, with real computations.

* ``imaging``: ``Image`` (manual; new images arrive as rows) -> ``Segmentation`` with part
  ``ROI``: threshold plus connected components, ROI weights from the pixel intensities.
* ``imaging`` too: ``RawImage`` (images that arrive as files: every ``.npy`` or ``.png`` in the
  store ``raw``) -> ``FileSegmentation`` with part ``ROI``, the same segmentation read from the
  file. The store is ``MP_DAGSTER_STORE_RAW``; unset, the folder ``raw_images/`` next to the
  demo's SQLite file (or in the working directory): drop an image there and watch it appear.
* ``ephys``: ``Recording`` (manual; raw multi-channel signals of one probe array) ->
  ``ArrayResponse`` with parts ``ElectrodeResponse`` and ``ChannelResponse``
  (``-> ElectrodeResponse``), entered together by one ``make``.

The database is ``MP_DAGSTER_DATABASE_URL`` (an SQLite file by default). The schema names are
``imaging`` and ``ephys``, each prefixed with ``MP_DAGSTER_DEMO_PREFIX`` (default empty), so
several copies of the demo (e.g. concurrent test runs) can share one database.
"""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path

import numpy as np

import mp_dagster as mp
from mp_dagster.png import encode_png, grey, upscale

PREFIX = os.environ.get("MP_DAGSTER_DEMO_PREFIX", "")


def raw_images_folder() -> Path:
    """``raw_images/`` next to the demo's SQLite file, or in the working directory."""
    url = os.environ.get("MP_DAGSTER_DATABASE_URL", "")
    base = Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///") else Path.cwd()
    return base.resolve() / "raw_images"


if not os.environ.get("MP_DAGSTER_STORE_RAW"):  # the demo's store `raw`: a folder to drop images into
    os.environ["MP_DAGSTER_STORE_RAW"] = raw_images_folder().as_uri()

imaging = mp.Schema(PREFIX + "imaging")
ephys = mp.Schema(PREFIX + "ephys")

CHANNELS_PER_ELECTRODE = 4


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels of a boolean image (0 = background), vectorised: labels
    start as pixel indices and take their neighbours' minimum until nothing changes."""
    height, width = mask.shape
    big = height * width + 1
    labels = np.where(mask, np.arange(1, height * width + 1).reshape(mask.shape), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = np.minimum.reduce([
            padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:],
        ])
        updated = np.where(mask, neighbours, big)
        if np.array_equal(updated, labels):
            break
        labels = updated
    out = np.zeros(mask.shape, dtype=np.int64)
    roots = np.unique(labels[mask])
    out[mask] = np.searchsorted(roots, labels[mask]) + 1
    return out


def segment(image: np.ndarray, min_pixels: int = 4):
    """Yield ``(pixel indices, weights)`` per region of interest: pixels above mean + 1 std,
    grouped into connected components; weights are the normalised intensities."""
    image = np.asarray(image, dtype=np.float64)
    mask = image > image.mean() + image.std()
    labels = label_components(mask)
    for label in range(1, labels.max() + 1):
        pixels = np.flatnonzero(labels == label)
        if len(pixels) < min_pixels:
            continue
        weights = image.ravel()[pixels]
        yield pixels, weights / weights.sum()


def synthetic_image(seed: int, size: int = 128, cells: int = 45) -> np.ndarray:
    """A fluorescence-like image: Gaussian cells on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    image = rng.normal(0.1, 0.02, (size, size))
    for cy, cx in rng.uniform(6, size - 6, (cells, 2)):
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1.5, 2.5) ** 2))
    return image


def synthetic_recording(seed: int, electrodes: int = 4, samples: int = 2000) -> np.ndarray:
    """Raw signals of ``electrodes * 4`` channels: oscillations plus noise, one row per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 1000.0
    channels = electrodes * CHANNELS_PER_ELECTRODE
    freqs = rng.uniform(5, 80, channels)
    return np.sin(2 * np.pi * freqs[:, None] * t) + rng.normal(0, 0.5, (channels, samples))


def roi_picture(image: np.ndarray, rois: list[dict]) -> bytes:
    """PNG of the image with each ROI outlined in colour."""
    canvas = grey(image)
    colours = np.array([[255, 80, 80], [80, 255, 80], [80, 160, 255], [255, 220, 60], [255, 80, 255]])
    mask = np.zeros(image.shape, dtype=np.int64)
    for n, roi in enumerate(rois, 1):
        mask.ravel()[roi["roi_pixels"]] = n
    padded = np.pad(mask, 1)
    edge = (mask > 0) & (
        (padded[:-2, 1:-1] != mask) | (padded[2:, 1:-1] != mask)
        | (padded[1:-1, :-2] != mask) | (padded[1:-1, 2:] != mask)
    )
    canvas[edge] = colours[(mask[edge] - 1) % len(colours)]
    return encode_png(upscale(canvas, max(1, 256 // max(image.shape))))


@imaging
class Image(mp.Manual):
    definition = """  # a microscope image
    image_id : int
    ---
    image : longblob   # 2-D float array
    """


@imaging
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

    def preview_png(self, key, rows):
        """The image with its ROIs outlined in colour (shown on each materialization in Dagster)."""
        return roi_picture((Image & key).fetch1("image"), rows[Segmentation.ROI.table_name])

    def make(self, key):
        image = (Image & key).fetch1("image")
        self.insert1(key)
        count = itertools.count()
        Segmentation.ROI().insert(
            dict(key, roi=next(count), roi_pixels=p, roi_weights=w) for p, w in segment(image)
        )


def raw_image_key(path: str) -> dict[str, str]:
    """A file's key: its path without the suffix (``day2/cells_001.png`` -> ``day2/cells_001``)."""
    return {"raw_image": path.rsplit(".", 1)[0]}


@imaging
class RawImage(mp.Manual):
    definition = """  # an image that arrived as a file in the store `raw` (the demo: raw_images/)
    raw_image : varchar(255)    # the file's path without its suffix
    ---
    path      : varchar(1024)   # under the store's root
    size      : int64           # bytes
    checksum  : char(64)        # SHA-256 of the content when registered
    modified  : datetime(6)     # the file's modification time when registered
    unique index(path)
    """
    files = mp.FileSource("raw", "*.npy", "*.png", key=raw_image_key, settle_seconds=2)


def as_grey(pixels: np.ndarray) -> np.ndarray:
    """A 2-D float image: colour channels (a PNG's RGB) averaged."""
    image = np.asarray(pixels, dtype=np.float64)
    return image.mean(axis=2) if image.ndim == 3 else image


@imaging
class FileSegmentation(mp.Computed):
    definition = """  # segmentation of an image that arrived as a file, read through the store
    -> RawImage
    """

    class ROI(mp.Part):
        definition = """  # Region of interest resulting from segmentation
        -> FileSegmentation
        roi  : smallint   # roi number
        ---
        roi_pixels  : longblob   #  indices of pixels
        roi_weights : longblob   #  weights of pixels
        """

    def preview_png(self, key, rows):
        """The file's image with its ROIs outlined."""
        return roi_picture(as_grey(RawImage.files.load(key)), rows[FileSegmentation.ROI.table_name])

    def make(self, key):
        image = as_grey(RawImage.files.load(key))  # a file changed since it was registered: an error
        if image.ndim != 2:
            raise ValueError(f"{RawImage.files.path(key)!r}: expected a 2-D image, got shape {image.shape}")
        self.insert1(key)
        count = itertools.count()
        FileSegmentation.ROI().insert(
            dict(key, roi=next(count), roi_pixels=p, roi_weights=w) for p, w in segment(image)
        )


@ephys
class Recording(mp.Manual):
    definition = """  # raw signals of one probe array
    array : int
    ---
    sampling_rate : float64     # Hz
    signals : longblob          # (channels, samples)
    """


@ephys
class ArrayResponse(mp.Computed):
    definition = """  # response of a whole array: its electrodes and their channels
    -> Recording
    ---
    mean_power : float64
    """

    class ElectrodeResponse(mp.Part):
        definition = """
        -> master
        electrode: int    # electrode number on the probe
        ---
        power : float64   # mean power of its channels
        """

    class ChannelResponse(mp.Part):
        definition = """
        -> ArrayResponse.ElectrodeResponse
        channel: int
        ---
        response: longblob  # power spectrum of the channel
        peak_hz : float64
        """

    def preview_png(self, key, rows, height=40, width=240):
        """One strip per channel: its power spectrum (log scale), electrodes in alternating tints."""
        channels = rows[ArrayResponse.ChannelResponse.table_name]
        canvas = np.full((height * len(channels), width, 3), 255, dtype=np.uint8)
        for i, row in enumerate(channels):
            spectrum = np.log1p(np.asarray(row["response"], dtype=np.float64)[1:])
            x = np.linspace(0, len(spectrum) - 1, width).astype(int)
            level = spectrum[x] / max(spectrum.max(), 1e-12)
            top = i * height + (height - 1 - (level * (height - 2)).astype(int))
            colour = (40, 90, 200) if row["electrode"] % 2 == 0 else (200, 90, 40)
            for column in range(width):
                canvas[top[column]:(i + 1) * height, column] = colour
            canvas[(i + 1) * height - 1, :] = 180
        return encode_png(canvas)

    def make(self, key):
        signals, rate = (Recording & key).fetch1("signals", "sampling_rate")
        spectra = np.abs(np.fft.rfft(signals, axis=1)) ** 2 / signals.shape[1]
        freqs = np.fft.rfftfreq(signals.shape[1], d=1.0 / rate)
        electrodes = signals.shape[0] // CHANNELS_PER_ELECTRODE
        self.insert1(dict(key, mean_power=float(spectra.mean())))
        for e in range(electrodes):
            rows = range(e * CHANNELS_PER_ELECTRODE, (e + 1) * CHANNELS_PER_ELECTRODE)
            self.ElectrodeResponse.insert1(dict(key, electrode=e, power=float(spectra[list(rows)].mean())))
            self.ChannelResponse.insert(
                dict(key, electrode=e, channel=c, response=spectra[c], peak_hz=float(freqs[spectra[c][1:].argmax() + 1]))
                for c in rows
            )


def add_demo_data(images: int = 3, recordings: int = 1) -> tuple[list[int], list[int]]:
    """Insert the next ``images`` synthetic images and ``recordings`` recordings; returns their ids."""
    next_image = max(Image.fetch("image_id").tolist(), default=-1) + 1
    image_ids = list(range(next_image, next_image + images))
    Image.insert([dict(image_id=i, image=synthetic_image(i)) for i in image_ids])
    next_array = max(Recording.fetch("array").tolist(), default=-1) + 1
    arrays = list(range(next_array, next_array + recordings))
    Recording.insert([dict(array=a, sampling_rate=1000.0, signals=synthetic_recording(a)) for a in arrays])
    return image_ids, arrays


def add_demo_files(images: int = 2) -> list[str]:
    """Drop ``images`` synthetic images as ``.npy`` files into the store ``raw`` (the demo's
    folder ``raw_images/`` unless MP_DAGSTER_STORE_RAW says otherwise), as an instrument would;
    returns their paths. The file sensor registers them on its next tick."""
    store = RawImage.files.store
    taken = {f.path for f in RawImage.files.list_files()[0]}
    paths, n = [], 0
    while len(paths) < images:
        path = f"cells_{n:03d}.npy"
        n += 1
        if path in taken:
            continue
        buffer = io.BytesIO()
        np.save(buffer, synthetic_image(1000 + n))
        if store.is_local:
            target = Path(store.root) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(buffer.getvalue())
        else:
            store.fs.pipe_file(f"{store.root}/{path}", buffer.getvalue())
        paths.append(path)
    return paths
