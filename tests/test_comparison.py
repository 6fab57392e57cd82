"""gs.compare: two runs compared layer by layer, checked against Keras sub-models and numpy.

The oracle for every number is independent of graphscope: each layer's output from a Keras
sub-model (`keras.Model(model.input, layer.output)`) of each model, and max |a-b|, max |a-b|/|b|
and the cosine computed by hand with numpy in float64.
"""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from rich.console import Console

import graphscope as gs
from graphscope.data.store import is_store
from tests import models

tf_keras = pytest.importorskip("tf_keras")

LAYERS = ("d1", "d2", "d3", "out")


def chain(k, *, prefix: str = "", dtype=None):
    """Square Dense layers (a transposed kernel keeps its shape), then a softmax head; built
    with Keras `k` (keras or tf_keras). `dtype`: each layer's dtype policy (never the global one)."""
    extra = {} if dtype is None else {"dtype": dtype}
    x = k.Input((6,), name="x")
    h = k.layers.Dense(6, activation="tanh", name=f"{prefix}d1", **models._init(k), **extra)(x)
    h = k.layers.Dense(6, activation="relu", name=f"{prefix}d2", **models._init(k), **extra)(h)
    h = k.layers.Dense(6, name=f"{prefix}d3", **models._init(k), **extra)(h)
    out = k.layers.Dense(3, activation="softmax", name=f"{prefix}out", **models._init(k), **extra)(h)
    return k.Model(x, out, name="chain")


def by_keras(model, x, names):
    """Each named layer's output, from a Keras sub-model of `model`."""
    k = tf_keras if isinstance(model, tf_keras.Model) else keras
    return {n: np.asarray(k.Model(model.input, model.get_layer(n).output)(x)) for n in names}


def numpy_errors(a, b):
    """max |a-b|, max |a-b|/|b| where b != 0, cosine: by hand, in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    d = np.abs(a - b)
    nz = b != 0
    return d.max(), (d[nz] / np.abs(b[nz])).max(), a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.fixture(scope="module")
def port():
    """A tf_keras model, its faithful Keras 3 port, and a port with d2's kernel transposed."""
    k2 = chain(tf_keras)
    weights = k2.get_weights()
    k3 = chain(keras)
    k3.set_weights(weights)
    wrong = chain(keras)
    wrong.set_weights([w.T if k == 2 else w for k, w in enumerate(weights)])
    assert weights[2].shape == (6, 6) and not np.allclose(weights[2], weights[2].T)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    return {"k2": k2, "k3": k3, "wrong": wrong, "x": x,
            "a": gs.trace(k2, quiet=True), "b": gs.trace(k3, quiet=True), "bad": gs.trace(wrong, quiet=True)}


def check_rows(cmp, want_a, want_b):
    """Every row's errors are numpy's over the Keras sub-models' values."""
    for row in cmp.rows:
        max_abs, max_rel, cosine = numpy_errors(want_a[row.name], want_b[row.name])
        np.testing.assert_allclose(row.max_abs, max_abs, rtol=1e-4, atol=1e-6, err_msg=row.name)
        np.testing.assert_allclose(row.max_rel, max_rel, rtol=1e-4, atol=1e-5, err_msg=row.name)
        np.testing.assert_allclose(row.cosine, cosine, rtol=1e-6, atol=1e-6, err_msg=row.name)
        assert row.ok == np.allclose(want_a[row.name], want_b[row.name], rtol=cmp.rtol, atol=cmp.atol)


def test_a_faithful_keras3_port_is_within_tolerance_everywhere(port):
    cmp = gs.compare(port["a"], port["b"], port["x"])
    assert [r.name for r in cmp.rows] == list(LAYERS)  # a's topological order
    assert cmp.first is None and cmp.ok and not cmp.unmatched
    assert [r.shape for r in cmp.rows] == [(3, 6)] * 3 + [(3, 3)]
    assert [r.layer for r in cmp.rows] == list(LAYERS)
    check_rows(cmp, by_keras(port["k2"], port["x"], LAYERS), by_keras(port["k3"], port["x"], LAYERS))


