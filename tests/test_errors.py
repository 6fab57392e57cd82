"""Bad input: each mistake gets a GraphscopeError that says what was wrong and what would be right.

`WRONG` is the catalogue: one entry per distinct wrong use, each with the error class, the
builtin it must also be (so `except KeyError` keeps working), and a pattern the message must
match, naming both the mistake and the way out. Every entry is also checked for what must never
happen: a TensorFlow traceback in the message, a raw TensorFlow error chained behind it, or a
changed model. The CLI's share of the catalogue is at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope import cli, demo
from tests import models


class Halves(keras.layers.Layer):
    """One op with two outputs (split), and a layer with two outputs."""

    def call(self, x):
        a, b = tf.split(x, 2, axis=-1)
        return a * b, a + b


class ArgmaxAsFloat(keras.layers.Layer):
    """A float output no gradient reaches: the argmax of its input, cast back to float."""

    def call(self, x):
        return tf.cast(tf.argmax(x, axis=-1), tf.float32) + 0.0 * tf.stop_gradient(x[:, 0])


@functools.cache
def _argmax_scope() -> gs.Scope:
    x_in = keras.Input((3,), name="scores")
    return gs.trace(keras.Model(x_in, ArgmaxAsFloat(name="argmax")(keras.layers.Dense(3, name="d")(x_in))),
                    quiet=True)


class LoopInBranch(keras.layers.Layer):
    def call(self, x):
        return tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.map_fn(lambda r: tf.tanh(r) * 2.0, x), lambda: x - 1.0)


@functools.cache
def _loop_in_branch_scope() -> gs.Scope:
    x_in = keras.Input((4,), name="x")
    return gs.trace(keras.Model(x_in, LoopInBranch(name="lib")(x_in)), quiet=True)


class Checked(keras.layers.Layer):
    def call(self, x):
        tf.debugging.assert_non_negative(x, message="values must be non-negative")
        return tf.sqrt(x)


class SizeBranch(keras.layers.Layer):
    """Branches in Python on its input's length: traceable only where that length is known.
    Its output shape is declared, so Keras builds a functional model around it without calling it."""

    def call(self, x):
        length = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]  # as keras-hub's DeepLabV3 does
        if length > 3:  # a symbolic tensor as a Python bool, where the length is unknown
            return x * 2.0
        return x

    def compute_output_shape(self, shape):
        return shape


def _size_branch_model():
    seq = keras.Input((None, 3), name="seq")
    return keras.Model(seq, SizeBranch(name="branch")(seq), name="size_branch")


@dataclasses.dataclass
class World:
    """Everything the catalogue's calls are made on, built once."""

    cnn: keras.Model  # functional CNN, input 'image' (None, 8, 8, 3)
    scope: gs.Scope
    multi: gs.Scope  # inputs img, meta
    halves: gs.Scope
    checked: gs.Scope
    mapped: gs.Scope  # the demo with NMS inside tf.map_fn
    x: np.ndarray
    files: Any  # a folder of broken files


def _stored_run(w):
    """A run of the CNN's layer outputs on `w.x`, stored in the world's folder once."""
    path = w.files / "stored_run.zarr"
    if not path.exists():
        w.scope.extract(gs.presets.layer_outputs(w.scope), w.x, out=path, quiet=True)
    return gs.open(path)


def _files(folder):
    """Broken and unsafe model files, and unreadable arrays."""
    (folder / "bad.keras").write_bytes(b"not a zip")
    (folder / "bad.h5").write_bytes(b"not hdf5")
    (folder / "model.txt").write_text("x")
    (folder / "not_saved_model").mkdir()
    (folder / "corrupt_sm").mkdir()
    (folder / "corrupt_sm" / "saved_model.pb").write_bytes(b"garbage")
    x_in = keras.Input((2,))
    keras.Model(x_in, keras.layers.Lambda(lambda t: t * 2)(x_in)).save(folder / "lambda.keras")

    @keras.saving.register_keras_serializable(package="graphscope_tests")
    class Vanished(keras.layers.Layer):
        def call(self, x):
            return x + 1

    x_in = keras.Input((2,))
    keras.Model(x_in, Vanished()(x_in)).save(folder / "custom.keras")
    del keras.saving.get_custom_objects()["graphscope_tests>Vanished"]  # as in a fresh process
    np.save(folder / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "noise.npy").write_bytes(bytes(range(256)) * 4)
    (folder / "truncated.npy").write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr': '<f4'")
    module = tf.Module()  # a SavedModel with one signature, serving_default
    module.f = tf.function(lambda v: v * 2.0, input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    tf.saved_model.save(module, str(folder / "doubling"), signatures=module.f)
    models.save_two_signatures(folder / "two")  # 'embed' takes x (?, 4) and bias (?, 2)
    np.save(folder / "x.npy", np.ones((2, 4), np.float32))
    return folder


def _without(G, op):
    """A copy of `G` without the op `op` (the copy shares G's tables of tensors and names)."""
    H = G.copy()
    H.remove_node(op)
    return H


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cnn = models.functional()
    x_in = keras.Input((4,), name="pair")
    a, b = Halves(name="halves")(x_in)
    c_in = keras.Input((2,))
    return World(
        cnn=cnn,
        scope=gs.trace(cnn),
        multi=gs.trace(models.multi_input()),
        halves=gs.trace(keras.Model(x_in, [a, b])),
        checked=gs.trace(keras.Model(c_in, Checked(name="checked")(c_in))),
        mapped=gs.trace(demo.proposal_model(variant="map_fn")),
        x=models.sample_inputs(cnn)[0],
        files=_files(tmp_path_factory.mktemp("broken")),
    )


@dataclasses.dataclass
class Wrong:
    what: str
    call: Callable[[World], Any]
    error: type[gs.GraphscopeError]
    base: type[Exception]
    says: str  # regex: the mistake and the way out


@functools.cache
def _fixed_batch_scope():
    x_in = keras.Input((3,), batch_size=4)
    return gs.trace(keras.Model(x_in, keras.layers.Dense(2, name="dense")(x_in)), quiet=True)


def _nms_input(w):
    (nms,) = w.mapped.find(op_type="NonMaxSuppressionV3")
    return w.mapped.executor([nms], feeds=[w.mapped.op(nms.op).inputs[0]])


class ReadsAnUnusedTensor(keras.layers.Layer):
    """A custom gradient that reads a forward tensor its output does not depend on (so an
    executor, pruned to what the output needs, does not hold it)."""

    def call(self, x):
        @tf.custom_gradient
        def odd(v):
            unused = tf.sin(v, name="unused")

            def grad(dy):
                return dy * unused

            return v * 2.0, grad

        return odd(x)


def _edit_of_an_unused_tensor(w):
    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    def doubled(x):
        tf.sin(x, name="wasted")  # computed, never used
        return x * 2.0

    scope = gs.trace(doubled, quiet=True)
    return scope.executor(scope.outputs, edits={"wasted:0": lambda v: v})


def _saved_signature(w):
    return w.files / "doubling"  # saved by `_files`


def _custom_gradient_off_the_graph(w):
    x_in = keras.Input((3,), name="x")
    scope = gs.trace(keras.Model(x_in, ReadsAnUnusedTensor(name="odd")(x_in)))
    return scope.gradients(scope.outputs[0], "x", np.ones((1, 3), np.float32))


@tf.function(jit_compile=True)
def _noisy(x):
    return x * tf.random.uniform(tf.shape(x), 0.5, 1.5)  # a random draw a replay would redo


class Noisy(keras.layers.Layer):
    def call(self, x):
        return _noisy(x)


def _gradient_through_an_xla_helper_that_draws(w):
    x_in = keras.Input((3,), name="x")
    scope = gs.trace(keras.Model(x_in, Noisy(name="noisy")(x_in)))
    return scope.gradients(scope.outputs[0], "x", np.ones((1, 3), np.float32))


def _tanh(w):
    return w.scope.executor("dense/Tanh:0")


@functools.cache
def _narrow() -> gs.Scope:
    """A function of a float16 and an int8 input: `mul:0` (x * 2) is float16, `add:0` (n + 1) int8."""
    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float16), tf.TensorSpec((None, 3), tf.int8)])
    def narrow(x, n):
        return tf.cast(x * 2, tf.float32) + tf.cast(n + 1, tf.float32)

    return gs.trace(narrow, quiet=True)


