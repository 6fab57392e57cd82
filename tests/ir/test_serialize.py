"""export: GraphML, DOT and JSON node-link that other tools read back, with plain attributes."""

import json

import networkx as nx
import pydot
import pytest

import graphscope as gs
from graphscope import demo
from graphscope.ir import serialize as export


@pytest.fixture(scope="module")
def scope():
    return gs.trace(demo.proposal_model(variant="map_fn"))


def _plain(value):
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def test_graphml_round_trips_through_networkx(scope, tmp_path):
    path = tmp_path / "demo.graphml"
    text = scope.export("graphml", path)
    assert path.read_text() == text
    H = nx.read_graphml(path)
    assert set(H) == set(scope.graph) and H.number_of_edges() == scope.graph.number_of_edges()
    nms = scope.find(op_type="NonMaxSuppressionV3")[0]
    attrs = H.nodes[nms.op]
    assert attrs["type"] == "NonMaxSuppressionV3" and attrs["layer"] == "ROI"
    assert attrs["context"] == "ROI/map/while:body" and attrs["outputs"] == nms.name
    assert attrs["dtypes"] == "int32" and attrs["shapes"] == "[?]" and attrs["n_outputs"] == 1
    assert all(_plain(v) for _, data in H.nodes(data=True) for v in data.values())
    edge = H.edges["conv1/Relu", "conv2/convolution"]
    assert edge["tensors"] == "conv1/Relu:0"


def test_json_node_link_round_trips(scope):
    data = json.loads(scope.export("json"))
    H = nx.node_link_graph(data, edges="edges")
    assert set(H) == set(scope.graph) and H.number_of_edges() == scope.graph.number_of_edges()
    assert data["graph"]["inputs"] == "input_image:0"
    assert all(_plain(v) for node in data["nodes"] for v in node.values())


def test_dot_parses_back_with_pydot(scope):
    text = scope.export("dot")
    (dot,) = pydot.graph_from_dot_data(text)
    H = nx.nx_pydot.from_pydot(dot)
    assert set(H) == set(scope.graph) and H.number_of_edges() == scope.graph.number_of_edges()
    assert H.nodes["conv1/Relu"]["type"] == "Relu"


def test_plain_graph_of_a_nested_function_keeps_the_call_chain(map_fn_scope):
    scope = map_fn_scope
    H = export.plain_graph(scope.graph)
    body_ops = [n for n, d in H.nodes(data=True) if d["context"]]
    assert body_ops and all("ROI/map/while" in H.nodes[n]["function"] for n in body_ops)


def test_unknown_format():
    with pytest.raises(gs.GraphscopeError, match="choose graphml, dot or json"):
        export.export(nx.DiGraph(), "yaml")


def test_unused_ops_survive_a_round_trip():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    def doubled(x):
        tf.sin(x, name="wasted")  # computed, never used
        return x * 2.0

    scope = gs.trace(doubled, quiet=True)
    assert scope.unused == {"wasted"}
    again = gs.ModelGraph(export.graph_from_data(json.loads(json.dumps(export.graph_data(scope.graph)))))
    assert again.unused == scope.unused
    assert again.find("wasted").names == [] and again.find("wasted", include_unused=True).names == ["wasted:0"]
    data = export.graph_data(scope.graph)
    del data["graph"]["unused"]  # a store written before unused ops were kept: none are
    assert gs.ModelGraph(export.graph_from_data(data)).unused == frozenset()
