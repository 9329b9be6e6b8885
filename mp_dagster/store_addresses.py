"""Addresses of objects in a store, and the errors of stores (see :mod:`mp_dagster.stores`).

An address is a relative POSIX path under a store's root. Content-addressed objects live at
``sha256/ab/cd/<64 hex digits><suffix>``: the SHA-256 of the content in a two-level fan-out.
Every address a store is given is checked first: nothing can name a place outside the root.
"""

from __future__ import annotations

import re

from .errors import MPError

CONTENT_PREFIX = "sha256/"  # where content-addressed objects live
OBJECTS_PREFIX = "objects/"  # where uniquely named objects of store attributes live (<npy@store>)
MANAGED_PREFIXES = (CONTENT_PREFIX, OBJECTS_PREFIX)  # what attributes write, and gc collects
TEMP_PREFIX = ".tmp/"  # file stores: objects being written (collected by gc when stale)
MAX_ADDRESS = 1024  # characters (S3 keys are at most 1024 bytes)

_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,16})?\Z")
_CONTENT = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{60})(\.[A-Za-z0-9]{1,16})?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GLOB = re.compile(r"[\\*?\[\]]")


class StoreError(MPError):
    """A store is not configured, cannot be reached, or refused an operation."""


class AddressError(StoreError):
    """An address is not a safe relative path inside the store (``..``, absolute, control...)."""


class MissingObjectError(StoreError):
    """No object at this address."""


class CorruptObjectError(StoreError):
    """An object's size or content is not what its address or the caller's record says."""


def content_address(digest: str, suffix: str = "") -> str:
    """The address of content whose SHA-256 (hex) is ``digest``: ``sha256/ab/cd/abcd...``."""
    if not _SUFFIX.match(suffix):
        raise AddressError(f"suffix {suffix!r} is not '.' and 1-16 letters or digits")
    return f"{CONTENT_PREFIX}{digest[:2]}/{digest[2:4]}/{digest}{suffix}"


def content_digest(address: str) -> str | None:
    """The SHA-256 (hex) in a content address, or None for any other address."""
    match = _CONTENT.match(address)
    return match.group(3) if match else None


def check_address(address: str, store: str = "?") -> str:
    """``address`` if it is a safe relative path inside a store, else an :class:`AddressError`:
    no empty, ``.`` or ``..`` segment, no leading ``/``, no backslash, glob character (``*?[]``),
    NUL or other control character, at most 1024 characters."""
    def bad(why: str) -> AddressError:
        return AddressError(f"store {store!r}: address {address!r} refused: {why}")

    if not isinstance(address, str) or not address:
        raise bad("an address is a non-empty string")
    if len(address) > MAX_ADDRESS:
        raise bad(f"longer than {MAX_ADDRESS} characters")
    if _CONTROL.search(address):
        raise bad("control characters (NUL, newline...) are not allowed")
    if _GLOB.search(address):
        raise bad("backslashes and glob characters (* ? [ ]) are not allowed")
    if address.startswith("/") or address.startswith("~"):
        raise bad("it must be relative to the store's root")
    if any(part in ("", ".", "..") for part in address.split("/")):
        raise bad("empty, '.' and '..' path segments are not allowed (nothing outside the root)")
    return address