def test_a_port_with_a_transposed_kernel_diverges_at_that_layer(port):
    cmp = gs.compare(port["a"], port["bad"], port["x"])
    want_a, want_b = by_keras(port["k2"], port["x"], LAYERS), by_keras(port["wrong"], port["x"], LAYERS)
    assert cmp.first is not None and cmp.first.name == "d2"
    assert cmp.rows[0].ok and not np.allclose(want_a["d2"], want_b["d2"], rtol=1e-5, atol=1e-6)
    check_rows(cmp, want_a, want_b)
    text = str(cmp)
    assert "first outside tolerance: d2" in text and "|a-b| <= atol + rtol*|b|" in text


def test_every_tensor_paired_by_canonical_name(port):
    cmp = gs.compare(port["a"], port["bad"], port["x"], match="tensors")
    a = port["a"]
    shared = set(a.model_graph.tensors) & set(port["bad"].model_graph.tensors)
    valued = {n for n in shared if not a.tensor(n).is_handle and a.tensor(n).op not in a.model_graph.unused}
    assert {r.name for r in cmp.rows} | set(cmp.skipped) == valued
    assert set(cmp.unmatched.a).isdisjoint(shared) and set(cmp.unmatched.b).isdisjoint(shared)
    # the first tensor to differ: the transposed kernel's read, or its product when the reads are named apart
    first = cmp.first
    assert first is not None and first.layer == "d2"
    assert all(r.ok for r in cmp.rows[: cmp.rows.index(first)])


def test_a_mixed_float16_copy_is_compared_in_float64(port):
    mixed = chain(keras, dtype="mixed_float16")
    mixed.set_weights(port["k3"].get_weights())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is untouched
    cmp = gs.compare(port["b"], gs.trace(mixed, quiet=True), port["x"])
    want_a, want_b = by_keras(port["k3"], port["x"], LAYERS), by_keras(mixed, port["x"], LAYERS)
    assert {v.dtype for v in want_b.values()} == {np.dtype("float16")}
    for row in cmp.rows:
        assert (row.dtype, row.dtype_b) == ("float32", "float16") and "compared in float64" in row.note
    check_rows(cmp, want_a, want_b)
    assert cmp.first is not None  # float16 holds about 3 digits: outside rtol=1e-5


def test_a_stored_run_as_reference(port, tmp_path):
    a = port["a"]
    saved = a.extract([a.layer(n).output for n in LAYERS], port["x"], out=tmp_path / "run.zarr", quiet=True)
    assert is_store(tmp_path / "run.zarr") and not is_store(tmp_path) and not is_store(tmp_path / "none")
    same = gs.compare(a, saved, port["x"])
    assert [r.name for r in same.rows] == list(LAYERS) and same.ok
    assert all(r.max_abs == 0 and r.cosine == 1 for r in same.rows)
    regressed = gs.compare(port["bad"], saved, port["x"])
    assert regressed.first.name == "d2"
    check_rows(regressed, by_keras(port["wrong"], port["x"], LAYERS), by_keras(port["k2"], port["x"], LAYERS))
    # other inputs than the run was extracted from (reordered by mistake): refused, not read as a regression
    for other in (port["x"][::-1].copy(), port["x"] + 1.0, port["x"].astype("float64")):
        with pytest.raises(gs.InputError, match=r"b is a run stored at .* from other inputs.*pass the inputs it was"):
            gs.compare(a, saved, other)


def test_a_partial_mapping_of_reference_arrays(port):
    want = by_keras(port["k2"], port["x"], LAYERS)
    a = port["a"]
    d2 = a.layer("d2").output.name  # keys: layer paths, or canonical tensor names
    cmp = gs.compare(a, {"d1": want["d1"], d2: want["d2"] + 1.0, "elsewhere": np.zeros(3)}, port["x"])
    assert [r.name for r in cmp.rows] == ["d1", "d2"] and [r.other for r in cmp.rows] == ["d1", d2]
    assert cmp.unmatched.a == ("d3", "out") and cmp.unmatched.b == ("elsewhere",)
    assert cmp.first.name == "d2"
    np.testing.assert_allclose(cmp.first.max_abs, 1.0, rtol=1e-6)


