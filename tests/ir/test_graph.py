"""ir.graph and ir.records: the ModelGraph (one resolver, its metadata, frozen) and pure records."""

import dataclasses

import networkx as nx
import pytest

import graphscope as gs
from graphscope.ir.records import HANDLE_DTYPES, Tensor, shape_text
from tests import models


def test_records_hold_what_a_model_is_and_nothing_the_runtime_needs():
    fields = [f.name for f in dataclasses.fields(Tensor)]
    assert fields == ["name", "raw_name", "op", "op_type", "index", "dtype", "shape", "layer", "function"]
    handle = Tensor("v:0", "v:0", "v", "VarHandleOp", 0, "resource", (), None)
    assert handle.is_handle and not dataclasses.replace(handle, dtype="float32").is_handle
    assert HANDLE_DTYPES == ("resource", "variant")


def test_one_shape_spelling(functional_scope, tmp_path):
    """Reprs, tables, trees, errors and exports spell a shape the same way."""
    t = functional_scope.tensor("dense/BiasAdd:0")
    assert shape_text(t.shape) == "[?,6]"
    assert "float32[?,6]" in repr(t)
    assert "[?,6]" in str(functional_scope.find("dense/BiasAdd:0"))
    assert "[?,6]" in str(functional_scope.layer_tree())
    assert "shapes=\"[?,6]\"" in functional_scope.export("dot") or "[?,6]" in functional_scope.export("graphml")
    with pytest.raises(gs.InputError, match=r"expects shape \[\?,8,8,3\]"):
        functional_scope.run("dense/BiasAdd:0", [[1.0]])


def test_resolve_takes_every_spelling_of_a_thing(functional_scope):
    graph = functional_scope.model_graph
    dense = graph.layer("dense")
    bias = graph.tensor("dense/BiasAdd:0")
    assert graph.resolve("dense/BiasAdd:0") == graph.resolve(bias.raw_name) == graph.resolve("dense/BiasAdd") == [bias]
    assert graph.resolve("dense") == graph.resolve(dense) == list(dense.outputs)  # a layer: its outputs
    assert graph.resolve("image") == list(graph.inputs)  # a model input by name
    assert graph.resolve(gs.Selection([bias])) == [bias]
    assert graph.resolve_pairs(["dense/BiasAdd", "dense"]) == [("dense/BiasAdd", bias), (dense.output.name, dense.output)]
    with pytest.raises(gs.ArgumentError, match="got int"):
        graph.resolve(3)
    with pytest.raises(gs.TensorNotFoundError, match="Did you mean 'dense'"):
        graph.resolve("dens")


def test_a_model_graph_is_frozen_and_describes_itself(functional_scope):
    graph = functional_scope.model_graph
    assert nx.is_frozen(graph.graph)
    assert repr(graph) == f"<ModelGraph functional_cnn: {graph.n_ops} ops, {graph.n_layers} layers>"
    assert graph.n_layers == len(functional_scope.model.layers)
    assert graph.input_names == ["image"] and [t.op_type for t in graph.outputs] == ["Softmax"]  # not its Identity copy
    assert graph.model_type == "Functional"


def test_stand_ins_are_marked_by_the_mirror():
    scope = gs.trace(models.loops_and_branches())
    stand_ins = scope.model_graph.stand_ins
    assert stand_ins and all(n.rpartition("/")[2].startswith("redundant_placeholder") for n in stand_ins)
    in_layers = {op.name for lay in scope.layers for op in lay.ops}
    assert stand_ins & in_layers  # they belong to layers' loops...
    shown = {node.key for node, _ in scope.layer_tree(ops=True, depth=9)._root.walk()}
    assert not stand_ins & shown  # ...but op trees leave them out


def test_adopting_a_graph_freezes_it_where_it_is_and_answers_as_a_copy_would(functional_scope):
    from graphscope.ir.graph import ModelGraph

    source = functional_scope.graph
    fresh = nx.DiGraph(source)  # an unfrozen graph of the same nodes, edges and tables
    fresh.graph.update({k: v.copy() if isinstance(v, (dict, list, set)) else v for k, v in source.graph.items()})
    copied, adopted = ModelGraph(fresh), ModelGraph.adopt(fresh)
    assert adopted.graph is fresh and nx.is_frozen(fresh) and copied.graph is not fresh
    with pytest.raises(nx.NetworkXError):
        fresh.add_node("x")
    assert adopted.find("BiasAdd").names == copied.find("BiasAdd").names == functional_scope.find("BiasAdd").names
    assert adopted.ancestors(adopted.outputs[0]).names == copied.ancestors(copied.outputs[0]).names
    # a frozen graph, someone else's, is copied as ModelGraph(G) copies it
    again = ModelGraph.adopt(fresh)
    assert again.graph is not fresh and again.find("BiasAdd").names == copied.find("BiasAdd").names
