"""Listing the files under a store path, for tables fed by files (:mod:`mp_dagster.file_sources`).

A listing is one pass over the store: on a file store ``os.scandir`` (the size and modification
time come with each entry: no ``stat`` call of our own, no file opened), on S3 one paginated
``find`` through fsspec. Nothing is read and nothing is hashed here. Every name found is checked
before it is used: a name that could leave the store's root (``..``), holds control characters,
backslashes or glob characters, is not valid UTF-8, or is a symbolic link, is *refused* with the
reason (never silently dropped, never followed). Hidden files and folders (a name starting with
``.``, e.g. a partial ``rsync`` upload) and the stores' own objects (``sha256/``, ``.tmp/``) are
skipped.

This module is the relational layer's: it imports nothing from Dagster.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from .store_addresses import CONTENT_PREFIX, MAX_ADDRESS, TEMP_PREFIX, AddressError, check_address
from .stores import Store, StoreError

INTERNAL_PREFIXES = (CONTENT_PREFIX, TEMP_PREFIX)  # objects the store writes itself


class ListedFile(NamedTuple):
    """A file as listed: its path (relative to the store's root), size and modification time
    (naive UTC, as datetimes are stored)."""

    path: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class RefusedFile:
    """A file that is not registered, and why (shown to the user as it is)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path!r}: {self.reason}"


def naive_utc(value: datetime) -> datetime:
    """An aware or naive-UTC datetime as naive UTC (how datetime attributes are stored)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


_EPOCH = datetime(1970, 1, 1)


def _from_timestamp(seconds: float) -> datetime:
    """A POSIX time as naive UTC, to the microsecond (one arithmetic step: 100,000 files a tick)."""
    return _EPOCH + timedelta(seconds=seconds)


def _listed_time(info: dict) -> datetime:
    """A listing entry's modification time (S3: LastModified; else mtime), naive UTC."""
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, datetime):
        return naive_utc(value)
    if isinstance(value, (int, float)):
        return _from_timestamp(value)
    return datetime(1970, 1, 1)  # unknown: the file counts as settled


_SUFFIX_ONLY = re.compile(r"\*\.[A-Za-z0-9_\-]+\Z")


