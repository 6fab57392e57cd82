"""Saved runs reopened without the model: lazy arrays, metadata, and the graph's queries."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import graphscope as gs
from graphscope import demo
from graphscope.ir.serialize import graph_data, graph_from_data

ROOT = pathlib.Path(__file__).parents[1]
NMS = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    scope = gs.trace(demo.proposal_model(variant="map_fn", batch_size=None), quiet=True)
    out = tmp_path_factory.mktemp("bundle") / "run.zarr"
    images = demo.synthetic_images(12, seed=2)
    scope.extract(["conv1/BiasAdd:0", NMS, "rpn_class/Softmax:0"], images, out=out, batch_size=5)
    return scope, out, images


def test_graph_round_trips_with_every_record(saved):
    scope = saved[0]
    G = graph_from_data(graph_data(scope.graph))
    assert list(G.nodes) == list(scope.graph.nodes) and set(G.edges) == set(scope.graph.edges)
    for name in G:
        assert G.nodes[name]["op"] == scope.graph.nodes[name]["op"]
        assert G.nodes[name]["tensors"] == scope.graph.nodes[name]["tensors"]
    assert [lay.name for lay in G.graph["layers"]] == [lay.name for lay in scope.layers]
    assert G.graph["names"] == scope.graph.graph["names"]


def test_queries_on_the_saved_run_match_the_model(saved):
    scope, out, _ = saved
    bundle = gs.open(out)
    assert bundle.find("BiasAdd").names == scope.find("BiasAdd").names
    assert bundle.ancestors("ROI", op_type="NonMaxSuppressionV3").names == [NMS]
    assert bundle.descendants("conv2/Relu:0").names == scope.descendants("conv2/Relu:0").names
    assert bundle.layer("ROI").outputs.names == scope.layer("ROI").outputs.names
    assert bundle.tensor(NMS).context == "ROI/map/while:body"


def test_indexing_length_and_arrays(saved):
    scope, out, images = saved
    bundle = gs.open(out)
    assert len(bundle) == 3 and bundle.names == ["conv1/BiasAdd:0", NMS, "rpn_class/Softmax:0"]
    assert bundle.model == "mask_rcnn_demo_map_fn" and bundle.complete and bundle.samples == 12
    conv = bundle["conv1/BiasAdd:0"]
    # in the extract's batches of 5: a convolution's last bits may depend on the batch size
    expected = np.concatenate([scope.run("conv1/BiasAdd:0", images[i : i + 5])["conv1/BiasAdd:0"] for i in range(0, 12, 5)])
    assert len(conv) == 12 and conv.shape == (12, 32, 32, 16) and conv.dtype == np.float32
    np.testing.assert_array_equal(conv[3], expected[3])
    np.testing.assert_array_equal(conv[-1], expected[-1])
    np.testing.assert_array_equal(conv[2:9], expected[2:9])
    np.testing.assert_array_equal(conv[::4], expected[::4])
    np.testing.assert_array_equal(np.asarray(conv), expected)
    assert np.asarray(conv, dtype=np.float64).dtype == np.float64
    with pytest.raises(IndexError, match="12 entries"):
        conv[12]
    nms = bundle[NMS]
    per_image = scope.run(NMS, images)[NMS]
    assert [list(nms[i]) for i in range(12)] == [list(v) for v in per_image]
    assert [list(v) for v in nms[1:3]] == [list(v) for v in per_image[1:3]]
    assert nms.shape == (12, None)
    np.testing.assert_array_equal(np.asarray(nms), per_image)  # every image kept 32: stacks
    with pytest.raises(AttributeError, match="dense"):
        conv.offsets
    assert "conv1/BiasAdd:0" in bundle and list(bundle) == bundle.names
    assert repr(bundle) == f"<Bundle {out}: mask_rcnn_demo_map_fn, 3 tensors, 12 samples>"
    assert repr(nms) == f"<StoredTensor {NMS} int32[12,?] per sample ragged>"
    assert conv.attrs["op_type"] == "BiasAdd"


def test_names_are_resolved_and_explained(saved):
    bundle = gs.open(saved[1])
    raw = bundle.tensor("conv1/BiasAdd:0").raw_name
    assert bundle[raw].name == "conv1/BiasAdd:0"
    with pytest.raises(gs.TensorNotFoundError, match="Did you mean 'conv1/BiasAdd:0'"):
        bundle["conv1/BiasAd:0"]
    with pytest.raises(gs.TensorNotFoundError, match="not stored"):
        bundle["conv2/Relu:0"]


def test_open_explains_what_is_not_a_store(tmp_path):
    with pytest.raises(gs.StoreError, match="no store at"):
        gs.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(gs.StoreError, match="not a store graphscope wrote"):
        gs.open(tmp_path / "plain")


def test_rich_table(saved):
    from rich.console import Console

    console = Console(width=100, color_system=None, record=True)
    console.print(gs.open(saved[1]))
    text = console.export_text()
    assert "conv1/BiasAdd:0" in text and "per sample" in text and "ragged" in text and "[32,32,16]" in text


def test_a_saved_run_opens_without_tensorflow(saved):
    """Reading a store, querying its graph and `graphscope open` import neither TensorFlow
    nor Keras (seconds saved, and a saved run reads where they do not load)."""
    out = saved[1]
    code = f"""
import sys
import numpy as np
import graphscope as gs
from graphscope import cli
bundle = gs.open({str(out)!r})
assert np.asarray(bundle["conv1/BiasAdd:0"]).shape == (12, 32, 32, 16)
assert bundle.ancestors("ROI", op_type="NonMaxSuppressionV3").names == [{NMS!r}]
assert bundle.layer("ROI").type == "ProposalLayer"
assert cli.main(["open", {str(out)!r}, {NMS!r}, "--index", "3"]) == 0
loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NonMaxSuppressionV3:0[3]" in done.stdout


def test_the_table_keeps_names_whole_at_any_width(saved):
    from graphscope.display.format import to_text

    bundle = gs.open(saved[1])
    for width in (40, 60, 80, 120):
        lines = to_text(bundle, width=width).splitlines()
        for name in ("conv1/BiasAdd:0", NMS, "rpn_class/Softmax:0"):
            assert any(name in line for line in lines), (width, name)
    wide = to_text(bundle, width=120)
    assert any(NMS in line and "per sample" in line for line in wide.splitlines())  # one row per tensor
