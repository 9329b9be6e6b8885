"""mp_dagster: DataJoint's master-part tables, run by Dagster.

The relational layer (this package's top level) imports nothing from Dagster; the Dagster
mapping lives in :mod:`mp_dagster.dagster`.
"""

from .aggregation import U
from .autopopulate import Entry, compute_entry, write_entry
from .codecs import Codec, get_codec, list_codecs
from .diagram import Diagram
from .errors import (
    BlobError,
    DataError,
    DeclarationError,
    DirectInsertError,
    DuplicateError,
    IntegrityError,
    MakeError,
    MissingParentError,
    MPError,
    PartIntegrityError,
    QueryError,
)
from .file_sources import FileSource
from .schema import Schema
from .table import Table
from .tiers import Computed, Imported, Lookup, Manual, Part

__all__ = [
    "BlobError",
    "Codec",
    "Computed",
    "DataError",
    "DeclarationError",
    "Diagram",
    "DirectInsertError",
    "DuplicateError",
    "Entry",
    "FileSource",
    "Imported",
    "IntegrityError",
    "Lookup",
    "MPError",
    "MakeError",
    "Manual",
    "MissingParentError",
    "Part",
    "PartIntegrityError",
    "QueryError",
    "Schema",
    "Table",
    "U",
    "compute_entry",
    "get_codec",
    "list_codecs",
    "write_entry",
]
