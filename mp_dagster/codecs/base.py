"""The :class:`Codec` base class: a user-defined attribute type, as DataJoint 2's ``dj.Codec``.

A codec has a ``name`` (used as ``<name>`` in definitions), a storage type (``get_dtype``: a core
type such as ``"bytes"`` or ``"json"``, or another codec such as ``"<blob>"`` to chain to it),
and ``encode`` / ``decode``. Defining a subclass with a ``name`` registers it (see
:mod:`mp_dagster.codecs`); nothing else is needed before a definition uses ``<name>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from mp_dagster.errors import DeclarationError

CODEC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Codec:
    """Base class of attribute codecs; subclasses with a ``name`` register themselves.

    ::

        class GraphCodec(mp.Codec):
            name = "graph"            # used as <graph> in definitions
            dtype = "json"            # or "bytes", or "<blob>" to chain to the blob codec

            def validate(self, value):            # optional: TypeError / ValueError
                if not isinstance(value, dict):
                    raise TypeError(f"expected a dict of adjacency lists, got {type(value).__name__}")

            def encode(self, value, *, key=None, store_name=None):
                return {str(node): sorted(map(str, edges)) for node, edges in value.items()}

            def decode(self, stored, *, key=None):
                return {node: set(edges) for node, edges in stored.items()}

    ``encode`` returns a value of the storage type (``bytes`` for ``"bytes"``, anything
    JSON-serialisable for ``"json"``, anything the next codec accepts for ``"<blob>"``);
    ``decode`` receives what that storage gives back. Never pickle, never eval: reading the
    database must not execute code. Errors raised by ``validate`` or ``encode`` become a
    :class:`~mp_dagster.DataError` naming the table and attribute, and nothing is written.

    ``<name@store>``: a codec accepts a store when its :meth:`get_dtype` returns a storage
    type for ``is_store=True`` (the base class refuses stores); its ``encode`` then receives
    ``store_name``. Chaining to ``"<blob>"`` puts the packed value in the store through
    ``<blob@store>``; a codec writing objects of its own subclasses
    :class:`~mp_dagster.codecs.store_codec.StoreCodec`. ``key`` is ``None`` (reserved).

    A subclass without its own ``name`` is not registered (an abstract base); pass
    ``register=False`` to skip registration of a named class. Defining another class with a
    registered name is an error; defining the same class again (same module and qualified
    name: a re-run notebook cell, a reloaded module) replaces it.
    """

    name: ClassVar[str | None] = None
    dtype: ClassVar[str | None] = None  # the storage type, when it does not depend on stores

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__ and cls.name is not None:
            from . import register_codec  # the registry lives in the package

            register_codec(cls)

    def get_dtype(self, is_store: bool) -> str:
        """The storage type: a core type (``"bytes"``, ``"json"``, ...) or another codec
        (``"<blob>"``). ``is_store`` is True for ``<name@store>``; raise ``ValueError`` if the
        codec cannot be store-backed (the default)."""
        if is_store:
            raise ValueError(f"codec <{self.name}> does not support object stores (<{self.name}@store>)")
        if self.dtype is None:
            raise ValueError(f"codec <{self.name}> declares no storage type (set dtype or define get_dtype)")
        return self.dtype

    def validate(self, value: Any) -> None:
        """Check a value before :meth:`encode`; raise ``TypeError`` or ``ValueError``."""

    def encode(self, value: Any, *, key: dict | None = None, store_name: str | None = None) -> Any:
        """The value to store, of the storage type (see :meth:`get_dtype`)."""
        raise NotImplementedError(f"codec <{self.name}> does not define encode()")

    def decode(self, stored: Any, *, key: dict | None = None) -> Any:
        """The Python value of what the storage gave back."""
        raise NotImplementedError(f"codec <{self.name}> does not define decode()")

    # -- the hot path: one-argument functions built once per attribute -----------------------
    def encoder(self, store_name: str | None = None) -> Callable[[Any], Any]:
        """``validate`` then ``encode``, as one function of the value (built-in codecs
        return their encoder itself). ``store_name``: the store of ``<name@store>``, passed
        to ``encode``."""
        validate, encode = self.validate, self.encode
        if store_name is not None:
            def to_store(value: Any) -> Any:
                validate(value)
                return encode(value, store_name=store_name)

            return to_store
        if type(self).validate is Codec.validate:
            return encode

        def validated(value: Any) -> Any:
            validate(value)
            return encode(value)

        return validated

    def decoder(self, store_name: str | None = None) -> Callable[[Any], Any]:
        """``decode`` as one function of the stored value (``store_name``: the store of
        ``<name@store>``; used by store-backed codecs, see :class:`~mp_dagster.codecs.store_codec.StoreCodec`)."""
        return self.decode

    def __repr__(self) -> str:
        return f"<{type(self).__name__} codec <{self.name}>>"


def check_codec_class(cls: type) -> str:
    """The name of a codec class about to be registered; DeclarationError if it is unusable."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not CODEC_NAME.fullmatch(name) or len(name) > 63:
        raise DeclarationError(
            f"codec {cls.__qualname__}: name must be lowercase letters, digits and underscores, "
            f"starting with a letter (it is used as <name> in definitions), got {name!r}"
        )
    for method in ("encode", "decode"):
        if getattr(cls, method) is getattr(Codec, method):
            raise DeclarationError(f"codec {cls.__qualname__} (<{name}>) must define {method}()")
    return name
