"""Tables fed by files: every file matching a pattern under a store path becomes a row.

In a lab, new images are files landing in a folder or a bucket. Declare a table whose rows are
those files, and say where they land::

    @schema
    class RawImage(mp.Manual):
        definition = '''  # an image file dropped into store `raw`
        image : varchar(255)        # the file name without its extension
        ---
        path     : varchar(1024)    # under the store's root
        size     : int64            # bytes
        checksum : char(64)         # SHA-256 of the content when registered
        modified : datetime(6)      # the file's modification time when registered
        unique index(path)
        '''
        files = mp.FileSource("raw", "*.npy", "*.png", key=lambda path: {"image": stem(path)})

``RawImage.files.sync()`` registers the new files (Dagster's file sensor does it every tick),
``RawImage.files.load(key)`` reads one back through the store, checking it is still the file
that was registered. A file whose size or content changed after it was registered is
*reported* (``scan().changed``), never registered again silently: what was computed from it
would no longer match. ``RawImage.files.reregister(path)`` accepts the new content: the old
entry is deleted with everything computed from it (the master cascade, one transaction) and
the file is registered anew, so its downstream entries are computed again.

Cost of a scan: one listing of the store (no file opened), one query for the registered
``(path, size, modified)``; only new files are hashed, and registered files whose size is the
same but whose modification time moved (a ``touch``, or a same-size rewrite). Files modified in
the last ``settle_seconds`` are left for a later scan (a copy may still be in progress).

This module is the relational layer's: it imports nothing from Dagster.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import DataError, MPError
from .file_listing import ListedFile, RefusedFile, file_state, list_files, naive_utc, unsafe_reason
from .stores import CHUNK, Store, get_store

if TYPE_CHECKING:
    from .table import Table

DEFAULT_PATTERNS = ("*.npy", "*.png", "*.tif", "*.tiff")
DEFAULT_SETTLE_SECONDS = 5.0
KEY_CHUNK = 500  # keys per restriction when looking registered keys up


class FileSourceError(MPError):
    """A file-fed table is declared or used wrongly (names the table and attribute)."""


class ChangedFileError(FileSourceError):
    """A registered file's size or content is no longer what was registered."""


@dataclass(frozen=True)
class ChangedFile:
    """A registered file whose size or content differs from its registration."""

    path: str
    key: dict[str, Any]
    registered_size: int
    size: int
    registered_checksum: str
    checksum: str | None  # None when the size already differs (not hashed)
    modified: datetime

    def __str__(self) -> str:
        what = (f"size {self.registered_size} -> {self.size} bytes" if self.size != self.registered_size
                else f"content changed (sha256 {self.registered_checksum[:12]}... -> {(self.checksum or '')[:12]}...)")
        return f"{self.path!r} {self.key}: {what}, modified {self.modified.isoformat(sep=' ')} UTC"


@dataclass
class ScanResult:
    """What a scan found; nothing is written by a scan."""

    new: list[dict[str, Any]] = field(default_factory=list)  # rows to register (hashed)
    changed: list[ChangedFile] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # registered paths no longer listed
    settling: list[str] = field(default_factory=list)  # new, but modified too recently
    verified: dict[str, tuple[int, str]] = field(default_factory=dict)  # touched, same content
    listed: int = 0
    registered: int = 0

    def summary(self) -> str:
        return (f"{self.listed} files listed, {self.registered} registered before, {len(self.new)} new, "
                f"{len(self.changed)} changed, {len(self.refused)} refused, {len(self.missing)} missing, "
                f"{len(self.settling)} still settling")


Loader = Callable[[IO[bytes]], Any]


def load_npy(f: IO[bytes]) -> np.ndarray:
    """A ``.npy`` file's array (never unpickles: ``allow_pickle=False``)."""
    return np.load(f, allow_pickle=False)


def load_png(f: IO[bytes]) -> np.ndarray:
    """A PNG's pixels: 2-D for grey images, (height, width, channels) otherwise."""
    from .png import decode_png

    return decode_png(f.read())


def load_tiff(f: IO[bytes]) -> np.ndarray:
    """A TIFF's pixels through ``tifffile`` (``pip install tifffile``)."""
    try:
        import tifffile
    except ImportError as exc:
        raise FileSourceError("reading .tif files needs tifffile (pip install tifffile), or pass "
                              "loaders={'.tif': your_reader} to FileSource") from exc
    return tifffile.imread(f)


LOADERS: dict[str, Loader] = {".npy": load_npy, ".png": load_png, ".tif": load_tiff, ".tiff": load_tiff}