def test_a_shape_mismatch_is_a_row_not_a_crash(port):
    want = by_keras(port["k2"], port["x"], ["d1", "d2"])
    cmp = gs.compare(port["a"], {"d1": want["d1"].T, "d2": want["d2"]}, port["x"])
    bad, good = cmp.rows
    assert not bad.ok and bad.note == "shape [3,6] vs [6,3]" and np.isnan(bad.max_abs)
    assert (bad.shape, bad.shape_b) == ((3, 6), (6, 3))
    assert good.ok and cmp.first is bad
    assert "shape [3,6] vs [6,3]" in str(cmp)


def test_a_function_maps_names_to_a_port_named_otherwise(port):
    renamed = chain(keras, prefix="p_")
    renamed.set_weights(port["k2"].get_weights())
    b = gs.trace(renamed, quiet=True)
    cmp = gs.compare(port["a"], b, port["x"], match=lambda n: None if n == "d3" else "p_" + n)
    assert [r.other for r in cmp.rows] == ["p_d1/Tanh:0", "p_d2/Relu:0", "p_out/Softmax:0"]
    assert cmp.ok and cmp.unmatched.a == ("d3",) and cmp.unmatched.b == ("p_d3",)


def test_each_side_runs_once(port, monkeypatch):
    calls = []
    for side in ("a", "b"):
        scope = port[side]
        original = scope.run
        monkeypatch.setattr(scope, "run",
                            lambda *args, _run=original, _side=side, **kw: calls.append(_side) or _run(*args, **kw))
    gs.compare(port["a"], port["b"], port["x"])
    assert calls == ["a", "b"]


def test_inputs_b_feeds_b_its_own():
    a_model, b_model = chain(keras), keras.Sequential([keras.Input((2, 3)), keras.layers.Reshape((6,)), chain(keras)])
    b_model.layers[-1].set_weights(a_model.get_weights())
    x = np.random.default_rng(1).normal(size=(2, 6)).astype("float32")
    cmp = gs.compare(gs.trace(a_model, quiet=True), {"d1": by_keras(a_model, x, ["d1"])["d1"]}, x)
    assert cmp.ok
    a, b = gs.trace(a_model, quiet=True), gs.trace(b_model, quiet=True)
    cmp = gs.compare(a, b, x, inputs_b=x.reshape(2, 2, 3), match=lambda n: "chain/" + n)
    assert [r.name for r in cmp.rows] == list(LAYERS) and cmp.ok


def test_inputs_by_name_feed_a_port_whose_input_is_named_otherwise(port):
    renamed = keras.Model(*(lambda i: (i, port["k3"](i)))(keras.Input((6,), name="features")))
    b = gs.trace(renamed, quiet=True)
    assert b.inputs == ["features"] and port["a"].inputs == ["x"]
    cmp = gs.compare(port["a"], b, {"x": port["x"]}, match=lambda n: "chain/" + n)
    assert [r.name for r in cmp.rows] == list(LAYERS) and cmp.ok


def test_values_inside_a_loop_are_compared_per_iteration():
    model = models.control_flow()
    a = gs.trace(model, quiet=True)
    x = models.sample_inputs(model)[0]
    same = gs.compare(a, gs.trace(model, quiet=True), x, match="tensors")
    looped = [r for r in same.rows if r.note == "per iteration"]
    assert looped and same.ok
    name = looped[-1].name
    value = np.array(a.run(name, x)[name], np.float64)  # one entry per iteration on axis 0
    assert value.shape[0] >= 3
    value[2] += 1.0
    cmp = gs.compare(a, {name: value}, x, match="tensors")
    (row,) = cmp.rows
    assert not row.ok and row.iteration == 2


def test_the_table_and_the_plot(port):
    pytest.importorskip("matplotlib")
    cmp = gs.compare(port["a"], port["bad"], port["x"])
    console = Console(width=100, color_system=None, record=True, file=io.StringIO())
    console.print(cmp)
    text = console.export_text()
    lines = [line for line in text.splitlines() if line.strip().startswith(("d1 ", "d2 "))]
    assert lines[0].split()[-1] == "ok" and "DIFFERS" in lines[1] and "◀ first" in lines[1]
    html = cmp._repr_html_()
    assert "DIFFERS" in html and "first outside tolerance: d2" in html
    fig = cmp.plot()
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    first_line = [line for line in ax.get_lines() if line.get_label().startswith("first outside tolerance")]
    assert first_line and first_line[0].get_xdata()[0] == 1  # d2, the second row
    abs_line = next(line for line in ax.get_lines() if line.get_label() == "max |a-b|")
    finite = [r.max_abs for r in cmp.rows]
    np.testing.assert_allclose(abs_line.get_ydata()[1:], finite[1:])


