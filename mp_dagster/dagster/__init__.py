"""The Dagster layer: maps tables to assets; it contains no SQL (the relational layer does that)."""

from .assets import PopulateConfig
from .build import build_definitions, table_bindings
from .component import MasterPartComponent
from .io_manager import MasterPartIOManager, TableBinding, entry_rows
from .partitions import PartitionScheme, build_schemes, decode_key, encode_key
from .sensors import RetryPolicy
from .translator import MasterPartTranslator

__all__ = [
    "MasterPartComponent",
    "MasterPartIOManager",
    "MasterPartTranslator",
    "PartitionScheme",
    "PopulateConfig",
    "RetryPolicy",
    "TableBinding",
    "build_definitions",
    "build_schemes",
    "decode_key",
    "encode_key",
    "entry_rows",
    "table_bindings",
]
