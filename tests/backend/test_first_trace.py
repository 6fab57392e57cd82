"""The first trace in a fresh process: what `import graphscope` brings, and the recorder's
shortcuts (a method's signature read once per function) giving what reading it each time gives."""

import inspect
import subprocess
import sys

import keras
import numpy as np

import graphscope as gs
from graphscope.backend import keras_calls


def _fresh(code):
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_import_graphscope_after_tensorflow_and_keras_brings_the_tracing_modules():
    out = _fresh(
        "import sys, tensorflow, keras\n"
        "before = set(sys.modules)\n"
        "import graphscope\n"
        "print(sorted(m for m in ('graphscope.scope', 'graphscope.backend.trace', 'graphscope.backend.mirror',"
        " 'networkx') if m in sys.modules and m not in before))\n"
    )
    assert out.split("\n")[-2] == str(sorted(["graphscope.scope", "graphscope.backend.trace",
                                              "graphscope.backend.mirror", "networkx"]))


def test_import_graphscope_alone_imports_neither_tensorflow_nor_the_tracing_modules():
    out = _fresh(
        "import sys, graphscope\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'networkx', 'graphscope.scope') if m in sys.modules))\n"
    )
    assert out.split("\n")[-2] == "[]"


class _Scaled(keras.layers.Layer):
    def call(self, x, scale=1.0, *, shift=None, **rest):
        return x * scale + (0.0 if shift is None else shift)


class _Starred:
    def method(*args, **kwargs):  # noqa: N805: a method whose first parameter is *args
        return args

    def plain(self, a, b=2):
        return a


def test_a_methods_parameter_order_is_what_inspect_reads_from_the_bound_method():
    layers = [_Scaled(), _Scaled(), keras.layers.Dense(2), keras.layers.Dense(3)]
    callables = [lay.call for lay in layers] + [_Starred().method, _Starred().plain, _Starred.plain, len]
    for _ in range(2):  # the second time from what the first read
        for fn in callables:
            try:
                want = {name: k for k, name in enumerate(inspect.signature(fn).parameters)}
            except (TypeError, ValueError):
                want = {}
            assert keras_calls._parameter_order(fn) == want, fn


def test_two_layers_of_one_class_keep_their_keywords_in_signature_order():
    x = keras.Input((3,), name="x")
    s = keras.Input((3,), name="s")
    first, second = _Scaled(name="first"), _Scaled(name="second")
    h = first(x, shift=s, scale=2.0)
    y = second(h, shift=s, scale=0.5, extra=1)
    model = keras.Model([x, s], y)
    scope = gs.trace(model)
    want = [k for k in inspect.signature(first.call).parameters if k in ("scale", "shift")] + ["extra"]
    assert list(scope.layer("first").input_keywords) == want[:2]
    assert list(scope.layer("second").input_keywords) == want
    xs = np.arange(6, dtype="float32").reshape(2, 3)
    out = scope.outputs.names[0]
    got = scope.run([out], [xs, xs + 1])[out]
    np.testing.assert_allclose(got, np.asarray(model([xs, xs + 1])), rtol=1e-6)
