"""TensorBoard export: the event file, read back with TensorBoard's own EventAccumulator, holds
the mirrored graph with canonical names, layers as scopes, and loop bodies inside their caller."""

import keras
import pytest

import graphscope as gs

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return acc.Graph()


def test_the_graph_tensorboard_reads_has_canonical_names_and_layer_scopes(tmp_path):
    model = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    scope = gs.trace(model, quiet=True)
    path = scope.export("tensorboard", tmp_path / "logs")
    assert path.startswith(str(tmp_path / "logs")) and "tfevents" in path
    graph = _read(tmp_path / "logs")
    nodes = {n.name: n for n in graph.node}
    assert set(nodes) == set(scope.graph)  # every op, under its canonical name
    assert "block4_conv3/BiasAdd" in nodes and not any(n.startswith("vgg19_1/") for n in nodes)
    bias = nodes["block4_conv3/BiasAdd"]
    assert bias.op == "BiasAdd" and list(bias.input) == [t.removesuffix(":0") for t in scope.op("block4_conv3/BiasAdd").inputs]
    assert all(i.startswith("block4_conv3/") for i in bias.input)  # inside its layer's scope
    assert bias.attr["layer"].s == b"block4_conv3"
    assert bias.attr["raw_name"].s.decode() == scope.op("block4_conv3/BiasAdd").raw_name
    assert [d.size for d in bias.attr["_output_shapes"].list.shape[0].dim] == [-1, 4, 4, 512]


def test_loop_bodies_and_nested_functions_are_inside_their_caller(tmp_path, map_fn_scope):
    scope = map_fn_scope
    scope.export("tensorboard", tmp_path)
    nodes = {n.name: n for n in _read(tmp_path).node}
    nms = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3"
    assert nms in nodes and nodes[nms].attr["function"].s == b"ROI/map/while:body"
    # wired: the loop's body result feeds the loop op, and the NMS reads the body's own tensors
    assert all(i.split(":")[0] in nodes for n in nodes.values() for i in n.input)
    loop = scope.op("ROI/map/while")
    assert set(nodes["ROI/map/while"].input) == {t.removesuffix(":0") for t in loop.inputs}


def test_the_command_line_writes_it_and_says_how_to_view_it(tmp_path):
    from graphscope import cli

    assert cli.main(["--quiet", "export", "demo", "--format", "tensorboard", "--out", str(tmp_path)]) == 0
    assert "ROI/rpn_non_max_suppression/NonMaxSuppressionV3" in {n.name for n in _read(tmp_path).node}
    with pytest.raises(SystemExit):
        cli.main(["export", "demo", "--format", "tensorboard"])


def test_a_tensorboard_export_needs_a_directory(functional_scope):
    with pytest.raises(gs.OptionError, match="give the directory"):
        functional_scope.export("tensorboard")