def _tiny():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="dense", kernel_initializer="ones"),
                              keras.layers.Dense(1, name="head", kernel_initializer="ones")], name="tiny")
    return gs.trace(model, quiet=True), np.array([[1.0, 2.0]], "float32")  # dense: [3, 3]; head: [6]


def test_the_table_exactly():
    scope, x = _tiny()
    reference = {"dense": np.array([[3.0, 3.0]], "float32"), "head": np.array([[6.5]], "float32"), "extra": np.zeros(1)}
    cmp = gs.compare(scope, reference, x)
    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    console.print(cmp)
    text = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    assert text == """\
2 layer outputs compared (rtol=1e-05, atol=1e-06)

 name    shape   max |a-b|   max rel   cosine                     note
 ─────────────────────────────────────────────────────────────────────
 dense   [1,2]           0         0        1   ok
 head    [1,1]         0.5    0.0769        1   DIFFERS ◀ first

within tolerance: |a-b| <= atol + rtol*|b| everywhere (numpy.allclose, b the
reference); values of two dtypes are compared in float64, integers exactly
only in b: extra
first outside tolerance: head"""
    assert repr(cmp) == "<Comparison 2 rows (layers), first outside tolerance: head; 0 + 1 unmatched>"


def test_nan_agrees_with_nan_and_differs_from_a_number():
    x_in = keras.Input((2,))
    logs = keras.layers.Lambda(lambda v: keras.ops.log(v - 2.5), name="logs")(x_in)  # log(-1.5) = NaN, log(-0.5)
    scope = gs.trace(keras.Model(x_in, logs), quiet=True)
    x = np.array([[1.0, 5.0]], "float32")
    with np.errstate(invalid="ignore"):
        want = np.log(x.astype(np.float64) - 2.5)  # [NaN, log 2.5]
    assert np.isnan(want[0, 0])
    both = gs.compare(scope, {"logs": want}, x)
    assert both.rows[0].ok and np.isnan(both.rows[0].cosine)
    np.testing.assert_allclose(both.rows[0].max_abs, abs(np.float32(np.log(2.5)) - np.log(2.5)), atol=1e-7)
    one = gs.compare(scope, {"logs": np.nan_to_num(want)}, x)  # 0 where a has NaN
    assert not one.rows[0].ok and one.rows[0].max_abs == one.rows[0].max_rel == np.inf


def test_a_reloaded_saved_model(tmp_path):
    model = models.functional()
    model.export(tmp_path / "exported", verbose=False)
    x = models.sample_inputs(model)[0]
    assert not is_store(tmp_path / "exported")  # what `graphscope compare` tells a store by
    reloaded = gs.trace(str(tmp_path / "exported"), quiet=True)  # no Python classes: layers from name scopes
    cmp = gs.compare(gs.trace(model, quiet=True), reloaded, x)
    names = [lay.name for lay in model.layers[1:]]
    assert [r.name for r in cmp.rows] == names and cmp.ok and not cmp.unmatched
    want = by_keras(model, x, names)
    check_rows(cmp, want, want)


def test_a_stored_run_with_values_per_batch(port, tmp_path):
    b = port["b"]
    read = b.find(op_type="ReadVariableOp")[0]  # no batch axis: stored once per batch
    saved = b.extract([b.layer("d1").output, read], port["x"], out=tmp_path / "run.zarr", batch_size=2, quiet=True)
    assert saved[read.name].layout == "batch" and len(saved[read.name]) == 2
    cmp = gs.compare(b, saved, port["x"], match="tensors")
    assert cmp[b.layer("d1").output.name].ok
    row = cmp[read.name]
    assert not row.ok and "stored once per batch over 2 batches" in row.note


def _identity(shape, dtype="float32"):
    """A model whose one layer, "id", gives its input back: a's values are the inputs fed."""
    x_in = keras.Input(shape, dtype=dtype)
    return gs.trace(keras.Model(x_in, keras.layers.Identity(name="id", dtype=dtype)(x_in)), quiet=True)


