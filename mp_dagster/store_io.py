"""Low-level helpers of :mod:`mp_dagster.stores`: reading the caller's streams, hashing, the
exceptions a filesystem raises, listing timestamps. Nothing here knows about stores' names or
configuration."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Any

from .store_addresses import StoreError

CHUNK = 8 * 2**20  # bytes per read while hashing or copying


def now_utc() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def modified_time(info: dict[str, Any]) -> datetime:
    """A listing entry's modification time as an aware UTC datetime (file: mtime; S3: LastModified)."""
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    raise StoreError(f"no modification time in listing entry {info.get('name')!r}")


class SourceFailed(Exception):
    """Reading the caller's source failed (re-raised as the original exception)."""


def read_source(source: IO[bytes], size: int) -> bytes:
    """``source.read(size)``; a failure is a :class:`SourceFailed` carrying the caller's error."""
    try:
        return source.read(size)
    except Exception as exc:
        raise SourceFailed() from exc


def store_exceptions() -> tuple[type[BaseException], ...]:
    """What fsspec/s3fs/botocore/aiohttp raise for a failed store operation."""
    import fsspec  # imported on first use: `import mp_dagster` stays light

    kinds: list[type[BaseException]] = [OSError, TimeoutError, fsspec.exceptions.FSTimeoutError]
    try:
        import aiohttp
        import botocore.exceptions

        kinds += [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                  aiohttp.ClientError]
    except ImportError:  # no s3 extra: file stores only
        pass
    return tuple(kinds)


@contextmanager
def opened(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    """A path opened for binary reading, or a stream as it is (not closed)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def hash_stream(src: IO[bytes]) -> tuple[str, int]:
    """(SHA-256 hex, size) of the caller's stream read to its end in chunks."""
    digest, size = hashlib.sha256(), 0
    while chunk := read_source(src, CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def silently(func: Callable[..., Any], *args: Any) -> None:
    """Cleanup that must not hide the error being raised."""
    try:
        func(*args)
    except Exception:  # noqa: S110 - best effort; gc removes stale temporary files
        pass

__all__ = ["CHUNK", "SourceFailed", "hash_stream", "modified_time", "now_utc", "opened", "read_source", "silently",
           "store_exceptions"]
