"""Assertions shared by the test modules."""

from __future__ import annotations

from contextlib import contextmanager

import pytest


@contextmanager
def raises_naming(exc_type: type[BaseException], *fragments: str | tuple[str, ...]):
    """``pytest.raises`` that also checks the message names every fragment (a tuple: any one of
    its alternatives)."""
    with pytest.raises(exc_type) as info:
        yield info
    message = str(info.value)
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(o in message for o in options), f"{fragment!r} not in error message {message!r}"


def attribute_ref(table: str, name: str) -> tuple[str, ...]:
    """The ways a message may name attribute ``name`` of ``table``."""
    return (f"{table}.{name}", f"'{name}'", f'"{name}"', f"{name}=")