class Patterns:
    """Glob patterns, case-insensitive: one without ``/`` (``*.npy``) is matched against the file
    name, one with ``/`` (``mouse*/*.png``) against the whole path. Compiled once per listing."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        # "*.npy": a suffix test (most patterns are; a regular expression is 3x slower)
        self._suffixes = tuple(p[1:].lower() for p in patterns if _SUFFIX_ONLY.match(p))
        names = [fnmatch.translate(p) for p in patterns if "/" not in p and not _SUFFIX_ONLY.match(p)]
        paths = [fnmatch.translate(p) for p in patterns if "/" in p]
        self._name = re.compile("|".join(names), re.IGNORECASE | re.DOTALL) if names else None
        self._path = re.compile("|".join(paths), re.IGNORECASE | re.DOTALL) if paths else None

    def __call__(self, path: str) -> bool:
        if self._suffixes and path.lower().endswith(self._suffixes):
            return True
        if self._name is not None and self._name.match(path[path.rfind("/") + 1:]):
            return True
        return self._path is not None and self._path.match(path) is not None


def matches(path: str, patterns: Iterable[str]) -> bool:
    """True if ``path`` matches one of ``patterns`` (see :class:`Patterns`)."""
    return Patterns(patterns)(path)


# what check_address refuses, in one expression: most names pass this test and nothing else
_SUSPECT = re.compile(r"[\x00-\x1f\x7f\\*?\[\]]|(?:^|/)\.{0,2}(?:/|$)|^[/~]")


def unsafe_reason(path: str, store: str, max_length: int | None = None) -> str | None:
    """Why ``path`` cannot be registered, or None when it can."""
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return "the name is not valid UTF-8"
    if _SUSPECT.search(path) or len(path) > 1024:
        try:
            check_address(path, store)
        except AddressError as exc:
            return str(exc).split(": ", 2)[-1]
    if max_length is not None and len(path) > max_length:
        return f"the path has {len(path)} characters; the table's path attribute holds {max_length}"
    return None


def list_files(store: Store, patterns: Iterable[str], prefix: str = "",
               max_length: int | None = None) -> tuple[list[ListedFile], list[RefusedFile]]:
    """The files under ``prefix`` matching ``patterns`` (path order), and the refused ones."""
    wanted = Patterns(patterns)
    if prefix:
        check_address(prefix.rstrip("/"), store.name)
    found = _walk_local(store, prefix, wanted) if store.is_local else _walk_remote(store, prefix, wanted)
    listed: list[ListedFile] = []
    refused: list[RefusedFile] = []
    suspect, limit = _SUSPECT.search, min(max_length or MAX_ADDRESS, MAX_ADDRESS)
    for path, size, modified, problem in found:
        if path.startswith(INTERNAL_PREFIXES):
            continue
        # the common case inline (100,000 files a tick): ASCII, nothing suspect, short enough
        if problem or not path.isascii() or suspect(path) or len(path) > limit:
            reason = problem or unsafe_reason(path, store.name, max_length)
            if reason:
                refused.append(RefusedFile(path, reason))
                continue
        listed.append(ListedFile(path, size, modified))
    listed.sort(key=lambda f: f.path)
    refused.sort(key=lambda f: f.path)
    return listed, refused


def file_state(store: Store, path: str) -> tuple[int, datetime]:
    """(size, modification time) of one file, as a listing gives them."""
    local = store.local_path(path)
    if local is not None:
        try:
            st = os.stat(local, follow_symlinks=False)
        except FileNotFoundError:
            store.size(path)  # the store's own error: no object at this address
            raise
        return st.st_size, _from_timestamp(st.st_mtime)
    return store.size(path), naive_utc(store.modified(path))


Found = tuple[str, int, datetime, str | None]  # path, size, modified, why refused (None: fine)


def _walk_local(store: Store, prefix: str, wanted: Patterns) -> Iterator[Found]:
    """os.scandir over the folder: sizes and times from the directory entries; symbolic links
    are refused (they could point anywhere), hidden entries skipped."""
    root = store.root.rstrip("/")
    start = f"{root}/{prefix.strip('/')}" if prefix else root
    folders = [start]
    epoch = datetime(1970, 1, 1)
    while folders:
        folder = folders.pop()
        try:
            entries = os.scandir(folder)
        except FileNotFoundError:
            continue  # no folder yet: nothing has arrived
        except OSError as exc:
            raise StoreError(f"{store!r}: cannot list {folder!r}: {exc}") from exc
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = entry.path[len(root) + 1:]
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                    continue
                if not wanted(path):
                    continue  # not stat'ed
                if entry.is_symlink():
                    yield path, 0, epoch, "a symbolic link (links are not followed)"
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield path, st.st_size, _from_timestamp(st.st_mtime), None


def _walk_remote(store: Store, prefix: str, wanted: Patterns) -> Iterator[Found]:
    """One recursive listing through fsspec (S3: paginated ListObjectsV2)."""
    root = store.root.rstrip("/")
    start = f"{root}/{prefix.strip('/')}" if prefix else root
    try:
        found = store.fs.find(start, detail=True)
    except FileNotFoundError:
        return
    except Exception as exc:  # noqa: BLE001 - the store's own errors, worded
        raise StoreError(f"{store!r}: cannot list {prefix or 'the store'!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    for name, info in found.items():
        if info.get("type") != "file":
            continue
        full = store.fs._strip_protocol(name)
        if not full.startswith(root + "/"):
            continue
        path = full[len(root) + 1:]
        if not wanted(path) or any(part.startswith(".") and part not in (".", "..") for part in path.split("/")):
            continue  # not wanted, or hidden (also the store's .tmp/)
        yield path, int(info.get("size") or 0), _listed_time(info), None
