"""Codecs as a registry: ``mp.Codec`` subclasses (DataJoint 2's ``dj.Codec``) used as ``<name>``
in definitions, on both backends; the built-in ``<blob>`` goes through the same registry."""

from __future__ import annotations

import numpy as np
import pytest

import mp_dagster as mp
from mp_dagster import codecs


class GraphCodec(mp.Codec):
    """A graph as adjacency lists ``{node: [neighbour, ...]}`` (str nodes), stored as JSON."""

    name = "graph"
    dtype = "json"

    def validate(self, value):
        if not isinstance(value, dict) or not all(isinstance(n, str) for n in value):
            raise TypeError("expected a dict of adjacency lists with str nodes")
        for node, neighbours in value.items():
            unknown = sorted(set(neighbours) - set(value))
            if unknown:
                raise ValueError(f"node {node!r} links to unknown nodes {unknown}")

    def encode(self, value, *, key=None, store_name=None):
        return {"nodes": list(value), "edges": [[a, b] for a, nbrs in value.items() for b in nbrs]}

    def decode(self, stored, *, key=None):
        graph = {node: [] for node in stored["nodes"]}
        for a, b in stored["edges"]:
            graph[a].append(b)
        return graph


class WeightedGraphCodec(mp.Codec):
    """Weighted edges ``{(a, b): weight}`` chained to ``<blob>``: nodes as a list, weights as
    one float64 array (a blob column, never pickle)."""

    name = "wgraph"
    dtype = "<blob>"

    def encode(self, value, *, key=None, store_name=None):
        pairs = list(value)
        return {"pairs": [list(p) for p in pairs], "weights": np.array([value[p] for p in pairs], dtype=np.float64)}

    def decode(self, stored, *, key=None):
        return {tuple(p): float(w) for p, w in zip(stored["pairs"], stored["weights"])}


class StoreEcho(mp.Codec):
    """Accepts ``<store_echo@name>`` (stores are for the next step: it stays in-row bytes)."""

    name = "store_echo"

    def get_dtype(self, is_store):
        return "bytes"

    def encode(self, value, *, key=None, store_name=None):
        return bytes(value)

    def decode(self, stored, *, key=None):
        return bytes(stored)


def components(graph: dict) -> list[list[str]]:
    """Connected components of an undirected adjacency-list graph, each sorted."""
    seen: set[str] = set()
    out = []
    for start in graph:
        if start in seen:
            continue
        todo, comp = [start], set()
        while todo:
            node = todo.pop()
            if node in comp:
                continue
            comp.add(node)
            todo += graph[node] + [n for n, nbrs in graph.items() if node in nbrs]
        seen |= comp
        out.append(sorted(comp))
    return out


RING = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}


# -- the registry -----------------------------------------------------------------------------


def test_registry_lists_builtin_and_user_codecs():
    assert {"blob", "graph", "wgraph"} <= set(mp.list_codecs())
    assert isinstance(mp.get_codec("<graph>"), GraphCodec)
    assert isinstance(mp.get_codec("blob"), codecs.BlobCodec)
    assert codecs.resolve_codec("wgraph") == ((mp.get_codec("wgraph"), mp.get_codec("blob")), "bytes")
    with pytest.raises(ValueError, match=r"unknown codec <nope>.*registered: .*<blob>"):
        mp.get_codec("nope")


def test_duplicate_and_invalid_codec_names_are_refused():
    with pytest.raises(mp.DeclarationError, match=r"<graph> is already registered by .*GraphCodec"):

        class Other(mp.Codec):
            name = "graph"
            dtype = "json"

            def encode(self, value, *, key=None, store_name=None):
                return value

            def decode(self, stored, *, key=None):
                return stored

    assert isinstance(mp.get_codec("graph"), GraphCodec)
    with pytest.raises(mp.DeclarationError, match="name must be lowercase"):

        class BadName(mp.Codec):
            name = "Bad-Name"
    with pytest.raises(mp.DeclarationError, match=r"must define decode\(\)"):

        class NoDecode(mp.Codec):
            name = "no_decode"

            def encode(self, value, *, key=None, store_name=None):
                return value

    class Abstract(mp.Codec):  # no name of its own: an abstract base, not registered
        dtype = "json"

    class Unlisted(mp.Codec, register=False):
        name = "unlisted"

    assert "no_decode" not in mp.list_codecs() and "unlisted" not in mp.list_codecs()


def test_defining_the_same_class_again_replaces_it():
    for _ in range(2):  # a re-run notebook cell: same module and qualified name

        class Again(mp.Codec):
            name = "again"
            dtype = "json"

            def encode(self, value, *, key=None, store_name=None):
                return value

            def decode(self, stored, *, key=None):
                return stored

    assert type(mp.get_codec("again")) is Again
    codecs.unregister_codec("again")
    assert "again" not in mp.list_codecs()


