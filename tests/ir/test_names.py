"""names: the canonical naming rules."""

from graphscope.backend.mirror import canonical_op_name
from graphscope.ir.names import qualify, split_tensor_name, uniquify


def test_keras_suffixes_are_removed_for_the_layers_that_made_the_op():
    scopes = [("vgg19", None), ("block4_conv3", "block4_conv3")]
    assert canonical_op_name("vgg19_1/block4_conv3_1/BiasAdd", scopes) == "block4_conv3/BiasAdd"


def test_layer_names_that_end_in_digits():
    assert canonical_op_name("m_1/conv_1_1/Relu", [("m", None), ("conv_1", "conv_1")]) == "conv_1/Relu"
    assert canonical_op_name("m_1/conv_2/Relu", [("m", None), ("conv", "conv")]) == "conv/Relu"


def test_nested_models_and_repeated_calls():
    scopes = [("outer", None), ("backbone", "backbone@2"), ("conv1", "conv1")]
    assert canonical_op_name("outer_1/backbone_3/conv1_1/BiasAdd", scopes) == "backbone@2/conv1/BiasAdd"


def test_other_scopes_and_the_op_name_are_kept():
    scopes = [("m", None), ("ROI", "ROI")]
    raw = "m_1/ROI_1/map/while/rpn_non_max_suppression/NonMaxSuppressionV3"
    assert canonical_op_name(raw, scopes) == "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3"
    assert canonical_op_name("ROI", [("ROI", "ROI")]) == "ROI"  # the op's own name never matches
    assert canonical_op_name("Identity", []) == "Identity"


def test_qualify_and_uniquify():
    assert qualify("loop/while/Less", "loop/while", "cond") == "loop/while/cond/Less"
    assert qualify("Less", "loop/while", "cond") == "loop/while/cond/Less"
    assert uniquify("a", {"a", "a_1"}) == "a_2"
    assert uniquify("b", {"a"}) == "b"


def test_split_tensor_name():
    assert split_tensor_name("a/b:12") == ("a/b", 12)
    assert split_tensor_name("a/b") == ("a/b", None)
    assert split_tensor_name("a:b") == ("a:b", None)