class FileSource:
    """Declares that a table's rows are the files matching ``patterns`` under store ``store``.

    Set it as a class attribute of a Manual table (any name; ``files`` reads well). The table
    has attributes for the file's path, size and checksum (``path``, ``size``, ``checksum`` by
    default; a ``datetime`` attribute ``modified``, if present, lets a scan notice same-size
    rewrites without hashing every file). ``key(path)`` returns the primary key (and any other
    attributes) for a file; returning None skips the file. Without ``key`` the path attribute
    must be the primary key. ``prefix`` limits the listing to a folder of the store; patterns
    match the file name (``*.npy``) or, containing ``/``, the whole path, case-insensitively.
    ``loaders`` maps a suffix to a function reading an open binary file (``.npy``, ``.png`` and,
    with tifffile, ``.tif`` are built in).
    """

    def __init__(self, store: str, *patterns: str, key: Callable[[str], Mapping[str, Any] | None] | None = None,
                 prefix: str = "", path_attribute: str = "path", size_attribute: str = "size",
                 checksum_attribute: str = "checksum", modified_attribute: str | None = "modified",
                 settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                 loaders: Mapping[str, Loader] | None = None) -> None:
        if not isinstance(store, str):
            raise FileSourceError(f"FileSource: the store is named by a string, not {store!r}")
        self.store_name = store
        self.patterns = tuple(patterns) or DEFAULT_PATTERNS
        if not all(isinstance(p, str) and p for p in self.patterns):
            raise FileSourceError(f"FileSource: patterns are non-empty strings, not {self.patterns!r}")
        self.key = key
        self.prefix = prefix.strip("/")
        self.path_attribute, self.size_attribute = path_attribute, size_attribute
        self.checksum_attribute, self.modified_attribute = checksum_attribute, modified_attribute
        self.settle_seconds = float(settle_seconds)
        self.loaders = {**LOADERS, **{k.lower(): v for k, v in (loaders or {}).items()}}
        self.attribute_name = "files"

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute_name = name

    def __get__(self, instance: Any, owner: type[Table]) -> BoundFileSource:
        return BoundFileSource(self, owner)

    def describe(self) -> str:
        where = f"{self.prefix}/" if self.prefix else ""
        return f"store {self.store_name!r}: {where}{{{', '.join(self.patterns)}}}"


def file_source_of(table: type[Table]) -> BoundFileSource | None:
    """The table's :class:`FileSource`, bound to it, or None for a table not fed by files."""
    found = file_sources([table])
    return found[0] if found else None


@dataclass
class RegisterResult:
    """What :meth:`BoundFileSource.register` wrote, and what it refused."""

    rows: list[dict[str, Any]]  # registered now (with their keys)
    refused: list[RefusedFile]


