"""The demo as a ``dg`` project: ``dg dev``, ``dg check defs`` and ``dg list defs`` from the
repository root load ``definitions.py`` here, which loads ``defs/`` (one ``MasterPartComponent``
in ``defs/demo/defs.yaml``). The top-level ``definitions.py`` + ``workspace.yaml`` build the same
definitions without ``dg`` (``dagster dev -w workspace.yaml``)."""
