"""The ``dg`` project's code location: the components of ``defs/`` (the demo's tables).

As the top-level ``definitions.py``: the database is ``MP_DAGSTER_DATABASE_URL``, without it the
SQLite file ``mp_dagster_demo.db`` next to that ``definitions.py`` (the repository root), set
before ``defs/`` imports ``mp_dagster.demo``.
"""

import os
from pathlib import Path

import dagster as dg

REPOSITORY = Path(__file__).resolve().parents[2]
os.environ.setdefault("MP_DAGSTER_DATABASE_URL", f"sqlite:///{REPOSITORY / 'mp_dagster_demo.db'}")


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=REPOSITORY)