def _narrow_run(x, n, edits=None):
    scope = _narrow()
    return scope.run(scope.outputs, [x, n], edits=edits)


_X16, _N8 = np.ones((1, 3), np.float16), np.ones((1, 3), np.int8)


def _counting():
    """An edit that counts its calls in a variable: a write, refused."""
    counter = tf.Variable(0.0)
    return lambda v: v + counter.assign_add(1.0)


def _gate_run(keep):
    """A function of a float32 input and a bool mask, run on `keep` as the mask."""
    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None, 3), tf.bool)])
    def gate(x, keep):
        return tf.where(keep, x, 0.0)

    scope = gs.trace(gate, quiet=True)
    return scope.run(scope.outputs, [np.ones((1, 3), np.float32), keep])


@functools.cache
def _other_input() -> gs.Scope:
    """A model sharing a layer path ('dense') with the functional CNN, with another input."""
    return gs.trace(keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, name="dense")]), quiet=True)


def _table_read_after_insert(w):
    """A model that inserts into its own lookup table and reads the entry back in the same call."""
    class Remembers(tf.Module):
        def __init__(self):
            self.table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, default_value=0.0)

        @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
        def __call__(self, x):
            key = tf.constant([7], tf.int64)
            self.table.insert(key, tf.reshape(tf.reduce_sum(x), [1]))
            return x + self.table.lookup(key)

    scope = gs.trace(Remembers(), quiet=True)
    return scope.run(scope.outputs, np.ones((1, 3), np.float32))