class BoundFileSource:
    """A :class:`FileSource` on its table: scanning, registering and reading the files."""

    def __init__(self, source: FileSource, table: type[Table]) -> None:
        self.source, self.table = source, table

    # ---- the table's attributes ------------------------------------------------------
    def check_table(self) -> tuple[list[str], str | None, int | None]:
        """(primary key, modified attribute or None, path length); a FileSourceError naming
        the table and attribute when the heading does not fit."""
        s, heading = self.source, self.table.heading
        name = self.table.full_name
        for attr, what in ((s.path_attribute, "path"), (s.size_attribute, "size"),
                           (s.checksum_attribute, "checksum")):
            if attr not in heading.names:
                raise FileSourceError(f"{name}: a table fed by files needs a {what} attribute {attr!r} "
                                      f"(FileSource({what}_attribute=...) names another one)")
        path_type = heading[s.path_attribute].type
        if path_type.name not in ("varchar", "char"):
            raise FileSourceError(f"{name}: attribute {s.path_attribute!r} holds the file's path: "
                                  f"varchar(n), not {path_type}")
        if heading[s.checksum_attribute].type.name not in ("varchar", "char") or \
                (heading[s.checksum_attribute].type.length or 0) < 64:
            raise FileSourceError(f"{name}: attribute {s.checksum_attribute!r} holds a SHA-256 (hex): "
                                  "char(64)")
        modified = s.modified_attribute if s.modified_attribute in heading.names else None
        if modified is not None and heading[modified].type.name != "datetime":
            raise FileSourceError(f"{name}: attribute {modified!r} holds the file's modification "
                                  f"time: datetime(6), not {heading[modified].type}")
        pk = heading.primary_key
        if s.key is None and pk != [s.path_attribute]:
            raise FileSourceError(f"{name}: FileSource without key=...: the primary key must be the path "
                                  f"attribute {s.path_attribute!r} alone (it is {pk})")
        return pk, modified, path_type.length

    @property
    def store(self) -> Store:
        """The store the files are in (``MP_DAGSTER_STORE_<NAME>``)."""
        return get_store(self.source.store_name)

    # ---- scanning ----------------------------------------------------------------------
    def list_files(self) -> tuple[list[ListedFile], list[RefusedFile]]:
        """The files the source matches now, and those refused (unsafe names, links)."""
        _, _, length = self.check_table()
        return list_files(self.store, self.source.patterns, self.source.prefix, length)

    def _registered(self, modified: str | None) -> dict[str, tuple[int, datetime | None]]:
        """path -> (size, modified) of every registered row: one query."""
        s = self.source
        names = [s.path_attribute, s.size_attribute] + ([modified] if modified else [])
        columns = self.table().fetch(*names)
        paths, sizes = columns[0].tolist(), columns[1].tolist()
        times = columns[2].tolist() if modified else [None] * len(paths)
        return {p: (int(n), t) for p, n, t in zip(paths, sizes, times)}

    def scan(self, verified: Mapping[str, tuple[int, str]] | None = None, *, deep: bool = False,
             now: datetime | None = None) -> ScanResult:
        """Compare the store with the table; write nothing.

        ``verified``: path -> (size, modified ISO) of registered files already found unchanged
        at that size and time (a caller's memory, e.g. a sensor's cursor), not hashed again.
        ``deep=True`` hashes every registered file (a full verification)."""
        pk, modified_attr, _ = self.check_table()
        listed, refused = self.list_files()
        registered = self._registered(modified_attr)
        verified = verified or {}
        result = ScanResult(refused=list(refused), listed=len(listed), registered=len(registered))
        now = naive_utc(now or datetime.now(timezone.utc))
        settle = timedelta(seconds=self.source.settle_seconds)
        candidates: list[ListedFile] = []  # registered, to be hashed
        fresh: list[ListedFile] = []
        for f in listed:
            known = registered.get(f.path)
            if known is None:
                if now - f.modified < settle:
                    result.settling.append(f.path)
                else:
                    fresh.append(f)
                continue
            size, when = known
            if f.size != size or deep or (modified_attr and when != f.modified
                                          and verified.get(f.path) != (f.size, f.modified.isoformat())):
                candidates.append(f)
        seen = {f.path for f in listed} | {r.path for r in refused}
        result.missing = sorted(p for p in registered if p not in seen)
        if candidates:
            self._compare(candidates, registered, result)
        result.new, refused_new = self._new_rows(fresh, pk)
        result.refused.extend(refused_new)
        return result

    def _compare(self, files: list[ListedFile], registered: Mapping[str, tuple[int, Any]],
                 result: ScanResult) -> None:
        """Hash the registered files that may have changed; sort them into changed/verified."""
        s = self.source
        rows = self.rows_by_path([f.path for f in files])
        for f in files:
            row = rows.get(f.path)
            if row is None:
                continue  # deleted meanwhile
            size_differs = f.size != int(row[s.size_attribute])
            checksum = None if size_differs else self.store.checksum(f.path)
            if size_differs or checksum != row[s.checksum_attribute]:
                key = {k: row[k] for k in self.table.heading.primary_key}
                result.changed.append(ChangedFile(f.path, key, int(row[s.size_attribute]), f.size,
                                                  row[s.checksum_attribute], checksum, f.modified))
            else:
                result.verified[f.path] = (f.size, f.modified.isoformat())

    def rows_by_path(self, paths: list[str]) -> dict[str, dict[str, Any]]:
        """The registered rows of ``paths`` (path -> row; unregistered paths are absent)."""
        attr = self.source.path_attribute
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(paths), KEY_CHUNK):
            chunk = [{attr: p} for p in paths[start:start + KEY_CHUNK]]
            out.update((r[attr], r) for r in (self.table() & chunk).fetch(as_dict=True))
        return out

    def _new_rows(self, files: list[ListedFile], pk: list[str]) -> tuple[list[dict[str, Any]], list[RefusedFile]]:
        """Rows for new files (key function applied, hashed, validated); refused ones."""
        s, table = self.source, self.table
        rows: list[dict[str, Any]] = []
        refused: list[RefusedFile] = []
        by_key: dict[tuple, str] = {}
        for f in files:
            try:
                derived = s.key(f.path) if s.key is not None else {s.path_attribute: f.path}
                if derived is None:
                    continue  # the key function skips this file
                derived = dict(derived)
            except Exception as exc:  # noqa: BLE001 - the user's function: its error names the file
                refused.append(RefusedFile(f.path, f"key function failed: {type(exc).__name__}: {exc}"))
                continue
            taken = {s.path_attribute, s.size_attribute, s.checksum_attribute, s.modified_attribute} & set(derived)
            if taken - {s.path_attribute} or derived.get(s.path_attribute, f.path) != f.path:
                refused.append(RefusedFile(f.path, f"key function returned {sorted(taken)}: these come from the file"))
                continue
            missing = [k for k in pk if k not in derived and k != s.path_attribute]
            if missing:
                refused.append(RefusedFile(f.path, f"key function returned no {missing} ({table.full_name}'s key)"))
                continue
            row = {**derived, s.path_attribute: f.path, s.size_attribute: f.size}
            if s.modified_attribute in table.heading.names:
                row[s.modified_attribute] = f.modified
            row[s.checksum_attribute] = "0" * 64  # validated first, hashed only if the row is valid
            try:
                table().prepare_rows([row])
            except DataError as exc:
                refused.append(RefusedFile(f.path, str(exc)))
                continue
            key = tuple(row[k] for k in pk)
            if key in by_key:
                refused.append(RefusedFile(f.path, f"same key {dict(zip(pk, key))} as {by_key[key]!r}"))
                continue
            by_key[key] = f.path
            rows.append(row)
        # keys already registered for another file
        if rows and s.key is not None:
            taken = self._registered_keys([{k: r[k] for k in pk} for r in rows])
            keep = []
            for row in rows:
                other = taken.get(tuple(row[k] for k in pk))
                if other is not None:
                    refused.append(RefusedFile(row[s.path_attribute],
                                               f"key {dict((k, row[k]) for k in pk)} is registered for {other!r}"))
                else:
                    keep.append(row)
            rows = keep
        for row in rows:
            row[s.checksum_attribute] = self.store.checksum(row[s.path_attribute])
        return rows, refused

    def _registered_keys(self, keys: list[dict[str, Any]]) -> dict[tuple, str]:
        pk, attr = self.table.heading.primary_key, self.source.path_attribute
        out: dict[tuple, str] = {}
        for start in range(0, len(keys), KEY_CHUNK):
            for r in (self.table() & keys[start:start + KEY_CHUNK]).fetch(as_dict=True):
                out[tuple(r[k] for k in pk)] = r[attr]
        return out

    # ---- registering -------------------------------------------------------------------
    def register(self, scan: ScanResult | None = None, limit: int | None = None) -> RegisterResult:
        """Insert the rows of the new files of ``scan`` (a fresh scan by default), at most
        ``limit``, in one insert. If the database refuses it (e.g. a key naming a parent row that
        does not exist yet), each row is tried alone: the refused files join ``scan.refused`` with
        the database's reason, the others are registered. A file registered meanwhile by another
        process is skipped, not an error."""
        scan = scan if scan is not None else self.scan()
        rows = scan.new[:limit] if limit is not None else scan.new
        if not rows:
            return RegisterResult(rows=[], refused=scan.refused)
        try:
            self.table().insert(rows, skip_duplicates=True)
            return RegisterResult(rows=rows, refused=scan.refused)
        except DataError:
            pass  # one bad row refuses the batch: find it
        written = []
        for row in rows:
            try:
                self.table().insert1(row, skip_duplicates=True)
                written.append(row)
            except DataError as exc:
                scan.refused.append(RefusedFile(row[self.source.path_attribute], str(exc)))
        batch, kept = {id(r) for r in rows}, {id(r) for r in written}
        scan.new = [r for r in scan.new if id(r) not in batch or id(r) in kept]
        return RegisterResult(rows=written, refused=scan.refused)

    def sync(self) -> ScanResult:
        """Scan and register the new files; the scan (its ``changed`` and ``refused`` files
        say what was not registered)."""
        scan = self.scan()
        self.register(scan)
        return scan

    def reregister(self, *paths: str, prompt: bool | None = False) -> dict[str, int]:
        """Accept the current content of changed files: in one transaction, delete each file's
        entry with everything computed from it (the master cascade, as ``delete()``) and
        register the file as it is now. Returns the rows deleted per table. A path that is not
        registered, or no longer listed, is an error and nothing is changed."""
        s, table = self.source, self.table
        pk, modified_attr, length = self.check_table()
        rows = self.rows_by_path(list(paths))
        for path in paths:
            if path not in rows:
                raise FileSourceError(f"{table.full_name}: {path!r} is not registered")
            reason = unsafe_reason(path, self.store.name, length)
            if reason:
                raise FileSourceError(f"{table.full_name}: {path!r} refused: {reason}")
        fresh = []
        for path in paths:
            try:
                size, when = file_state(self.store, path)
            except MPError as exc:
                raise FileSourceError(f"{table.full_name}: cannot re-register {path!r}: {exc}") from exc
            row = {**rows[path], s.size_attribute: size, s.checksum_attribute: self.store.checksum(path)}
            if modified_attr:
                row[modified_attr] = when
            fresh.append(row)
        keys = [{k: rows[p][k] for k in pk} for p in paths]
        restricted = table() & keys
        counts = restricted.delete_preview(part_integrity="cascade") if keys else {}
        with table.schema.transaction():
            restricted.delete(prompt=prompt, part_integrity="cascade")
            table().insert(fresh)
        return counts

    # ---- reading -----------------------------------------------------------------------
    def row(self, key: Mapping[str, Any]) -> dict[str, Any]:
        """The registered row of ``key`` (extra attributes of a downstream key are ignored)."""
        pk = self.table.heading.primary_key
        try:
            restriction = {k: key[k] for k in pk}
        except KeyError as exc:
            raise FileSourceError(f"{self.table.full_name}: key {dict(key)} lacks attribute {exc.args[0]!r}") from None
        found = (self.table() & restriction).fetch(as_dict=True)
        if not found:
            raise FileSourceError(f"{self.table.full_name}: no file registered for {restriction}")
        return found[0]

    def path(self, key: Mapping[str, Any]) -> str:
        """The registered file's path under the store's root."""
        return self.row(key)[self.source.path_attribute]

    def read_bytes(self, key: Mapping[str, Any], verify: bool = True) -> bytes:
        """The file's content; with ``verify`` (default) a :class:`ChangedFileError` when it is
        not the content registered (size or SHA-256 differ): nothing is computed from a file
        that changed behind the table's back."""
        s, row = self.source, self.row(key)
        path = row[s.path_attribute]
        digest, chunks = hashlib.sha256(), []
        with self.store.open(path) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                chunks.append(chunk)
        data = b"".join(chunks)
        if verify and (len(data) != row[s.size_attribute] or digest.hexdigest() != row[s.checksum_attribute]):
            raise ChangedFileError(
                f"{self.table.full_name}: file {path!r} changed after it was registered ({row[s.size_attribute]} "
                f"bytes, sha256 {row[s.checksum_attribute][:12]}...; now {len(data)} bytes, sha256 "
                f"{digest.hexdigest()[:12]}...): {self.table.__name__}.{s.attribute_name}.reregister({path!r}) "
                "accepts the new content and recomputes what depends on it")
        return data

    def open(self, key: Mapping[str, Any], verify: bool = True) -> IO[bytes]:
        """The file's content as a binary file object (read and verified first, see
        :meth:`read_bytes`; ``verify=False`` streams it from the store unchecked)."""
        if verify:
            return io.BytesIO(self.read_bytes(key))
        return self.store.open(self.path(key))

    def load(self, key: Mapping[str, Any], verify: bool = True) -> Any:
        """The file's data, by suffix: ``.npy`` an array, ``.png`` its pixels, ``.tif``
        through tifffile, or the FileSource's own ``loaders``."""
        path = self.path(key)
        suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        loader = self.source.loaders.get(suffix)
        if loader is None:
            raise FileSourceError(f"{self.table.full_name}: no loader for {suffix or 'files without a suffix'} "
                                  f"({path!r}); pass loaders={{{suffix!r}: function}} to FileSource")
        with self.open(key, verify=verify) as f:
            return loader(f)

    def local_path(self, key: Mapping[str, Any]) -> str | None:
        """The file's path on this machine (file stores), e.g. for a reader that wants a name;
        None on S3. Not verified: check ``size`` yourself or use :meth:`load`."""
        return self.store.local_path(self.path(key))


def file_sources(tables: Iterable[type[Table]]) -> list[BoundFileSource]:
    """The file sources of ``tables`` (each table at most one)."""
    out = []
    for t in tables:
        found = [v for klass in t.__mro__ for v in vars(klass).values() if isinstance(v, FileSource)]
        if len(found) > 1:
            raise FileSourceError(f"{t.full_name}: a table is fed by one FileSource, not {len(found)}")
        if found:
            out.append(BoundFileSource(found[0], t))
    return out
