"""Attribute codecs: how Python values become what a column stores, and back.

The registry maps a codec's name to an instance of its :class:`Codec` subclass; defining the
subclass registers it. A definition's ``<name>`` (or ``<name@store>``) looks the codec up,
and follows its chain of storage types (``<graph>`` -> ``<blob>`` -> ``bytes``) down to a core
type, which is the column's type. The built-in codecs:

* ``<blob>`` (also spelled ``blob``, ``longblob``...): the in-row blob format of
  :mod:`mp_dagster.codecs.blob` (numpy arrays and plain Python values, never pickle).
* ``<blob@store>``: the same, in an object store, content-addressed (chains to ``<hash@store>``,
  :mod:`~mp_dagster.codecs.hash`).
* ``<npy@store>``: numpy arrays as plain ``.npy`` files, fetched as lazy references
  (:mod:`~mp_dagster.codecs.npy`).
* ``<attach@store>``: a file's bytes with its name (:mod:`~mp_dagster.codecs.attach`).
* ``<filepath@store>``: a file already in the store, by path and checksum
  (:mod:`~mp_dagster.codecs.filepath`).

Store-backed codecs (:class:`~mp_dagster.codecs.store_codec.StoreCodec`) keep a JSON record in
the column (the object's address, size...) and write the object when the value is encoded, that
is before the transaction that inserts the row. ``<name@>`` is the store named ``default``.
"""

from __future__ import annotations

import re
from typing import Any

from mp_dagster.errors import DeclarationError

from .base import Codec, check_codec_class

__all__ = ["Codec", "get_codec", "list_codecs", "register_codec", "resolve_codec", "unregister_codec"]

DEFAULT_STORE = "default"  # the store of ``<name@>``

_REGISTRY: dict[str, Codec] = {}
CODEC_SPEC = re.compile(r"^<\s*(?P<name>[A-Za-z0-9_]*)\s*(?:(?P<at>@)\s*(?P<store>[A-Za-z0-9_]*)\s*)?>$")


def register_codec(cls: type[Codec]) -> Codec:
    """Register ``cls`` (called by ``Codec.__init_subclass__``); DeclarationError for a name
    already taken by another class."""
    name = check_codec_class(cls)
    existing = _REGISTRY.get(name)
    if existing is not None:
        old = type(existing)
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise DeclarationError(
                f"codec <{name}> is already registered by {old.__module__}.{old.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} must use another name"
            )
    codec = cls()
    _REGISTRY[name] = codec
    return codec


def unregister_codec(name: str) -> None:
    """Remove a codec from the registry (tests, notebooks); KeyError if it is not there."""
    del _REGISTRY[name.strip("<>")]


def get_codec(name: str) -> Codec:
    """The registered codec called ``name`` (``"graph"`` or ``"<graph>"``); ValueError if none."""
    codec = _REGISTRY.get(name.strip("<>"))
    if codec is None:
        raise ValueError(
            f"unknown codec <{name.strip('<>')}>: define a mp_dagster.Codec subclass with "
            f"name = {name.strip('<>')!r} before declaring the table (registered: "
            + ", ".join(f"<{n}>" for n in list_codecs())
            + ")"
        )
    return codec


def list_codecs() -> list[str]:
    """The names of the registered codecs, sorted."""
    return sorted(_REGISTRY)


def parse_codec_spec(text: str) -> tuple[str, str | None] | None:
    """``"<name>"`` -> (name, None); ``"<name@store>"`` -> (name, store) (``""`` for ``<name@>``:
    the default store); None if ``text`` is not in angle brackets; ValueError if malformed."""
    text = text.strip()
    if not (text.startswith("<") and text.endswith(">")):
        return None
    m = CODEC_SPEC.fullmatch(text)
    if m is None or not re.fullmatch(r"[a-z][a-z0-9_]*", m.group("name")):
        raise ValueError(f"malformed codec type {text!r}: use <name> or <name@store>")
    store = m.group("store") if m.group("at") else None
    if store and not re.fullmatch(r"[a-z][a-z0-9_]*", store):
        raise ValueError(f"malformed store name in {text!r}: use lowercase letters, digits and underscores")
    return m.group("name"), store


def resolve_codec(name: str, store: str | None = None) -> tuple[tuple[Codec, ...], str]:
    """The chain of codecs of ``<name@store>`` (outermost first) and the core storage type it
    ends in (e.g. ``"bytes"``, ``"json"``). ValueError with the reason if a codec is unknown,
    refuses the store, or the chain loops."""
    chain: list[Codec] = []
    current, current_store = name, store
    while True:
        if any(c.name == current for c in chain):
            raise ValueError(f"codec <{name}>: its storage types loop back to <{current}>")
        codec = get_codec(current)
        chain.append(codec)
        try:
            dtype = codec.get_dtype(current_store is not None)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ValueError(str(exc) if current == name else f"<{name}> stores through <{current}>: {exc}") from None
        if not isinstance(dtype, str) or not dtype.strip():
            raise ValueError(f"codec <{current}>: get_dtype() must return a type name, got {dtype!r}")
        inner = parse_codec_spec(dtype)
        if inner is None:
            if current_store is not None:
                check_store(current_store)
            return tuple(chain), dtype.strip()
        current, inner_store = inner
        if inner_store is not None:
            current_store = inner_store


def store_of(store: str | None) -> str | None:
    """The store's name of ``<name@store>`` (``<name@>``: the default store), or None."""
    return None if store is None else (store or DEFAULT_STORE)


def check_store(store: str) -> None:
    """ValueError naming the environment variable to set if ``store`` is not configured."""
    from mp_dagster.stores import StoreError, get_store

    try:
        get_store(store_of(store) or DEFAULT_STORE)
    except StoreError as exc:
        raise ValueError(str(exc)) from None


def _compose(functions: list[Any]) -> Any:
    """``functions`` applied one after the other, as one function (itself when alone)."""
    if len(functions) == 1:
        return functions[0]

    def composed(value: Any) -> Any:
        for f in functions:
            value = f(value)
        return value

    return composed


def chain_encoder(chain: tuple[Codec, ...], store: str | None = None, where: str = "") -> Any:
    """One function of the value: each codec's encoder, outermost first. ``store``: the
    attribute's store (``<name@store>``); ``where``: ``schema.table.attribute``, for the names
    of uniquely named objects and for errors."""
    from .store_codec import StoreCodec

    name = store_of(store)
    return _compose([c.store_encoder(name, where) if isinstance(c, StoreCodec) and name is not None
                     else c.encoder(name) if name is not None else c.encoder() for c in chain])


def chain_decoder(chain: tuple[Codec, ...], store: str | None = None, where: str = "") -> Any:
    """One function of the stored value: each codec's decoder, innermost first."""
    from .store_codec import StoreCodec

    name = store_of(store)
    return _compose([c.store_decoder(name, where) if isinstance(c, StoreCodec) and name is not None
                     else c.decoder(name) if name is not None else c.decoder() for c in reversed(chain)])


from .attach import AttachCodec, Attachment  # noqa: E402
from .blob.codec import BlobCodec  # noqa: E402 - registers <blob> once the registry exists
from .filepath import FilepathCodec, StoredFile  # noqa: E402
from .hash import HashCodec  # noqa: E402
from .npy import NpyCodec, NpyRef  # noqa: E402
from .store_codec import StoreCodec, recording_uploads  # noqa: E402

__all__ += ["AttachCodec", "Attachment", "BlobCodec", "FilepathCodec", "HashCodec", "NpyCodec", "NpyRef",
            "StoreCodec", "StoredFile", "recording_uploads"]
