"""DataJoint's ``tests/integration/test_skip_duplicates.py`` (#1049), on both backends:
``skip_duplicates=True`` skips rows whose primary key exists and still raises on a unique-index
violation of a new key -- on SQLite too (DataJoint runs those cases on PostgreSQL only; its
MySQL case documents MySQL swallowing them, which does not apply here). Nothing is written
when a batch raises."""

from __future__ import annotations

import pytest

import mp_dagster as mp


def item(schema):
    @schema
    class Item(mp.Manual):
        definition = """
        item_id : int
        ---
        name = "" : varchar(100)
        email : varchar(100)
        unique index (email)
        """

    Item.insert1(dict(item_id=1, name="Alice", email="alice@example.com"))
    return Item


def test_skip_duplicates_pk_match(schema):
    Item = item(schema)
    Item.insert1(dict(item_id=1, name="Bob", email="bob@example.com"), skip_duplicates=True)
    assert (Item & {"item_id": 1}).fetch1() == dict(item_id=1, name="Alice", email="alice@example.com")


def test_skip_duplicates_unique_violation_raises(schema):
    Item = item(schema)
    with pytest.raises(mp.DuplicateError):
        Item.insert1(dict(item_id=2, name="Bob", email="alice@example.com"), skip_duplicates=True)
    assert len(Item) == 1


def test_skip_duplicates_no_unique_index(schema):
    @schema
    class Simple(mp.Manual):
        definition = """
        item_id : int
        ---
        name : varchar(100)
        """

    Simple.insert1(dict(item_id=1, name="Alice"))
    Simple.insert1(dict(item_id=1, name="Bob"), skip_duplicates=True)
    assert (Simple & {"item_id": 1}).fetch1("name") == "Alice"
    Simple.insert1(dict(item_id=2, name="Bob"), skip_duplicates=True)
    assert len(Simple) == 2


def test_skip_duplicates_composite_unique(schema):
    @schema
    class Record(mp.Manual):
        definition = """
        record_id : int
        ---
        first_name : varchar(100)
        last_name : varchar(100)
        data : varchar(255)
        unique index (first_name, last_name)
        """

    Record.insert1(dict(record_id=1, first_name="Alice", last_name="Smith", data="v1"))
    with pytest.raises(mp.DuplicateError):
        Record.insert1(dict(record_id=2, first_name="Alice", last_name="Smith", data="v2"), skip_duplicates=True)
    Record.insert1(dict(record_id=2, first_name="Alice", last_name="Jones", data="v2"), skip_duplicates=True)
    assert len(Record) == 2


def test_skip_duplicates_batch_mixed(schema):
    Item = item(schema)
    with pytest.raises(mp.DuplicateError):
        Item.insert([
            dict(item_id=2, email="bob@example.com"),
            dict(item_id=1, email="duplicate-pk@example.com"),  # PK duplicate: skipped
            dict(item_id=3, email="alice@example.com"),  # unique conflict: error
        ], skip_duplicates=True)
    assert Item.fetch("item_id").tolist() == [1]  # all or nothing: bob was not written either