def test_a_mixed_bfloat16_copy_is_compared_in_float64(port):
    import ml_dtypes

    mixed = chain(keras, dtype="mixed_bfloat16")
    mixed.set_weights(port["k3"].get_weights())
    b = gs.trace(mixed, quiet=True)
    cmp = gs.compare(port["b"], b, port["x"], rtol=1e-1, atol=1e-1)
    want_a, want_b = by_keras(port["k3"], port["x"], LAYERS), by_keras(mixed, port["x"], LAYERS)
    assert {v.dtype for v in want_b.values()} == {np.dtype(ml_dtypes.bfloat16)}
    for row in cmp.rows:  # numbers on every row (the graph's bfloat16 rounding is not eager Keras's to the bit)
        assert (row.dtype, row.dtype_b) == ("float32", "bfloat16") and "compared in float64" in row.note
        assert 0 < row.max_abs < 0.1 and 0 < row.max_rel and 0.99 < row.cosine < 1 and row.ok, row
    # a's values (float32, as Keras's: see the tests above) against Keras's bfloat16 ones: numpy's numbers
    cmp = gs.compare(port["b"], want_b, port["x"], rtol=1e-3, atol=1e-4)
    for row in cmp.rows:
        assert (row.dtype, row.dtype_b) == ("float32", "bfloat16") and "compared in float64" in row.note
        max_abs, max_rel, cosine = numpy_errors(want_a[row.name], want_b[row.name])
        assert max_abs > 0 and cosine < 1  # bfloat16 holds about 2 digits: every row differs a little
        np.testing.assert_allclose([row.max_abs, row.max_rel, row.cosine], [max_abs, max_rel, cosine],
                                   rtol=1e-4, atol=1e-6, err_msg=row.name)  # a's float32: Keras's to an ulp
        assert row.ok == np.allclose(np.asarray(want_a[row.name], np.float64),
                                     np.asarray(want_b[row.name], np.float64), rtol=1e-3, atol=1e-4)
    assert not cmp.ok
    # bfloat16 against bfloat16 (a mapping), and float8 against float32: numbers, not "values differ"
    scope = _identity((40,), "bfloat16")  # a's values: the inputs, exactly
    x = np.linspace(-3, 3, 40).reshape(1, 40).astype(ml_dtypes.bfloat16)
    other = (x.astype(np.float64) + 1e-2).astype(ml_dtypes.bfloat16)
    row = gs.compare(scope, {"id": other}, x, rtol=0.5, atol=0.5)["id"]
    max_abs, max_rel, cosine = numpy_errors(x, other)
    assert row.dtype == row.dtype_b == "bfloat16" and row.ok and not row.note and max_abs > 0
    np.testing.assert_allclose([row.max_abs, row.max_rel, row.cosine], [max_abs, max_rel, cosine], rtol=1e-12)
    eight = x.astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    row = gs.compare(scope, {"id": eight}, x)["id"]
    max_abs, max_rel, cosine = numpy_errors(x, eight)
    assert row.dtype_b == "float8_e4m3fn" and not row.ok and max_abs > 0 and "compared in float64" in row.note
    np.testing.assert_allclose([row.max_abs, row.max_rel, row.cosine], [max_abs, max_rel, cosine], rtol=1e-12)

def test_the_cosine_of_values_whose_norms_differ_a_thousandfold():
    rng = np.random.default_rng(7)
    n = 200_000
    scope = _identity((n,))
    for ratio in (1.0, 1e3, 1e4):
        x = (rng.normal(size=(1, n)) * ratio).astype("float32")
        ref = rng.normal(size=(1, n)).astype("float32")
        row = gs.compare(scope, {"id": ref}, x)["id"]
        cosine = numpy_errors(x, ref)[2]  # float64 dot over the float64 norms
        assert abs(cosine) < 1e-2  # unrelated values: the cosine is near 0, where float32 sums err most
        np.testing.assert_allclose(row.cosine, cosine, rtol=0, atol=1e-9, err_msg=f"norm ratio {ratio:g}")
    near = (x * (1 + 1e-4 * rng.normal(size=(1, n)))).astype("float32")  # nearly equal: 1 - cosine about 5e-9
    row = gs.compare(scope, {"id": near}, x)["id"]
    a64, b64 = x.astype(np.float64).ravel(), near.astype(np.float64).ravel()
    one_minus = np.sum((a64 - b64) ** 2) - (np.linalg.norm(a64) - np.linalg.norm(b64)) ** 2
    one_minus /= 2 * np.linalg.norm(a64) * np.linalg.norm(b64)
    assert 1e-9 < one_minus < 1e-8
    np.testing.assert_allclose(1 - row.cosine, one_minus, rtol=1e-6)


