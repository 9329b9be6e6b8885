"""The base of store-backed codecs (``<name@store>``): the object goes to the store when the
value is encoded, and the column keeps a JSON record of it (its address, size...).

Encoding happens while rows are prepared (in ``insert`` before its transaction opens, or in
``make`` before the entry's transaction), so every object a row references is written before the
row is committed: a crash in between leaves only unreferenced objects, which ``schema.gc()``
collects. The JSON record always holds the object's ``address``: that is how the garbage
collector finds the references (:mod:`mp_dagster.store_references`).

Bytes transferred to each store are tallied while :func:`recording_uploads` is active (``make``
runs under it): the write path reports them per entry, and Dagster shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from mp_dagster.store_addresses import MANAGED_PREFIXES, check_address
from mp_dagster.stores import Store, get_store

from .base import Codec

_uploads: ContextVar[dict[str, int] | None] = ContextVar("mp_dagster_uploads", default=None)


@contextmanager
def recording_uploads() -> Iterator[dict[str, int]]:
    """Tally the bytes written to each store in this context: ``{store: bytes}`` (content that
    was already stored counts 0). Nested uses each get their own tally, and add to the outer."""
    tally: dict[str, int] = {}
    outer = _uploads.get()
    token = _uploads.set(tally)
    try:
        yield tally
    finally:
        _uploads.reset(token)
        if outer is not None:
            for store, n in tally.items():
                outer[store] = outer.get(store, 0) + n


def upload_counter(store: str) -> Callable[[int], None]:
    """The ``written`` callback of :meth:`Store.put_file` adding to the current tally."""

    def count(n: int) -> None:
        tally = _uploads.get()
        if tally is not None:
            tally[store] = tally.get(store, 0) + n

    return count


class StoreCodec(Codec):
    """A codec whose values live in an object store; the column holds a JSON record.

    Subclasses define ``name``, :meth:`put` (value -> JSON record, writing the object) and
    :meth:`get` (JSON record -> Python value). ``<name>`` without a store is refused.
    """

    def get_dtype(self, is_store: bool) -> str:
        if not is_store:
            raise ValueError(f"codec <{self.name}> keeps its values in an object store: "
                             f"write <{self.name}@store> (a store configured as MP_DAGSTER_STORE_<NAME>)")
        return "json"

    def encode(self, value: Any, *, key: dict | None = None, store_name: str | None = None) -> Any:
        if store_name is None:
            raise ValueError(f"<{self.name}> needs a store")
        return self.put(get_store(store_name), value, "")

    def decode(self, stored: Any, *, key: dict | None = None) -> Any:
        raise ValueError(f"<{self.name}> needs its store to decode a value")

    def store_encoder(self, store_name: str, where: str) -> Callable[[Any], Any]:
        """``validate`` then :meth:`put`, as one function of the value."""
        validate, put = self.validate, self.put

        def encode(value: Any) -> Any:
            validate(value)
            return put(get_store(store_name), value, where)

        return encode

    def store_decoder(self, store_name: str, where: str) -> Callable[[Any], Any]:
        """:meth:`get` as one function of the JSON record."""
        get = self.get

        def decode(record: Any) -> Any:
            return get(get_store(store_name), record, where)

        return decode

    def put(self, store: Store, value: Any, where: str) -> dict[str, Any]:
        """Write ``value``'s object(s) to ``store``; the JSON record for the column."""
        raise NotImplementedError

    def get(self, store: Store, record: dict[str, Any], where: str) -> Any:
        """The Python value of a JSON record read from the column."""
        raise NotImplementedError


def record_field(record: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``record[name]``, checked to be of ``kind``; ValueError describing a damaged record."""
    if not isinstance(record, dict) or not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
        raise ValueError(f"damaged store record {str(record)[:200]!r}: no valid {name!r}")
    return record[name]


def record_address(store: Store, record: Any, where: str) -> str:
    """The record's address, checked (nothing outside the store's root)."""
    return check_address(record_field(record, "address", str, where), store.name)


def managed(address: str) -> bool:
    """True for an address in the areas attributes write and gc collects (sha256/, objects/)."""
    return address.startswith(MANAGED_PREFIXES)