WRONG = [
    # ---- trace: what can be traced
    Wrong("a numpy array", lambda w: gs.trace(np.zeros(3)), gs.UnsupportedModelError, TypeError,
          r"cannot trace an object of type numpy.ndarray: expected a Keras model or layer \(Keras 3 or tf_keras\)"),
    Wrong("a number", lambda w: gs.trace(42), gs.UnsupportedModelError, TypeError, r"type builtins.int: expected"),
    Wrong("a dict", lambda w: gs.trace({"a": 1}), gs.UnsupportedModelError, TypeError, r"builtins.dict: expected"),
    Wrong("a model name instead of a model", lambda w: gs.trace("ResNet50"), gs.ModelLoadError, FileNotFoundError,
          r"no model at 'ResNet50'.*gs.trace\(keras.applications.ResNet50\(weights=None\)\)"),
    Wrong("a string that is not a path", lambda w: gs.trace("my model"), gs.ModelLoadError, FileNotFoundError,
          r"does not exist.*gs.trace takes a model object or the path of a saved model"),
    Wrong("an unbuilt subclassed model", lambda w: gs.trace(models.unbuilt_subclassed()), gs.UnsupportedModelError,
          TypeError, r"not built.*call model.build\(input_shape\), or pass input_signature="),
    Wrong("a model named after a class that starts with _, a name TensorFlow refuses as a root scope",
          lambda w: gs.trace(models.underscored()), gs.UnsupportedModelError, TypeError,
          r"refuses the name scope '_+underscored(_\d+)?'.*may not start with '_'.*MyModel\(name='my_model'\)"),
    Wrong("a model of two arguments built by a call, whose build kept one shape",
          lambda w: gs.trace(models.two_arguments_built_by_a_call()), gs.UnsupportedModelError, TypeError,
          r"takes 2 inputs \(x, y\).*only the first.*input_signature=\[tf.TensorSpec\(\(None, 4\), tf.float32\), "
          r"tf.TensorSpec\(\(None, \.\.\.\), tf.float32\)\]"),
    Wrong("a model of two arguments given one spec",
          lambda w: gs.trace(models.two_arguments_built_by_a_call(), [(None, 4)]), gs.UnsupportedModelError, TypeError,
          r"takes 2 inputs \(x, y\), but the input_signature gives 1.*one spec, or nest of specs, per input"),
    Wrong("a model whose call needs a keyword-only argument",
          lambda w: gs.trace(models.keyword_only_built_by_a_call()), gs.UnsupportedModelError, TypeError,
          r"needs the keyword argument scale \(no default\).*gs.trace\(lambda x: model\(x, scale=\.\.\.\)"),
    Wrong("an unbuilt model with a signature its call does not take",
          lambda w: gs.trace(models.unbuilt_subclassed(), [(None, 4), (None, 4)]), gs.InputError, ValueError,
          r"not built.*input_0 \(None, 4\), input_1 \(None, 4\).*too many positional arguments.*one spec per input"),
    Wrong("an unbuilt Sequential given a spec of the wrong rank, which leaves it configured (as a call would)",
          lambda w: gs.trace(keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.Dense(2)]), [(None, 8, 8)]),
          gs.InputError, ValueError, r"not built.*input_0 \(None, 8, 8\).*expected min_ndim=4.*left 'sequential(_\d+)?' "
          r"partly built for those shapes.*make the model again"),
    Wrong("a tf.function without a signature", lambda w: gs.trace(tf.function(lambda x: x * 2)),
          gs.UnsupportedModelError, TypeError, r"input_signature"),
    Wrong("a tf.Module without __call__", lambda w: gs.trace(tf.Module()), gs.UnsupportedModelError, TypeError,
          r"no __call__"),
    Wrong("training=True for a ConcreteFunction",
          lambda w: gs.trace(tf.function(lambda v: v * 2.0).get_concrete_function(tf.TensorSpec((None, 3))),
                             training=True),
          gs.OptionError, ValueError, r"with training=True: it is already traced.*pass the tf.function or the model"),
    Wrong("training=True for a SavedModel signature", lambda w: gs.trace(_saved_signature(w), training=True),
          gs.OptionError, ValueError,
          r"its signature 'serving_default' was traced when it was saved.*trace the Keras model"),
    Wrong("a SavedModel signature it does not have", lambda w: gs.trace(_saved_signature(w), signature="serve"),
          gs.OptionError, ValueError, r"the SavedModel at .*doubling' has no signature named 'serve'. Its signatures: "
          r"'serving_default'; pass one of them as signature=, or leave signature out"),
    Wrong("a signature of a Keras model", lambda w: gs.trace(w.cnn, signature="serving_default"), gs.OptionError,
          ValueError, r"signature='serving_default' picks one of a SavedModel's signatures, but the Keras model "
          r"'functional_cnn' has none: pass a SavedModel directory .*or leave signature out"),
    Wrong("a signature and an input_signature", lambda w: gs.trace(_saved_signature(w), [(None, 3)], signature="x"),
          gs.OptionError, ValueError, r"signature='x' and input_signature= both given: a SavedModel signature has "
          r"its own inputs; leave input_signature out"),
    Wrong("training=True for a function without Keras layers",
          lambda w: gs.trace(lambda v: v * 2.0, [tf.TensorSpec((None, 3))], training=True),
          gs.OptionError, ValueError, r"training=True changes nothing in the callable '<lambda>': no Keras layer .*"
          r"pass training=True to the layers it calls"),
    Wrong("a model whose code needs an input size its declared shape leaves unknown",
          lambda w: gs.trace(_size_branch_model()), gs.UnsupportedModelError, TypeError,
          r"could not trace model 'size_branch' at its declared input shape \(seq \[\?,\?,3\]\): "
          r"OperatorNotAllowedInGraphError: Using a symbolic `tf.Tensor` as a Python `bool` is not allowed "
          r"\(at test_errors.py:\d+ in call\); .*pass input_signature=\[tf.TensorSpec\(\(None, 64, 3\)\)\] to gs.trace"),
    Wrong("a function whose code needs an input size its input_signature leaves unknown",
          lambda w: gs.trace(lambda x: SizeBranch(name="branch")(x), [(None, None, 3)]), gs.UnsupportedModelError,
          TypeError, r"could not trace the callable '<lambda>' at the input_signature's shape \(\[\?,\?,3\]\): "
          r"OperatorNotAllowedInGraphError: .* pass input_signature=\[tf.TensorSpec\(\(None, 64, 3\)\)\]"),
    Wrong("an input_signature that is not a list", lambda w: gs.trace(w.cnn, "x"), gs.UnsupportedModelError,
          TypeError, r"input_signature must be a list of tf.TensorSpec or shapes \(or of dicts, lists and tuples "
          r"of them, one per positional input\), got str"),
    Wrong("a nested input_signature with something else than a spec in it",
          lambda w: gs.trace(lambda d: d["x"] * 2.0, [{"x": (None, 3), "y": "int32"}]), gs.UnsupportedModelError,
          TypeError, r"input_signature\[0\]\['y'\] is a str: expected a tf.TensorSpec, a shape tuple such as "
          r"\(None, 224, 224, 3\), or a dict, list or tuple of them"),
    Wrong("an input_signature with too many specs", lambda w: gs.trace(w.cnn, [(None, 8, 8, 3), (None, 2)]),
          gs.InputError, ValueError, r"gives 2 specs but model 'functional_cnn' takes 1 input: image \(None, 8, 8, 3\)"),
    Wrong("an input_signature of the wrong shape", lambda w: gs.trace(w.cnn, [(None, 3)]), gs.InputError,
          ValueError, r"input_signature\[0\] has shape \(None, 3\) but input 'image' .* takes \(None, 8, 8, 3\)"),
    # ---- trace: files
    Wrong("a missing .keras file", lambda w: gs.trace(w.files / "missing.keras"), gs.ModelLoadError,
          FileNotFoundError, r"missing.keras'?: the path does not exist \(expected a .keras or .h5 file"),
    Wrong("a file of unknown kind", lambda w: gs.trace(w.files / "model.txt"), gs.ModelLoadError, FileNotFoundError,
          r"do not know how to load .*model.txt.*expected a .keras or .h5 file, or a SavedModel directory"),
    Wrong("a corrupt .keras file", lambda w: gs.trace(w.files / "bad.keras"), gs.ModelLoadError, FileNotFoundError,
          r"could not load .*bad.keras.*save it again with model.save"),
    Wrong("a corrupt .h5 file", lambda w: gs.trace(w.files / "bad.h5"), gs.ModelLoadError, FileNotFoundError,
          r"could not load .*bad.h5.*save it again with model.save"),
    Wrong("a directory that is not a SavedModel", lambda w: gs.trace(w.files / "not_saved_model"),
          gs.ModelLoadError, FileNotFoundError, r"is a directory but not a SavedModel \(no saved_model.pb in it\)"),
    Wrong("a corrupt SavedModel", lambda w: gs.trace(w.files / "corrupt_sm"), gs.ModelLoadError, FileNotFoundError,
          r"could not load the SavedModel .*corrupt_sm.*re-export it"),
    Wrong("a .keras file with an unregistered custom layer", lambda w: gs.trace(w.files / "custom.keras"),
          gs.ModelLoadError, FileNotFoundError,
          r"uses the custom class 'Vanished', which is not registered: import the module that defines it"),
    Wrong("a .keras file with Python code, in safe mode", lambda w: gs.trace(w.files / "lambda.keras"),
          gs.ModelLoadError, FileNotFoundError, r"Python code .* safe mode .*pass safe_mode=False to gs.trace"),
    # ---- names and patterns
    Wrong("an unknown tensor name", lambda w: w.scope.tensor("dense/BiasAd:0"), gs.TensorNotFoundError, KeyError,
          r"no tensor named 'dense/BiasAd:0'.*Did you mean 'dense/BiasAdd:0'"),
    Wrong("an unknown op name", lambda w: w.scope.tensor("conv/Conv2d"), gs.TensorNotFoundError, KeyError,
          r"no tensor named 'conv/Conv2d'.*Did you mean 'conv/convolution:0'"),
    Wrong("a tensor named by a number", lambda w: w.scope.tensor(3), gs.ArgumentError, TypeError,
          r"a tensor is named by a str or a Tensor, not int"),
    Wrong("an op name whose op has several outputs", lambda w: w.halves.tensor("halves/split"),
          gs.AmbiguousMatchError, ValueError, r"2 outputs; name one: halves/split:0, halves/split:1"),
    Wrong("one tensor by the name of a layer with several outputs", lambda w: w.halves.tensor("halves"),
          gs.AmbiguousMatchError, ValueError, r"'halves' names 2 tensors; name one: halves/mul:0, halves/add:0"),
    Wrong("a tensor a copy of the graph left out", lambda w: gs.ancestors(_without(w.scope.graph, "dense/BiasAdd"),
          "dense/BiasAdd:0"), gs.TensorNotFoundError, KeyError, r"no tensor named 'dense/BiasAdd:0'.*Did you mean"),
    Wrong("the output of a layer with several", lambda w: w.halves.layer("halves").output, gs.AmbiguousMatchError,
          ValueError, r"layer 'halves' has 2 outputs: use .outputs"),
    Wrong("an invalid regex", lambda w: w.scope.find("dense/("), gs.PatternError, ValueError,
          r"pattern 'dense/\(' is not a valid regular expression"),
    Wrong("an invalid op_type regex", lambda w: w.scope.find(op_type="["), gs.PatternError, ValueError,
          r"op_type '\[' is not a valid regular expression"),
    Wrong("a tree pattern matching no layer", lambda w: w.scope.layer_tree(pattern="dens_"), gs.PatternError, ValueError,
          r"matches no layer path of 'functional_cnn'. Did you mean 'dense'"),
    Wrong("an unknown layer name", lambda w: w.scope.layer("dens"), gs.LayerNotFoundError, KeyError,
          r"no layer named 'dens'.*Did you mean 'dense'"),
    Wrong("a layer index out of range", lambda w: w.scope.layer(8), gs.LayerNotFoundError, KeyError,
          r"no layer at index 8: the model has 8 layers \(0..7\)"),
    Wrong("a layer named by a float", lambda w: w.scope.layer(1.0), gs.ArgumentError, TypeError,
          r"a layer is named by its name/path \(str\) or index \(int\), not float"),
    Wrong("ancestors of an unknown tensor", lambda w: w.scope.ancestors("conv/Relu:0"), gs.TensorNotFoundError,
          KeyError, r"no tensor named 'conv/Relu:0'.*Did you mean"),
    # ---- executors: what to fetch and feed
    Wrong("nothing to fetch", lambda w: w.scope.executor([]), gs.TensorNotFoundError, KeyError,
          r"nothing to fetch: give at least one tensor name"),
    Wrong("fetches given as a number", lambda w: w.scope.executor(3), gs.ArgumentError, TypeError,
          r"expected tensor or layer names, Tensors, a Selection or a Layer, got int"),
    Wrong("a fetch needing an input that is not fed",
          lambda w: w.multi.executor(["add/Add:0"], feeds=["img_dense/BiasAdd:0"]), gs.DisconnectedError,
          ValueError, r"meta:0 \(needed by add/Add:0\).*feeds"),
    Wrong("a feed that is not upstream of any fetch",
          lambda w: w.multi.executor(["img_dense/BiasAdd:0"], feeds=["img", "meta_dense/BiasAdd:0"]),
          gs.DisconnectedError, ValueError, r"meta_dense/BiasAdd:0 is not upstream of any fetch"),
    Wrong("a feed that is not in the graph", lambda w: w.scope.executor("dense/Tanh:0", feeds=["dense/MatMull:0"]),
          gs.TensorNotFoundError, KeyError, r"no tensor named 'dense/MatMull:0'.*Did you mean 'dense/MatMul:0'"),
    Wrong("a resource handle as a fetch",
          lambda w: w.scope.executor(w.scope.find(r"^dense/.*resource:0$")[:1]), gs.UnsupportedFetchError,
          ValueError, r"resource tensor .* ReadVariableOp"),
    Wrong("a feed inside a loop body", _nms_input, gs.UnsupportedFetchError, ValueError,
          r"cannot feed .* inside ROI/map/while:body.*feed a tensor outside loops and branches"),
    # ---- executors: what is passed in
    Wrong("too many inputs", lambda w: _tanh(w)(w.x, w.x, w.x), gs.InputError, ValueError,
          r"takes 1 input \(image\), got 3: pass one array"),
    Wrong("an input of the wrong shape", lambda w: _tanh(w)(w.x[:, :4]), gs.InputError, ValueError,
          r"input 'image' expects shape \[\?,8,8,3\] \(\? for any size\), got \[3,4,8,3\]"),
    Wrong("an input without its batch axis", lambda w: _tanh(w)(w.x[0]), gs.InputError, ValueError,
          r"expects shape \[\?,8,8,3\] .*got \[8,8,3\]"),
    Wrong("a non-numeric array", lambda w: _tanh(w)(np.array([["a"]])), gs.InputError, ValueError,
          r"input 'image' must be a numeric array \(float32\), got an array of dtype <U1"),
    Wrong("an unsafe dtype", lambda w: _tanh(w)(w.x.astype(np.complex64)), gs.InputError, ValueError,
          r"input 'image' expects float32, got an array of dtype complex64, which would lose information as float32; "
          r"convert it first"),
    Wrong("an input beyond its float dtype's range", lambda w: _narrow_run(np.full((1, 3), 1e5, np.float32), _N8),
          gs.InputError, ValueError, r"input '\w+' expects float16, whose range is -65504 to 65504, but it holds "
          r"values from 100000 to 100000 \(3 of 3\) beyond it, which would become inf; scale or clip them first"),
    Wrong("an input of fractions for an integer input", lambda w: _narrow_run(_X16, np.array([[0.5, 1.0, 2.0]])),
          gs.InputError, ValueError, r"input '\w+' expects int8, but it holds values that are not whole numbers "
          r"\(1 of 3, such as 0.5\), which would be truncated; round them first"),
    Wrong("an input with nan for an integer input", lambda w: _narrow_run(_X16, np.array([[np.nan, 1.0, 2.0]])),
          gs.InputError, ValueError, r"input '\w+' expects int8, which cannot hold nan or inf, but 1 of its 3 values "
          r"are; replace them first"),
    Wrong("an input of numbers other than 0 and 1 for a bool input", lambda w: _gate_run(np.array([[0, 1, 2]])),
          gs.InputError, ValueError, r"input '\w+' expects bool, which holds 0 and 1, but it holds other values "
          r"\(1 of 3, such as 2\); compare them first \(x != 0\)"),
    Wrong("an unknown input name", lambda w: _tanh(w)({"imgae": w.x}), gs.InputError, ValueError,
          r"unknown input 'imgae': this executor takes image. Did you mean 'image'"),
    Wrong("a missing input", lambda w: w.multi.executor(["add/Add:0"])({"img": np.zeros((1, 4, 4, 1))}),
          gs.InputError, ValueError, r"missing input: meta"),
    Wrong("a value the model's own check refuses",
          lambda w: w.checked.run(w.checked.outputs, -np.ones((1, 2), np.float32)), gs.ExecutionError, RuntimeError,
          r"TensorFlow failed in op 'checked/.*non-negative"),
    # ---- edits
    Wrong("edits that are not a dict", lambda w: w.scope.executor("dense/Tanh:0", edits=["dense/MatMul:0"]),
          gs.ArgumentError, TypeError, r"edits must be a dict \{tensor name: array or callable\}, got list"),
    Wrong("an edit that is neither an array nor a callable",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": "zero"}), gs.ArgumentError, TypeError,
          r"the edit of 'dense/MatMul:0' must be an array \(patched in\) or a callable fn\(value\) -> value, got str"),
    Wrong("an edit of a name with several tensors",
          lambda w: w.halves.executor(w.halves.outputs, edits={"halves": lambda v: v}), gs.ArgumentError,
          TypeError, r"an edit replaces one tensor, but 'halves' names 2: halves/mul:0, halves/add:0; edit each"),
    Wrong("an edit of an unknown tensor", lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMull:0": 0.0}),
          gs.TensorNotFoundError, KeyError, r"no tensor named 'dense/MatMull:0'.*Did you mean 'dense/MatMul:0'"),
    Wrong("an edit of a variable's path",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/kernel": np.zeros((6, 4), np.float32)}),
          gs.TensorNotFoundError, KeyError, r"'dense/kernel' is a variable, and edits replace values the model "
          r"computes: edit the value that reads it \(dense/.*ReadVariableOp:0\), or assign the variable itself"),
    Wrong("an edit no fetch depends on",
          lambda w: w.scope.executor("dense/MatMul:0", edits={"dense/Tanh:0": lambda v: v * 0}), gs.DisconnectedError,
          ValueError, r"the edit of 'dense/Tanh:0' changes nothing the fetches \(dense/MatMul:0\) depend on: edit a "
          r"tensor upstream of them, or fetch one downstream"),
    Wrong("an edit of a tensor no output depends on", _edit_of_an_unused_tensor, gs.DisconnectedError, ValueError,
          r"the edit of 'wasted:0' changes nothing: no output of the model depends on it \(it is computed but never "
          r"used.*\); edit a tensor the model uses \(scope.find lists only those\)"),
    Wrong("an edit array that does not broadcast",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": np.ones(4, np.float32)}), gs.InputError,
          ValueError, r"has shape \[4\], which does not broadcast to the tensor's shape \[\?,6\]"),
    Wrong("an edit array of an unsafe dtype",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": np.ones(6, np.complex64)}),
          gs.InputError, ValueError, r"an array of dtype complex64, which would lose information as float32"),
    Wrong("an edit array beyond the tensor's float dtype's range",
          lambda w: _narrow_run(_X16, _N8, edits={"mul:0": np.array([1.0, 7e4, -1e6], np.float32)}),
          gs.InputError, ValueError, r"the edit of 'mul:0' expects float16, whose range is -65504 to 65504, but it "
          r"holds values from -1e\+06 to 70000 \(2 of 3\) beyond it, which would become inf; scale or clip them first"),
    Wrong("an edit array of fractions for an integer tensor",
          lambda w: _narrow_run(_X16, _N8, edits={"add:0": np.array([0.25, 1.0, 2.0])}),
          gs.InputError, ValueError, r"the edit of 'add:0' expects int8, but it holds values that are not whole "
          r"numbers \(1 of 3, such as 0.25\), which would be truncated; round them first"),
    Wrong("an edit array beyond the tensor's integer range",
          lambda w: _narrow_run(_X16, _N8, edits={"add:0": np.array([1, 2, 300], np.int64)}),
          gs.InputError, ValueError, r"the edit of 'add:0' expects int8, whose range is -128 to 127, but it holds "
          r"values from 1 to 300, which would wrap around; clip them first"),
    Wrong("an edit that writes a variable",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": _counting()}),
          gs.InputError, ValueError, r"the edit of 'dense/MatMul:0' changes state \(AssignAddVariableOp\): an edit reads "
          r"variables \(at their current values\) but may not write them; compute the new value without assigning"),
    Wrong("an edit that changes the dtype",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": lambda v: tf.cast(v, tf.float64)}),
          gs.InputError, ValueError, r"returns float64, but the tensor is float32: cast the result"),
    Wrong("an edit that changes the shape",
          lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": lambda v: v[:, :2]}), gs.InputError,
          ValueError, r"returns shape \[\?,2\], but the tensor has shape \[\?,6\]: an edit must keep the shape"),
    Wrong("an edit that fails", lambda w: w.scope.executor("dense/Tanh:0", edits={"dense/MatMul:0": lambda v: v + tf.zeros(5)}),
          gs.InputError, ValueError, r"the edit of 'dense/MatMul:0' failed on a float32 tensor of shape \[\?,6\]"),
    Wrong("an array edit inside a loop body",
          lambda w: w.mapped.executor(w.mapped.outputs, edits={
              "ROI/map/while/rpn_non_max_suppression/iou_threshold:0": np.float32(0.3)}),
          gs.InputError, ValueError, r"cannot patch .* with an array: it is computed inside ROI/map/while:body.*pass a "
          r"callable"),
    Wrong("a run that would write the model's lookup table it reads back", _table_read_after_insert,
          gs.UnsupportedModelError, TypeError, r"resource .* is not a tf.Variable \(a lookup table, a queue\): the "
          r"call writes it \(.*LookupTableInsertV2.*\) and reads it back.*trace a function that does not update "
          r"it, or keep that state in a tf.Variable"),
    # ---- gradients
    Wrong("a gradient wrt a tensor not upstream", lambda w: w.scope.gradients("conv/BiasAdd:0", "dense/MatMul:0", w.x),
          gs.DisconnectedError, ValueError, r"no gradient flows from 'conv/BiasAdd:0' to 'dense/MatMul:0': it is not "
          r"upstream"),
    Wrong("a gradient wrt a variable not upstream", lambda w: w.scope.gradients("conv/BiasAdd:0", "dense/kernel", w.x),
          gs.DisconnectedError, ValueError, r"no gradient flows from 'conv/BiasAdd:0' to 'dense/kernel'"),
    Wrong("a gradient wrt an integer tensor", lambda w: w.scope.gradients("dense/Tanh:0", "flatten/Shape:0", w.x),
          gs.ArgumentError, TypeError, r"cannot differentiate with respect to 'flatten/Shape:0': it is int32.*"
          r"floating-point"),
    Wrong("a gradient of an integer tensor", lambda w: w.scope.gradients("flatten/Shape:0", "image", w.x),
          gs.ArgumentError, TypeError, r"cannot differentiate 'flatten/Shape:0': it is int32; take the gradient of a "
          r"floating-point tensor"),
    Wrong("a gradient of several tensors", lambda w: w.halves.gradients(w.halves.outputs, "pair", np.ones((1, 4))),
          gs.ArgumentError, TypeError, r"a gradient is taken of one tensor, but .* names 2.*pick one, or sum them in "
          r"target="),
    Wrong("a gradient wrt nothing", lambda w: w.scope.gradients("dense/Tanh:0", [], w.x), gs.ArgumentError, TypeError,
          r"wrt is empty"),
    Wrong("a gradient wrt a tensor inside a loop body",
          lambda w: w.mapped.gradients(w.mapped.outputs[0], "ROI/map/while/rpn_non_max_suppression/iou_threshold:0",
                                       demo.synthetic_images()),
          gs.UnsupportedFetchError, ValueError, r"cannot take a gradient with respect to .* inside ROI/map/while:body"),
    Wrong("a gradient of a tensor inside a loop body",
          lambda w: w.mapped.gradients("ROI/map/while/rpn_non_max_suppression/iou_threshold:0", "input_image",
                                       demo.synthetic_images()),
          gs.UnsupportedFetchError, ValueError, r"cannot take the gradient of .* inside ROI/map/while:body.*outside loops"),
    Wrong("a gradient wrt an unknown variable", lambda w: w.scope.gradients("dense/Tanh:0", "dense/kernl", w.x),
          gs.TensorNotFoundError, KeyError, r"no tensor, input or variable named 'dense/kernl'.*Did you mean "
          r"'dense/kernel'"),
    Wrong("a gradient through an XLA helper that draws random numbers", _gradient_through_an_xla_helper_that_draws,
          gs.UnsupportedFetchError, ValueError, r"cannot differentiate .*: op .* calls .*, a function TensorFlow does "
          r"not inline \(an XLA helper\), whose gradient would run its RandomUniform op .* again; take the gradient "
          r"of a tensor before that op"),
    Wrong("a gradient through a custom gradient that reads a pruned tensor", _custom_gradient_off_the_graph,
          gs.UnsupportedFetchError, ValueError, r"cannot differentiate .*: the gradient of .*odd.* \(IdentityN, a custom "
          r"gradient\) reads .*unused:0, which is not in the executable graph; take the gradient of a tensor before"),
    # ---- comparing two runs
    Wrong("a compare whose b shares no names with a",
          lambda w: gs.compare(w.scope, {"dense_1": np.zeros((2, 6)), "convolution": np.zeros(1)}, w.x),
          gs.TensorNotFoundError, KeyError, r"b shares no layer paths or tensor names with a: tried a's 7 layer paths and "
          r"their tensor names \(conv, .*against b's 2 \(dense_1, convolution\); closest: 'conv' ~ 'convolution'; "
          r"'dense' ~ 'dense_1'.*match='tensors'.*match=fn"),
    Wrong("a compare with a stored run extracted from other inputs",
          lambda w: gs.compare(w.scope, _stored_run(w), w.x[::-1].copy()), gs.InputError, ValueError,
          r"b is a run stored at .* from other inputs: the first \d+ sample\(s\) of the inputs given are not those "
          r"it was extracted from.*pass the inputs it was extracted from, or extract a new run on these"),
    Wrong("a compare with an unknown match", lambda w: gs.compare(w.scope, w.scope, w.x, match="ops"), gs.OptionError,
          ValueError, r"match='ops': choose 'layers', 'tensors', or a function from a's layer paths to b's names"),
    Wrong("a compare with a negative tolerance", lambda w: gs.compare(w.scope, w.scope, w.x, rtol=-1e-5),
          gs.OptionError, ValueError, r"rtol and atol are finite numbers >= 0, got rtol=-1e-05"),
    Wrong("a compare with b a list of arrays", lambda w: gs.compare(w.scope, [w.x], w.x), gs.ArgumentError, TypeError,
          r"compare's b is a Scope, a Bundle \(gs.open\) or a mapping from names to arrays, got list"),
    Wrong("a compare of scopes whose inputs differ, without inputs_b",
          lambda w: gs.compare(w.scope, _other_input(), w.x), gs.InputError, ValueError,
          r"a and b take different inputs \(a: image: float32\[\?,8,8,3\]; b: \w+: float32\[\?,5\]\).*"
          r"pass b's own as inputs_b="),


    # ---- numerics
    Wrong("numerics on inputs of another shape", lambda w: w.scope.numerics(np.zeros((2, 5, 5, 3), "float32")),
          gs.InputError, ValueError, r"input 'image' expects shape \[\?,8,8,3\] \(\? for any size\), got \[2,5,5,3\]"),
    Wrong("numerics backward of a tensor no gradient reaches",
          lambda w: _argmax_scope().numerics(np.ones((2, 3), "float32"), backward="argmax/add:0"),
          gs.DisconnectedError, ValueError, r"no gradient flows from 'argmax/add:0' to the inputs or weights it is computed from "
          r"\(every path goes through ops without a gradient: argmax, casts to integers, stop_gradient\); name a "
          r"tensor gradients reach"),
    Wrong("numerics backward of the model's input", lambda w: w.scope.numerics(w.x, backward="image:0"),
          gs.DisconnectedError, ValueError, r"cannot check the gradient of 'image:0': it is fed, so nothing computes it"
          r".*name a tensor computed from the inputs, such as a layer's output or the model's"),
    Wrong("numerics backward of a tensor inside a loop body",
          lambda w: w.mapped.numerics(demo.synthetic_images(),
                                      backward="ROI/map/while/rpn_non_max_suppression/iou_threshold:0"),
          gs.UnsupportedFetchError, ValueError, r"cannot check the gradient of .* inside ROI/map/while:body.*name a "
          r"tensor outside loops and branches"),
    # ---- statistics
    Wrong("statistics with no bins", lambda w: w.scope.statistics("relu", w.x, bins=0, quiet=True), gs.OptionError,
          ValueError, r"bins must be a whole number >= 1 \(or None for no histogram\), got 0"),
    Wrong("statistics per entry of an axis the tensor lacks", lambda w: w.scope.statistics("dense", w.x, axis=2, quiet=True),
          gs.OptionError, ValueError, r"'dense/Tanh:0' has no axis 2: it is rank 2 \(\[None, 6\]\); pass axis=None "
          r"for one figure per tensor, or an axis from -2 to 1"),
    Wrong("statistics per sample (the batch axis)", lambda w: w.scope.statistics("relu", w.x, axis=0, quiet=True),
          gs.OptionError, ValueError, r"axis 0 of 'relu/Relu:0' is its batch axis.*pass the channel axis \(-1, the "
          r"default\) or axis=None"),
    Wrong("statistics looked up by the layer name they were fetched by",
          lambda w: w.scope.statistics("relu", w.x, quiet=True)["relu"], gs.TensorNotFoundError, KeyError,
          r"no statistics of 'relu'\. Values are keyed by tensor names \(a layer's by its outputs'\); under 'relu/': "
          r"'relu/Relu:0'\."),
    Wrong("a result looked up by the layer name it was fetched by", lambda w: w.scope.run("relu", w.x)["relu"],
          gs.TensorNotFoundError, KeyError,
          r"no value named 'relu' in these results\. Values are keyed by tensor names \(a layer's by its outputs'\); "
          r"under 'relu/': 'relu/Relu:0'\."),
    Wrong("a result looked up by a name close to its key", lambda w: w.scope.run("relu", w.x)["relu/Relu"],
          gs.TensorNotFoundError, KeyError, r"no value named 'relu/Relu' in these results\. Did you mean 'relu/Relu:0'\?"),
    Wrong("statistics of a tensor that is not a number",
          lambda w: w.mapped.statistics("ROI/map/while/body/Placeholder_1:0", demo.synthetic_images(), quiet=True),
          gs.UnsupportedFetchError, ValueError, r"it is variant, and statistics are taken of numbers"),
    Wrong("statistics of a value in a loop inside a branch",
          lambda w: _loop_in_branch_scope().statistics("lib/cond/map/while/Tanh:0", np.ones((2, 4), "float32"),
                                                       quiet=True),
          gs.UnsupportedFetchError, ValueError, r"it is computed inside lib/cond/map/while:body, inside lib/cond:then, "
          r"a branch that may not run for every sample; fetch the branch op's output instead"),
    Wrong("statistics with bins of a generator (read once)",
          lambda w: w.scope.statistics("relu", (b for b in [w.x]), bins=4, quiet=True), gs.ArgumentError, TypeError,
          r"bins= takes two passes over the data.*a generator can be read once: pass arrays"),
    Wrong("a dataset of batches given a batch_size too",
          lambda w: w.scope.statistics("relu", tf.data.Dataset.from_tensor_slices(np.concatenate([w.x] * 5)).batch(4),
                                       batch_size=4, quiet=True),
          gs.InputError, ValueError, r"batching the dataset's elements by batch_size=4 failed \(Cannot batch tensors "
          r"with different shapes.*leave batch_size out for a dataset of batches"),
    Wrong("statistics of one sample without its batch axis",
          lambda w: w.scope.statistics("relu", w.x[0], quiet=True), gs.InputError, ValueError,
          r"takes batches of shape .*got an array of shape .* without that axis: one sample\? give it with a batch "
          r"axis \(x\[None\]\)"),
    Wrong("statistics over a dataset that repeats forever",
          lambda w: w.scope.statistics("relu", tf.data.Dataset.from_tensor_slices(w.x).repeat(), batch_size=2,
                                       quiet=True),
          gs.ArgumentError, TypeError, r"the tf.data.Dataset never ends \(it repeats\).*take a finite part of it "
          r"\(dataset.take\(n\)\)"),
    Wrong("statistics of a fixed-batch model in batches of another size",
          lambda w: _fixed_batch_scope().statistics("dense/BiasAdd:0", np.ones((10, 3), "float32"), quiet=True),
          gs.InputError, ValueError, r"this model's batch size is fixed at 4, got 10 samples: the last batch would "
          r"hold 2; pass a number of samples divisible by 4, or trace a model built with a free batch size"),
    # ---- render and export
    Wrong("an unknown export format", lambda w: w.scope.export("yaml"), gs.OptionError, ValueError,
          r"unknown export format 'yaml': choose graphml, dot or json \(or tensorboard, to a directory\)"),
    Wrong("a negative drawing radius", lambda w: w.scope.draw("dense", radius=-1), gs.OptionError, ValueError,
          r"radius is a number of ops \(0 or more\), not -1"),
    Wrong("drawing around an unknown name", lambda w: w.scope.draw("dense/BiasAd:0"), gs.TensorNotFoundError,
          KeyError, r"Did you mean 'dense/BiasAdd:0'"),
]