# -- declaring ---------------------------------------------------------------------------------


def test_codec_attributes_declare_insert_fetch_and_restrict(schema):
    @schema
    class Network(mp.Manual):
        definition = """
        net : int
        ---
        graph : <graph>            # adjacency lists, json
        weights = null : <wgraph>  # chained to <blob>
        raw : <blob>
        classic : longblob
        """

    heading = Network.heading
    assert str(heading["graph"].type) == "<graph>" and heading["graph"].type.name == "json"
    assert str(heading["weights"].type) == "<wgraph>" and heading["weights"].type.name == "bytes"
    assert str(heading["raw"].type) == "blob" == str(heading["classic"].type)
    Network.insert1({"net": 1, "graph": RING, "weights": {("a", "b"): 0.5, ("b", "c"): 2.0},
                     "raw": np.arange(3), "classic": {"k": [1, 2]}})
    Network.insert([{"net": n, "graph": {"x": ["y"], "y": []}, "raw": n, "classic": n}
                    for n in range(2, 5)])
    row = (Network & {"net": 1}).fetch1()
    assert row["graph"] == RING
    assert row["weights"] == {("a", "b"): 0.5, ("b", "c"): 2.0}
    assert np.array_equal(row["raw"], np.arange(3)) and row["classic"] == {"k": [1, 2]}
    assert (Network & {"net": 3}).fetch1("graph") == {"x": ["y"], "y": []}
    assert (Network & {"net": 3}).fetch1("weights") is None
    graphs = (Network - {"net": 1}).fetch("graph", order_by="net")
    assert list(graphs) == [{"x": ["y"], "y": []}] * 3
    assert [r["graph"] for r in Network.fetch(as_dict=True, order_by="net")][0] == RING
    assert len(Network & [{"net": 1}, {"net": 4}]) == 2
    with pytest.raises(mp.QueryError, match=rf"{Network.full_name}.graph: cannot restrict by a <graph>"):
        Network & {"graph": RING}


def test_bad_values_name_table_and_attribute_and_write_nothing(schema):
    @schema
    class Network(mp.Manual):
        definition = """
        net : int
        ---
        graph : <graph>
        """

    with pytest.raises(mp.DataError, match=rf"{Network.full_name}\.graph: <graph> cannot encode list: TypeError"):
        Network.insert1({"net": 1, "graph": ["a"]})
    rows = [{"net": 1, "graph": RING}, {"net": 2, "graph": {"a": ["zz"]}}]
    with pytest.raises(mp.DataError, match=r"\.graph: <graph> .*ValueError: node 'a' links to unknown nodes \['zz'\]"):
        Network.insert(rows)
    with pytest.raises(mp.DataError, match=r"\.graph: NULL is not allowed"):
        Network.insert1({"net": 3, "graph": None})
    assert len(Network) == 0


def test_decode_failures_name_the_attribute(schema):
    class Strict(mp.Codec):
        name = "strict_json"
        dtype = "json"

        def encode(self, value, *, key=None, store_name=None):
            return value

        def decode(self, stored, *, key=None):
            return stored["v"]

    try:

        @schema
        class Doc(mp.Manual):
            definition = """
            doc : int
            ---
            body : <strict_json>
            """

        Doc.insert([{"doc": 1, "body": {"v": 7}}, {"doc": 2, "body": {"w": 1}}])
        assert (Doc & {"doc": 1}).fetch1("body") == 7
        with pytest.raises(mp.DataError, match=rf"{Doc.full_name}: body: <strict_json> cannot decode.*KeyError"):
            Doc.fetch()
    finally:
        codecs.unregister_codec("strict_json")


@pytest.mark.parametrize(
    ("type_text", "message"),
    [
        ("<nope>", r"\.g: unknown codec <nope>"),
        ("<graph@raw>", r"\.g: codec <graph> does not support object stores"),
        ("<wgraph@raw>", r"\.g: codec <wgraph> does not support object stores"),
        ("<blob@nowhere>", r"\.g: store 'nowhere' is not configured: set MP_DAGSTER_STORE_NOWHERE"),
        ("<npy>", r"\.g: codec <npy> keeps its values in an object store"),
        ("<Graph>", r"\.g: malformed codec type '<Graph>'"),
        ("<graph@Raw!>", r"\.g: malformed"),
    ],
)
def test_unknown_codecs_and_refused_stores_are_declaration_errors(schema, type_text, message):
    with pytest.raises(mp.DeclarationError, match=message):

        @schema
        class Net(mp.Manual):
            definition = f"""
            net : int
            ---
            g : {type_text}
            """


