"""Bad input: each mistake gets a GraphscopeError that says what was wrong and what would be right."""

import numpy as np
import pytest

import graphscope as gs
from graphscope import demo
from tests import models


@pytest.fixture(scope="module")
def multi():
    return gs.trace(models.multi_input())


def test_fetch_needing_an_unfed_input_names_it(multi):
    with pytest.raises(gs.DisconnectedError, match=r"meta:0 \(needed by add/Add:0\)") as e:
        multi.executor(["add/Add:0"], feeds=["img_dense/BiasAdd:0"])
    assert isinstance(e.value, ValueError) and "feeds" in str(e.value)
    # the same fetch builds when the missing input is fed by name
    ex = multi.executor(["add/Add:0"], feeds=["img_dense/BiasAdd:0", "meta"])
    assert ex.inputs == ["img_dense/BiasAdd:0", "meta"]
    img, meta = models.sample_inputs(models.multi_input())
    full = multi.run(["img_dense/BiasAdd:0", "add/Add:0"], [img, meta])
    part = ex([full["img_dense/BiasAdd:0"], meta])
    np.testing.assert_allclose(part["add/Add:0"], full["add/Add:0"], rtol=1e-6)


def test_feed_that_reaches_no_fetch(multi):
    with pytest.raises(gs.DisconnectedError, match=r"meta_dense/BiasAdd:0 is not upstream of any fetch"):
        multi.executor(["img_dense/BiasAdd:0"], feeds=["img", "meta_dense/BiasAdd:0"])


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda ex, x: ex(x, x, x), r"takes 1 input \(image\), got 3"),
        (lambda ex, x: ex(x[:, :4]), r"expects shape \(None, 8, 8, 3\), got \(3, 4, 8, 3\)"),
        (lambda ex, x: ex(x[0]), r"expects shape .*got \(8, 8, 3\)"),
        (lambda ex, x: ex(np.array([["a"]])), r"must be a numeric array \(float32\)"),
        (lambda ex, x: ex(x.astype(np.complex64)), r"expects float32, got complex64"),
        (lambda ex, x: ex({"imgae": x}), r"unknown input 'imgae'.*Did you mean 'image'"),
        (lambda ex, x: ex({}), r"missing input: image"),
    ],
)
def test_wrong_inputs(call, pattern):
    model = models.functional()
    ex = gs.trace(model).executor("dense/Tanh:0")
    x = models.sample_inputs(model)[0]
    with pytest.raises(gs.InputError, match=pattern) as e:
        call(ex, x)
    assert isinstance(e.value, ValueError)


def test_safe_casts_are_accepted():
    model = models.functional()
    ex = gs.trace(model).executor("dense/Tanh:0")
    x = models.sample_inputs(model)[0]
    want = ex(x)["dense/Tanh:0"]
    np.testing.assert_allclose(ex(x.astype(np.float64))["dense/Tanh:0"], want, rtol=1e-6)
    assert ex(np.ones((1, 8, 8, 3), np.int64))["dense/Tanh:0"].shape == (1, 6)


def test_resource_tensors_are_refused():
    scope = gs.trace(models.functional())
    (handle,) = scope.find(r"^dense/MatMul/ReadVariableOp/resource:0$") or scope.find(r"^dense/.*resource:0$")[:1]
    with pytest.raises(gs.UnsupportedFetchError, match=r"resource tensor .* ReadVariableOp"):
        scope.executor([handle])


def test_feeding_a_tensor_inside_a_loop_body_is_refused():
    scope = gs.trace(demo.proposal_model(variant="map_fn"))
    (nms,) = scope.find(op_type="NonMaxSuppressionV3")
    boxes = scope.op(nms.op).inputs[0]
    with pytest.raises(gs.UnsupportedFetchError, match=r"cannot feed .* inside ROI/map/while:body, where it has one value per iteration"):
        scope.executor([nms], feeds=[boxes])


def test_unknown_fetch_and_nothing_to_fetch():
    scope = gs.trace(models.functional())
    with pytest.raises(gs.TensorNotFoundError, match="Did you mean"):
        scope.executor(["dense/Tahn:0"])
    with pytest.raises(gs.TensorNotFoundError, match="nothing to fetch"):
        scope.executor([])
    with pytest.raises(TypeError, match="expected tensor names"):
        scope.executor(3)


def test_errors_while_running_name_the_op():
    import keras
    import tensorflow as tf

    class Checked(keras.layers.Layer):
        def call(self, x):
            tf.debugging.assert_non_negative(x, message="values must be non-negative")
            return tf.sqrt(x)

    x_in = keras.Input((2,))
    scope = gs.trace(keras.Model(x_in, Checked(name="checked")(x_in)))
    ex = scope.executor(scope.outputs)
    ex(np.ones((1, 2), np.float32))
    with pytest.raises(gs.ExecutionError, match=r"TensorFlow failed in op 'checked/.*non-negative"):
        ex(-np.ones((1, 2), np.float32))