# a raw TensorFlow or Keras failure must never be what the user reads
_RAW = re.compile(r"Traceback|tensorflow/python|keras/src|in user code|node_def|\[\[\{\{node")


def _model_state(model):
    return [v.numpy().tobytes() for v in model.variables], [lay.get_config() for lay in model.layers]


def test_the_catalogue_covers_at_least_30_mistakes():
    assert len({w.what for w in WRONG}) == len(WRONG) >= 30


@pytest.mark.parametrize("wrong", WRONG, ids=[w.what for w in WRONG])
def test_wrong_use(world, wrong):
    before = _model_state(world.cnn)
    with pytest.raises(wrong.error) as caught:
        wrong.call(world)
    e = caught.value
    assert isinstance(e, wrong.base)
    message = str(e)
    assert re.search(wrong.says, message, re.S), message
    assert not _RAW.search(message), message
    assert len(message) < 600 and "\n" not in message, message
    # nothing of TensorFlow's chained behind it: raised `from None`, or not inside a handler
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), repr(e.__context__)
    assert _model_state(world.cnn) == before


# ---- the command line: usage errors exit 2 before loading anything, other errors 1, one line each

CLI_WRONG = [
    ("no command", [], 2, r"required: COMMAND"),
    ("an unknown command", ["nope"], 2, r"invalid choice: 'nope' \(choose from"),
    ("no model", ["tree"], 2, r"required: MODEL"),
    ("a negative depth", ["tree", "demo", "--depth", "-1"], 2, r"expected 0 or more, got -1"),
    ("a radius that is not a number", ["draw", "demo", "ROI", "--radius", "x"], 2, r"expected a whole number, got 'x'"),
    ("an unknown export format", ["export", "demo", "--format", "yaml"], 2, r"invalid choice: 'yaml'"),
    ("two exclusive options", ["find", "demo", "--ancestors-of", "a", "--cut-points"], 2, r"not allowed with"),
    ("a saved model with an unregistered class", ["tree", "{files}/custom.keras"], 1, r"not registered"),
    ("a pickled .npy input", ["run", "demo", "ROI/.*NonMax.*:0", "--input", "{files}/pickled.npy"], 1,
     r"cannot read .*pickled.npy.*without unpickling.*save plain numeric arrays"),
    ("a .npy input that is noise", ["run", "demo", "ROI/.*NonMax.*:0", "--input", "{files}/noise.npy"], 1,
     r"noise.npy.* is not a .npy or .npz file.*numpy.save"),
    ("a truncated .npy input", ["run", "demo", "ROI/.*NonMax.*:0", "--input", "{files}/truncated.npy"], 1,
     r"cannot read .*truncated.npy"),
    ("a missing .npy input", ["run", "demo", "ROI/.*NonMax.*:0", "--input", "{files}/none.npy"], 1,
     r"input file .*none.npy' does not exist; give the path of a .npy or .npz file"),
    ("a negative compare tolerance", ["compare", "demo", "demo", "--rtol", "-1"], 2, r"expected a number >= 0, got '-1'"),
    ("a compare with a missing second model", ["compare", "demo", "{files}/nowhere.keras"], 1,
     r"nowhere.keras'?: the path does not exist"),
    ("a fetch that names nothing", ["run", "demo", "ROI/nope:0"], 1, r"no tensor named 'ROI/nope:0'.*Did you mean"),
    ("a missing model file", ["tree", "{files}/nowhere.keras"], 1, r"nowhere.keras'?: the path does not exist"),
    # the way out in the command line's options, not Python's arguments
    ("a signature the SavedModel does not have", ["tree", "{files}/doubling", "--signature", "embed"], 1,
     r"has no signature named 'embed'.* Its signatures: 'serving_default'; give one of them as --signature NAME, "
     r"or leave --signature out for 'serving_default'$"),
    ("numerics without an input", ["numerics", "{files}/doubling"], 2,
     r"numerics needs --input FILE \(one per model input\) or --input NAME=FILE"),
    ("numerics backward of a tensor that names nothing", ["numerics", "demo", "--backward", "rpn_clas/Softmax:0"], 1,
     r"no tensor named 'rpn_clas/Softmax:0'.*Did you mean"),
    ("a signature of a model that has none", ["tree", "demo", "--signature", "embed"], 1,
     r"--signature embed picks one of a SavedModel's signatures, but the Keras model '.*' has none: give a "
     r"SavedModel directory as the model, or leave --signature out$"),
    ("one --input for a model of two", ["run", "{files}/two", "embedding", "--signature", "embed", "--input",
                                        "{files}/x.npy"], 1,
     r"the model takes 2 inputs \(x, bias\), got 1: give --input NAME=FILE for each \(x=FILE, \.\.\.\), or one "
     r"--input FILE per input in that order$"),
    ("a model input left out of --input NAME=FILE", ["run", "{files}/two", "embedding", "--signature", "embed",
                                                     "--input", "x={files}/x.npy"], 1,
     r"missing input: bias; give --input bias=FILE too$"),
    ("one --input to extract for a model of two", ["extract", "{files}/two", "embedding", "--signature", "embed",
                                                   "--input", "{files}/x.npy", "--out", "{files}/never.zarr"], 1,
     r"the model takes 2 inputs \(x, bias\), got 1 array\(s\): give one --input FILE per input, in that order"),
    ("stats of an axis the tensor lacks", ["stats", "demo:map_fn", "conv1/Relu:0", "--axis", "5"], 1,
     r"'conv1/Relu:0' has no axis 5: it is rank 4 .*; pass --axis none for one figure per tensor, or an axis from "
     r"-4 to 3$"),
    ("stats of its batch axis", ["stats", "demo:map_fn", "conv1/Relu:0", "--axis", "0"], 1,
     r"axis 0 of 'conv1/Relu:0' is its batch axis .*; pass the channel axis \(-1, the default\) or --axis none$"),
    ("stats with zero bins", ["stats", "demo", "conv1/Relu:0", "--bins", "0"], 2, r"expected 1 or more, got 0"),
    ("stats of nothing", ["stats", "demo"], 2, r"stats needs FETCH\.\.\. \(tensor names or regexes\) or --preset NAME"),
    ("stats of a preset that finds nothing", ["stats", "demo", "--preset", "attention"], 1,
     r"--preset attention finds no tensor in this model; name the tensors as FETCH$"),
    ("a .keras file with a Lambda layer", ["tree", "{files}/lambda.keras"], 1,
     r"safe mode refuses to load; if you trust the file, trace it from Python with gs.trace\('.*lambda.keras', "
     r"safe_mode=False\) \(the command line loads in safe mode\)$"),
]


