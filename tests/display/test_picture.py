"""display.picture: drawings of a neighbourhood (DOT, and SVG where Graphviz is installed)."""

import shutil

import pytest

import graphscope as gs


def test_picture_of_a_tensor_in_a_loop_groups_by_layer_and_body(map_fn_scope):
    scope = map_fn_scope
    nms = scope.find(op_type="NonMaxSuppressionV3")[0]
    picture = scope.draw(nms, radius=4)
    source = picture.source
    assert 'label=ROI;' in source and 'label="body of while";' in source
    assert f'"{nms.op}" [label="NonMaxSuppressionV3\\n[?]", tooltip="{nms.op}", fillcolor="#ffe08a"];' in source
    assert '"ROI/map/while/TensorArrayV2Read/TensorListGetItem" -> "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3";' in source
    assert "Const" not in source  # constants left out
    # the radius bounds the walk: every op drawn is at most 4 ops upstream of the NMS
    drawn = {n for n in scope.graph if f'"{n}" [' in source}
    assert nms.op in drawn and len(drawn) == picture.n_ops
    near = {nms.op}
    for _ in range(4):
        near |= {p for n in near for p in scope.graph.pred[n]}
    assert drawn <= near
    layer_picture = scope.draw("rpn_class", radius=2)
    assert repr(layer_picture) == "<Picture layer rpn_class: 3 ops>"
    assert '"rpn_class_raw/BiasAdd" -> "rpn_class_logits/Reshape";' in layer_picture.source


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed (.ci/run installs it)")
def test_picture_svg_with_graphviz(functional_scope, tmp_path):
    picture = functional_scope.draw("dense/BiasAdd:0", radius=2)
    svg = picture.svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "dense/BiasAdd" in svg
    assert picture._repr_mimebundle_()["image/svg+xml"] == svg
    picture.save(str(tmp_path / "p.svg"))
    assert (tmp_path / "p.svg").read_text() == svg


def test_picture_svg_needs_graphviz_and_says_how_to_get_it(functional_scope, monkeypatch, tmp_path):
    picture = functional_scope.draw("dense/BiasAdd:0", radius=2)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    with pytest.raises(gs.GraphvizNotFoundError, match="apt install graphviz"):
        picture.svg()
    bundle = picture._repr_mimebundle_()  # a notebook still shows something useful
    assert "image/svg+xml" not in bundle and "graphviz" in bundle["text/plain"]
    assert "digraph" in bundle["text/html"]
    picture.save(str(tmp_path / "p.dot"))  # DOT needs no Graphviz
    assert (tmp_path / "p.dot").read_text().startswith("digraph")


def test_picture_of_an_unknown_name_suggests_names(functional_scope):
    scope = functional_scope
    with pytest.raises(gs.TensorNotFoundError, match="dense/BiasAdd:0"):
        scope.draw("dense/BiasAd:0")
    with pytest.raises(ValueError, match="radius"):
        scope.draw("dense/BiasAdd:0", radius=-1)
