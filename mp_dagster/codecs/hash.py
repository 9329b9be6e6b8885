"""``<hash@store>``: bytes stored content-addressed in an object store (identical content is
stored once); the column keeps ``{"address", "size"}``. ``<blob@store>`` chains to it: the blob
codec packs the value, this codec stores the packed bytes. Reading checks the content against
its address, so a truncated or corrupt object is an error, never a wrong value."""

from __future__ import annotations

from typing import Any

from mp_dagster.stores import Store

from .store_codec import StoreCodec, record_address, record_field, upload_counter


class HashCodec(StoreCodec):
    """Bytes in a store, content-addressed (``sha256/ab/cd/<hash>``)."""

    name = "hash"

    def validate(self, value: Any) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, got {type(value).__name__}")

    def put(self, store: Store, value: Any, where: str) -> dict[str, Any]:
        data = bytes(value)
        address = store.put_bytes(data, written=upload_counter(store.name))
        return {"address": address, "size": len(data)}

    def get(self, store: Store, record: dict[str, Any], where: str) -> bytes:
        address = record_address(store, record, where)
        data = store.get_bytes(address)  # verified against its address
        if len(data) != record_field(record, "size", int, where):
            raise ValueError(f"{store!r}: object {address!r} has {len(data)} bytes, "
                             f"{record['size']} were written")
        return data