@pytest.mark.parametrize("what, argv, code, says", CLI_WRONG, ids=[c[0] for c in CLI_WRONG])
def test_wrong_command_line(world, capsys, what, argv, code, says):
    argv = [a.format(files=world.files) for a in argv]
    try:
        status = cli.main(argv)
    except SystemExit as done:
        status = done.code
    err = capsys.readouterr().err.strip()
    assert status == code, err
    assert re.search(says, err.splitlines()[-1], re.S), err
    assert not _RAW.search(err), err
    if code == 1:
        assert len(err.splitlines()) == 1 and err.startswith("graphscope: error:"), err


# ---- the way out each message promises works


def test_feeding_the_named_input_fixes_a_disconnected_fetch(world):
    ex = world.multi.executor(["add/Add:0"], feeds=["img_dense/BiasAdd:0", "meta"])
    assert ex.inputs == ["img_dense/BiasAdd:0", "meta"]
    img, meta = models.sample_inputs(models.multi_input())
    full = world.multi.run(["img_dense/BiasAdd:0", "add/Add:0"], [img, meta])
    part = ex([full["img_dense/BiasAdd:0"], meta])
    np.testing.assert_allclose(part["add/Add:0"], full["add/Add:0"], rtol=1e-6)


def test_safe_casts_are_accepted(world):
    ex = _tanh(world)
    want = ex(world.x)["dense/Tanh:0"]
    np.testing.assert_allclose(ex(world.x.astype(np.float64))["dense/Tanh:0"], want, rtol=1e-6)
    assert ex(np.ones((1, 8, 8, 3), np.int64))["dense/Tanh:0"].shape == (1, 6)


