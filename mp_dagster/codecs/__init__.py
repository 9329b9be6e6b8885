"""Attribute codecs: how Python values become what a column stores, and back.

:mod:`mp_dagster.codecs.blob` is the in-row blob format (``blob`` / ``longblob`` / ``<blob>``).
"""