def test_non_finite_values_clash_with_everything_but_themselves():
    scope = _identity((6,))
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, inf, -inf, nan, 2.0, 8.0]], "float32")
    cases = {  # b at positions 1..3; positions 0, 4, 5 finite and the same each time, 4 outside tolerance
        "same non-finite values": [inf, -inf, nan],
        "the other infinity": [-inf, -inf, nan],
        "a number for a NaN": [inf, -inf, 3.0],
        "an infinity for a number": [inf, -inf, nan],
    }
    for what, middle in cases.items():
        a = x.copy()
        if what == "an infinity for a number":
            a[0, 3] = 3.0
        b = np.array([[1.0, *middle, 2.5, 8.0]], "float32")
        row = gs.compare(scope, {"id": b}, a)["id"]
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        assert row.ok == np.allclose(a64, b64, rtol=1e-5, atol=1e-6, equal_nan=True) is False
        both = np.isfinite(a64) & np.isfinite(b64)
        agree = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        if (agree | both).all():  # every non-finite position agrees: numbers from the finite ones
            assert what == "same non-finite values"
            d = np.abs(a64[both] - b64[both])
            assert (row.max_abs, row.max_rel) == (d.max(), (d / np.abs(b64[both])).max()) == (0.5, 0.2)
        else:  # one side non-finite, the other something else
            assert row.max_abs == row.max_rel == np.inf, what
        assert np.isnan(row.cosine)
    ok = gs.compare(scope, {"id": x.copy()}, x)["id"]
    assert ok.ok and ok.max_abs == ok.max_rel == 0


def test_integers_are_compared_exactly():
    scope = _identity((3,), "int64")
    big = 2**60
    x = np.array([[big + 1, -(2**63), 7]], "int64")
    for ref, rtol, atol in [([big, -(2**63), 7], 0, 0), ([big + 1, 2**63 - 1, 7], 0, 0),
                            ([big + 1, -(2**63), 7], 0, 0), ([big, -(2**63), 7], 1e-18, 0),
                            ([big + 3, -(2**63), 7], 0, 2.5), ([big + 3, -(2**63), 7], 0, 3)]:
        b = np.array([ref], "int64")
        row = gs.compare(scope, {"id": b}, x, rtol=rtol, atol=atol)["id"]
        d = [abs(int(p) - int(q)) for p, q in zip(x.ravel(), b.ravel())]  # Python ints: exact
        assert row.max_abs == float(max(d)), ref
        assert row.ok == all(e <= atol + rtol * abs(int(q)) for e, q in zip(d, b.ravel())), (ref, rtol, atol)
        rel = [e / abs(int(q)) for e, q in zip(d, b.ravel()) if q != 0]
        np.testing.assert_allclose(row.max_rel, max(rel), rtol=1e-12)
    assert float(big + 1) == float(big)  # in float64 the first pair would look equal: why exactly matters
    narrow = gs.compare(scope, {"id": x.astype("int32")[:, 2:].repeat(3, axis=1)}, np.array([[7, 7, 7]]))["id"]
    assert narrow.ok and narrow.note == "int64 vs int32, compared exactly"