def test_unsafe_files_load_when_trusted(world):
    scope = gs.trace(world.files / "lambda.keras", safe_mode=False)
    (out,) = scope.outputs
    np.testing.assert_allclose(scope.run(out, np.ones((1, 2), np.float32))[out.name], [[2.0, 2.0]])


def test_a_matching_signature_is_accepted(world):
    assert gs.trace(world.cnn, [tf.TensorSpec((None, 8, 8, 3), tf.float32, name="img")]).inputs == ["img"]


def test_values_a_narrow_dtype_holds_are_accepted_rounded():
    """The way out of the dtype refusals: values within range round (0.1 into float16), whole
    floats become integers, clipped values fit; each result against numpy by hand."""
    x, n = np.full((1, 3), 0.1, np.float32), np.array([[1.0, -2.0, 3.0]])
    (got,) = _narrow_run(x, n).values()
    want = (np.float16(0.1) * np.float16(2)).astype(np.float32) + (n + 1).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    big = np.clip(np.array([1.0, 7e4, -1e6], np.float32), -65504, 65504)
    (got,) = _narrow_run(_X16, _N8, edits={"mul:0": big, "add:0": np.array([1.0, -128.0, 127.0])}).values()
    np.testing.assert_array_equal(got, [[1.0 + 1.0, 65504.0 - 128.0, -65504.0 + 127.0]])
