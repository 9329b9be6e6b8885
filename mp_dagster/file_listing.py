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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from .store_addresses import CONTENT_PREFIX, TEMP_PREFIX, AddressError, check_address
from .stores import Store, StoreError

INTERNAL_PREFIXES = (CONTENT_PREFIX, TEMP_PREFIX)  # objects the store writes itself


@dataclass(frozen=True)
class ListedFile:
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


def _from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


def _listed_time(info: dict) -> datetime:
    """A listing entry's modification time (S3: LastModified; else mtime), naive UTC."""
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, datetime):
        return naive_utc(value)
    if isinstance(value, (int, float)):
        return _from_timestamp(value)
    return datetime(1970, 1, 1)  # unknown: the file counts as settled


def matches(path: str, patterns: Iterable[str]) -> bool:
    """True if ``path`` matches one of ``patterns``, case-insensitively: a pattern without ``/``
    (``*.npy``) is matched against the file name, one with ``/`` (``mouse*/*.png``) against the
    whole path."""
    name = path.rsplit("/", 1)[-1].lower()
    lowered = path.lower()
    return any(fnmatch.fnmatchcase(lowered if "/" in p else name, p.lower()) for p in patterns)


def unsafe_reason(path: str, store: str, max_length: int | None = None) -> str | None:
    """Why ``path`` cannot be registered, or None when it can."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
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
    patterns = tuple(patterns)
    if prefix:
        check_address(prefix.rstrip("/"), store.name)
    found = _walk_local(store, prefix) if store.is_local else _walk_remote(store, prefix)
    listed: list[ListedFile] = []
    refused: list[RefusedFile] = []
    for path, size, modified, problem in found:
        if path.startswith(INTERNAL_PREFIXES) or not matches(path, patterns):
            continue
        reason = problem or unsafe_reason(path, store.name, max_length)
        if reason:
            refused.append(RefusedFile(path, reason))
        else:
            listed.append(ListedFile(path, size, modified))
    listed.sort(key=lambda f: f.path)
    refused.sort(key=lambda f: f.path)
    return listed, refused


Found = tuple[str, int, datetime, str | None]  # path, size, modified, why refused (None: fine)


def _walk_local(store: Store, prefix: str) -> Iterator[Found]:
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
                if entry.is_symlink():
                    yield path, 0, epoch, "a symbolic link (links are not followed)"
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield path, st.st_size, _from_timestamp(st.st_mtime), None


def _walk_remote(store: Store, prefix: str) -> Iterator[Found]:
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
        if any(part.startswith(".") and part not in (".", "..") for part in path.split("/")):
            continue  # hidden (also the store's .tmp/)
        yield path, int(info.get("size") or 0), _listed_time(info), None