def test_tensors_mode_pairs_a_layer_output_b_names_otherwise_by_its_path():
    """A new user's tf_keras -> Keras 3 LSTM port with a wrong activation: by canonical name only
    the shape plumbing paired (tf_keras names the output `lstm/PartitionedCall:1`, Keras 3
    `lstm/transpose_1:0`) and `.first` fell on the Dense downstream. The layer output is paired
    by its path too, and `.first` is the broken layer, its error numpy's."""
    tf_keras = pytest.importorskip("tf_keras")

    def build(k, activation="tanh"):
        x = k.Input((6, 3), name="seq")
        h = k.layers.LSTM(4, return_sequences=True, activation=activation, name="lstm")(x)
        return k.Model(x, k.layers.Dense(2, name="out")(k.layers.LSTM(4, name="lstm2")(h)))

    tf_keras.utils.set_random_seed(0)
    old = build(tf_keras)
    new = build(keras, activation="relu")
    new.set_weights(old.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    cmp = gs.compare(gs.trace(old, quiet=True), gs.trace(new, quiet=True), x, match="tensors")
    assert cmp.first is not None and cmp.first.name == "lstm"
    want_a = tf_keras.Model(old.input, old.get_layer("lstm").output)(x).numpy()
    want_b = keras.Model(new.input, new.get_layer("lstm").output)(x).numpy()
    np.testing.assert_allclose(cmp["lstm"].max_abs, np.abs(want_a - want_b).max(), rtol=1e-5)


class _Spectrum(keras.layers.Layer):
    """A layer returning the complex FFT of its input (FNet mixes tokens so)."""

    def call(self, x):
        import tensorflow as tf

        return tf.signal.fft(tf.complex(x, tf.zeros_like(x)))


def test_complex_values_are_compared_by_their_moduli():
    """An FFT's complex values against numpy's FFT: within tolerance as numpy.allclose decides for
    complex values, max |a-b| and max |a-b|/|b| numpy's moduli, the cosine that of the real and
    imaginary parts; a value off by 0.5j is outside tolerance (was: NaN figures and 'values
    differ' whenever the two were not bit for bit equal, numpy's own FFT included)."""
    x_in = keras.Input((8,), name="x")
    scope = gs.trace(keras.Model(x_in, _Spectrum(name="spectrum")(x_in)), quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    mine = np.fft.fft(x.astype(np.float64))  # numpy's FFT, not graphscope's values: the oracle's a side
    got = scope.run("spectrum", x)["spectrum/FFT:0"]
    assert got.dtype == np.complex64 and np.allclose(got, mine, rtol=1e-5, atol=1e-5)
    for ref, within in [(mine, True), (mine + 0.5j, False), (mine * (1 + 1e-3), False)]:
        row = gs.compare(scope, {"spectrum": ref}, x).rows[0]
        d = np.abs(got.astype(np.complex128) - ref)
        assert row.ok == within == np.allclose(got, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row.max_abs, d.max(), rtol=1e-12)
        np.testing.assert_allclose(row.max_rel, (d / np.abs(ref)).max(), rtol=1e-12)
        a = np.concatenate([got.real.ravel(), got.imag.ravel()]).astype(np.float64)
        b = np.concatenate([ref.real.ravel(), ref.imag.ravel()])
        np.testing.assert_allclose(row.cosine, a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), rtol=1e-9)
        assert row.note == "complex64 vs complex128, compared in complex128"
    assert gs.compare(scope, scope, x).rows[0].max_abs == 0


def test_complex_values_beside_a_nan_are_still_compared_by_their_moduli():
    """A NaN that both sides hold (an FFT of a row holding NaN) made every other complex value be
    compared part by part, as two floats: values within numpy.allclose's tolerance of their moduli
    (off by 4e-6 of them, in their imaginary parts) were outside tolerance. Only the values with a NaN or infinite part are compared so."""
    x_in = keras.Input((8,), name="x")
    scope = gs.trace(keras.Model(x_in, _Spectrum(name="spectrum")(x_in)), quiet=True)
    x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    x[0, 3] = np.nan
    got = scope.run("spectrum", x)["spectrum/FFT:0"].astype(np.complex128)
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()
    ref = got.copy()  # the NaN row as it is; the other off by 4e-6 of each modulus, imaginary
    ref[1] += 4e-6 * np.abs(got[1]) * 1j
    assert np.allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert not np.allclose(got[1].imag, ref[1].imag, rtol=1e-5, atol=1e-6)  # part by part it is off
    row = gs.compare(scope, {"spectrum": ref}, x).rows[0]
    assert row.ok
    d = np.abs(got[1] - ref[1])
    np.testing.assert_allclose(row.max_abs, d.max(), rtol=1e-9)
    np.testing.assert_allclose(row.max_rel, (d / np.abs(ref[1])).max(), rtol=1e-9)
    off = ref.copy()
    off[1, 2] += 1e-3 * abs(ref[1, 2])  # outside the modulus' tolerance: still outside
    assert not gs.compare(scope, {"spectrum": off}, x).rows[0].ok
    assert not np.allclose(got, off, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_a_layer_whose_output_its_sublayer_made_comes_after_that_sublayer():
    """keras-hub's DepthAnything neck: a `reassemble_stage` layer returns what its `projection`
    (then identity `padding` and `resize` sublayers) computed, so the four rows share one tensor,
    and they were ordered as the layer tree lists them, the outer layer first: a copy with the
    projection's kernel perturbed was reported as diverging at `reassemble_stage_2`, not at
    `reassemble_stage_2/projection`. In MiT (SegFormer's encoder) an identity `drop_path` made
    before the `mix_ffn` it is called on is listed before it. Rows of one tensor come in the
    order the calls returned it: a sublayer before the layer holding it, a layer that is passed
    the tensor after the one that made it."""

    class Mlp(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.fc = keras.layers.Dense(4, name="fc")

        def call(self, x):
            return self.fc(x)

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.drop = keras.layers.Identity(name="drop")  # made first, called on mlp's output
            self.mlp = Mlp(name="mlp")
            self.pad = keras.layers.Identity(name="pad")

        def call(self, x):
            return self.pad(self.drop(self.mlp(x)))

    def build():
        keras.utils.set_random_seed(0)
        x = keras.Input((3,), name="x")
        h = Block(name="block")(keras.layers.Dense(4, name="a")(x))
        return keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.Identity(name="same")(h)))

    model, copy = build(), build()
    weights = copy.get_weights()
    k = [w.path for w in copy.weights].index("block/mlp/fc/kernel")
    weights[k] = weights[k] * 2.0
    copy.set_weights(weights)
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    a = gs.trace(model, quiet=True)
    assert [lay.name for lay in a.layers][2:6] == ["block", "block/drop", "block/mlp", "block/mlp/fc"]
    cmp = gs.compare(a, gs.trace(copy, quiet=True), x)
    assert [r.name for r in cmp.rows] == ["a", "block/mlp/fc", "block/mlp", "block/drop", "block/pad", "block",
                                          "same", "head"]
    assert cmp.first is not None and cmp.first.name == "block/mlp/fc"
    fc = keras.Model(model.input, model.get_layer("block").output)(x)  # fc's output is block's
    fc_copy = keras.Model(copy.input, copy.get_layer("block").output)(x)
    np.testing.assert_allclose(cmp["block/mlp/fc"].max_abs, np.abs(np.asarray(fc) - np.asarray(fc_copy)).max(),
                               rtol=1e-5)
    assert cmp.rows[0].ok and not cmp.rows[1].ok


def test_rows_that_depend_on_numbers_drawn_anew_each_run_say_so():
    """Two scopes of one model traced with training=True differ from its Dropout on, run to run,
    whatever the weights: those rows (and only those) say which layer draws the numbers; a row
    before the Dropout agrees and has no note. Against Keras' own values (a mapping b) the a side's
    draws are named too; traced for inference, nothing is drawn and nothing is noted."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((6,), name="x")
    h = keras.layers.Dropout(0.5, name="drop")(keras.layers.Dense(8, name="a")(x_in))
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(h))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    a, b = (gs.trace(model, training=True, quiet=True) for _ in range(2))
    cmp = gs.compare(a, b, x)
    assert [r.name for r in cmp.rows] == ["a", "drop", "head"]
    assert cmp.rows[0].ok and cmp.rows[0].note == ""
    for r in cmp.rows[1:]:
        assert not r.ok and r.note == "random: depends on numbers layer 'drop' draws anew each run"
    keras_values = {"a": model.get_layer("a")(x).numpy(), "head": model(x, training=False).numpy()}
    against_keras = gs.compare(a, keras_values, x)
    assert against_keras["a"].ok and against_keras["a"].note == ""
    assert "layer 'drop' draws anew" in against_keras["head"].note
    inference = gs.compare(gs.trace(model, quiet=True), keras_values, x)
    assert inference.ok and all(r.note == "" for r in inference.rows)