def test_codecs_cannot_be_keys_or_have_defaults(schema):
    with pytest.raises(mp.DeclarationError, match=r"\.g: .*cannot be part of the primary key"):

        @schema
        class Keyed(mp.Manual):
            definition = """
            g : <graph>
            """

    with pytest.raises(mp.DeclarationError, match=r"\.g: <graph> attributes can only default to null"):

        @schema
        class Defaulted(mp.Manual):
            definition = """
            net : int
            ---
            g = '{}' : <graph>
            """


def test_store_names_are_parsed_into_the_attribute(schema, monkeypatch, tmp_path):
    monkeypatch.setenv("MP_DAGSTER_STORE_RAW", (tmp_path / "raw").as_uri())

    @schema
    class Raw(mp.Manual):
        definition = """
        raw_id : int
        ---
        data : <store_echo@raw>
        """

    attr = Raw.heading["data"]
    assert (attr.type.codec, attr.type.store, str(attr.type)) == ("store_echo", "raw", "<store_echo@raw>")
    Raw.insert1({"raw_id": 1, "data": b"\x00\x01"})
    assert Raw.fetch1("data") == b"\x00\x01"


def test_the_meta_spec_remembers_the_codec(schema):
    @schema
    class Network(mp.Manual):
        definition = """
        net : int
        ---
        graph : <graph>
        """

    Network.insert1({"net": 1, "graph": RING})
    for other, fragments in [("longblob", ["'graph'", "'<graph>' in the database", "'blob' in the class"]),
                             ("<wgraph>", ["'<graph>' in the database", "'<wgraph>' in the class"]),
                             ("json", ["'<graph>' in the database", "'json' in the class"])]:
        with pytest.raises(mp.DeclarationError) as info:

            @schema
            class Network(mp.Manual):  # noqa: F811
                definition = f"""
                net : int
                ---
                graph : {other}
                """

        for fragment in fragments:
            assert fragment in str(info.value)

    @schema
    class Network(mp.Manual):  # noqa: F811 - the same definition again: no drift
        definition = """
        net : int
        ---
        graph : < graph >   # spelled loosely
        """

    assert Network.fetch1("graph") == RING


def test_codec_in_a_part_table_written_by_make(schema):
    @schema
    class Network(mp.Manual):
        definition = """
        net : int
        ---
        graph : <graph>
        """

    @schema
    class Analysis(mp.Computed):
        definition = """
        -> Network
        ---
        n_components : int
        """

        class Component(mp.Part):
            definition = """
            -> master
            component : int
            ---
            subgraph : <graph>
            weights : <wgraph>
            """

        def make(self, key):
            graph = (Network & key).fetch1("graph")
            parts = components(graph)
            self.insert1(dict(key, n_components=len(parts)))
            self.Component.insert(
                dict(key, component=i, subgraph={n: graph[n] for n in nodes},
                     weights={(a, b): 1.0 for a in nodes for b in graph[a]})
                for i, nodes in enumerate(parts)
            )

    Network.insert([{"net": 1, "graph": RING}, {"net": 2, "graph": {"x": ["y"], "y": [], "z": []}}])
    assert Analysis.populate() == {"success_count": 2, "error_list": []}
    assert (Analysis & {"net": 1}).fetch1("n_components") == 2
    sub = (Analysis.Component & {"net": 1, "component": 0}).fetch1()
    assert sub["subgraph"] == {"a": ["b"], "b": ["c"], "c": ["a"]}
    assert sub["weights"] == {("a", "b"): 1.0, ("b", "c"): 1.0, ("c", "a"): 1.0}
    assert (Analysis.Component & {"net": 2}).fetch("subgraph", order_by="component").tolist() == [
        {"x": ["y"], "y": []}, {"z": []}]


def test_a_failing_codec_in_make_leaves_nothing(schema):
    @schema
    class Network(mp.Manual):
        definition = """
        net : int
        ---
        graph : <graph>
        """

    @schema
    class Broken(mp.Computed):
        definition = """
        -> Network
        """

        class Piece(mp.Part):
            definition = """
            -> master
            piece : int
            ---
            g : <graph>
            """

        def make(self, key):
            self.insert1(key)
            self.Piece.insert([dict(key, piece=0, g=RING), dict(key, piece=1, g={"a": ["missing"]})])

    Network.insert1({"net": 1, "graph": RING})
    with pytest.raises(mp.DataError, match=rf"{Broken.Piece.full_name}\.g: <graph>"):
        Broken.populate()
    assert len(Broken) == 0 and len(Broken.Piece) == 0
