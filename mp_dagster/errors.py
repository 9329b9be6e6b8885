"""Every error mp_dagster raises derives from :class:`MPError`.

Messages name the table (``schema.table``) and, where one is at fault, the attribute,
so a user can act on them without reading a traceback.
"""

from __future__ import annotations


class MPError(Exception):
    """Base class of every error raised by mp_dagster."""


class DeclarationError(MPError):
    """A table definition is malformed, or does not match the table in the database."""


class DataError(MPError):
    """A value does not fit its attribute (unknown or missing attribute, wrong type, NULL...)."""


class DuplicateError(DataError):
    """A row with the same primary key already exists."""


class MissingParentError(DataError):
    """A row references a parent row that does not exist."""


class BlobError(DataError):
    """A blob cannot be encoded, or bytes read from the database are not a valid blob."""


class QueryError(MPError):
    """A restriction, projection or fetch is not valid for the table it is applied to."""


class IntegrityError(MPError):
    """An operation would break master-part integrity (direct part delete, direct insert...)."""


class DirectInsertError(IntegrityError):
    """Insert into an auto-populated master, or into a part, outside ``make``."""


class PartIntegrityError(IntegrityError):
    """A delete would remove part rows without their master entry."""


class MakeError(MPError):
    """``make`` did something the master-part contract forbids (no master row, wrong key...)."""


class ConnectionError(MPError):  # noqa: A001 - deliberately shadows the builtin inside the package
    """The database could not be reached or the connection was lost."""
