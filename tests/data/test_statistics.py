"""Scope.statistics: every figure is compared with numpy in float64 over the concatenated values,
taken from Keras sub-models where Keras can give them, else from values fetched batch by batch
(`scope.run`, itself checked against Keras elsewhere) or computed by hand."""

import gc
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
import graphscope.runtime.statistics as runtime_statistics
from tests import models
from tests.conftest import assert_weights_unchanged, weights_snapshot


def conv_model():
    x_in = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv", **models._init())(x_in)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv2", **models._init())(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    out = keras.layers.Dense(3, name="logits", **models._init())(h)
    return keras.Model(x_in, out, name="convnet")


def expected(values, axis=-1, bins=None):
    """numpy's figures (float64) of the concatenated values: per entry of `axis`, or of all."""
    a = np.asarray(values, np.float64)
    if axis is None:
        rows = a.reshape(-1, 1)
    else:
        rows = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
    out = []
    for col in rows.T:
        finite = col[np.isfinite(col)]
        entry = {
            "count": finite.size, "nonfinite": col.size - finite.size,
            "mean": finite.mean() if finite.size else np.nan, "std": finite.std() if finite.size else np.nan,
            "min": finite.min() if finite.size else np.nan, "max": finite.max() if finite.size else np.nan,
            "zero_fraction": (finite == 0).mean() if finite.size else np.nan,
        }
        if bins is not None:
            entry["histogram"] = np.histogram(finite, bins) if finite.size else None
        out.append(entry)
    return out


def assert_matches(stats, values, axis=-1, bins=None, rtol=1e-6, exact=True):
    """`stats` (a TensorStats) equals numpy's figures of `values`: counts, min, max, zero
    fractions and histograms exactly; mean and std to float32 summation's rounding (about 1e-7
    of the values' scale per value summed in float32)."""
    want = expected(values, axis, bins)
    scale = max(float(np.nanmax(np.abs(np.asarray(values, np.float64)[np.isfinite(values)]), initial=0)), 1e-30)
    one = axis is None
    get = (lambda f: np.atleast_1d(np.asarray(getattr(stats, f), np.float64)))
    for f in ("count", "nonfinite", "min", "max"):
        if exact or f in ("count", "nonfinite"):
            np.testing.assert_array_equal(get(f), [w[f] for w in want], err_msg=f)
        else:  # an oracle computed by hand in float64 is not the model's float32 value
            np.testing.assert_allclose(get(f), [w[f] for w in want], rtol=rtol, atol=rtol * scale, err_msg=f)
    np.testing.assert_allclose(get("zero_fraction"), [w["zero_fraction"] for w in want], rtol=1e-12, err_msg="zeros")
    for f in ("mean", "std"):
        np.testing.assert_allclose(get(f), [w[f] for w in want], rtol=rtol, atol=rtol * scale, err_msg=f)
    if bins is None:
        assert stats.histogram is None
        return
    counts, edges = stats.histogram
    if one:
        counts, edges = counts[None], edges[None]
    for k, w in enumerate(want):
        np.testing.assert_array_equal(counts[k], w["histogram"][0])
        np.testing.assert_array_equal(edges[k], w["histogram"][1])


@pytest.fixture(scope="module")
def convnet():
    model = conv_model()
    return model, gs.trace(model, quiet=True)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(23, 8, 8, 3)).astype("float32")


def keras_values(model, layer, x):
    return keras.Model(model.input, model.get_layer(layer).output)(x).numpy()


@pytest.mark.parametrize("axis", [-1, None, 1, 2])
def test_layer_outputs_equal_numpy_over_keras_values(convnet, images, axis):
    model, scope = convnet
    fetched = {"conv/Relu:0": "conv", "conv2/Relu:0": "conv2"}
    if axis in (-1, None):
        fetched["logits/BiasAdd:0"] = "logits"
    stats = scope.statistics(list(fetched), images, batch_size=5, axis=axis, quiet=True)
    assert stats.samples == 23 and stats.batches == 5
    for name, layer in fetched.items():
        assert_matches(stats[name], keras_values(model, layer, images), axis)


def test_pre_activation_inside_a_layer_equals_numpy_by_hand(convnet, images):
    model, scope = convnet
    stats = scope.statistics("logits/BiasAdd:0", images, batch_size=4, quiet=True)
    pooled = keras_values(model, "pool", images).astype(np.float64)
    kernel, bias = (w.numpy().astype(np.float64) for w in model.get_layer("logits").weights)
    assert_matches(stats["logits/BiasAdd:0"], pooled @ kernel + bias, rtol=1e-5, exact=False)


@pytest.mark.parametrize("bins", [1, 4, 17])
def test_histograms_equal_numpy_histogram(convnet, images, bins):
    model, scope = convnet
    stats = scope.statistics(["conv/Relu:0", "conv2/BiasAdd:0"], images, batch_size=6, bins=bins, quiet=True)
    assert_matches(stats["conv/Relu:0"], keras_values(model, "conv", images), bins=bins)
    pre = scope.run("conv2/BiasAdd:0", images)["conv2/BiasAdd:0"]
    assert_matches(stats["conv2/BiasAdd:0"], pre, bins=bins)
    whole = scope.statistics("conv/Relu:0", images, axis=None, bins=bins, quiet=True)["conv/Relu:0"]
    assert_matches(whole, keras_values(model, "conv", images), axis=None, bins=bins)


def test_dead_channels_are_those_numpy_finds_never_positive():
    x_in = keras.Input((4,), name="x")
    dense = keras.layers.Dense(5, activation="relu", name="dense")
    model = keras.Model(x_in, dense(x_in))
    kernel, bias = dense.get_weights()
    kernel[:, [1, 3]] = 0.0
    bias[[1, 3]] = -1.0  # channels 1 and 3 can never be positive
    dense.set_weights([kernel, bias])
    x = np.random.default_rng(1).normal(size=(40, 4)).astype("float32")
    stats = gs.trace(model, quiet=True).statistics("dense/Relu:0", x, quiet=True)
    values = model(x).numpy()
    np.testing.assert_array_equal(stats.dead()["dense/Relu:0"], np.flatnonzero(values.max(0) <= 0))
    np.testing.assert_array_equal(stats["dense/Relu:0"].dead(), [1, 3])
    np.testing.assert_array_equal(stats["dense/Relu:0"].dead(threshold=values.max()), np.arange(5))


def test_every_data_form_gives_the_same_figures(convnet, images):
    _, scope = convnet
    name = "conv2/Relu:0"
    want = scope.statistics(name, images, batch_size=8, quiet=True)[name]
    batches = [images[k : k + 8] for k in range(0, len(images), 8)]
    forms = {
        "dataset of samples": (tf.data.Dataset.from_tensor_slices(images), 8),
        "dataset of batches": (tf.data.Dataset.from_tensor_slices(images).batch(8), None),
        "(x, y) batches": (tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(8), None),
        "list of batches": (batches, None),
        "generator": ((b for b in batches), None),
        "dict": ({"image": images}, 8),
    }
    for what, (data, b) in forms.items():
        got = scope.statistics(name, data, batch_size=b, quiet=True)[name]
        for f in ("count", "mean", "std", "min", "max", "zero_fraction", "nonfinite"):
            np.testing.assert_allclose(getattr(got, f), getattr(want, f), rtol=1e-12, err_msg=f"{what}: {f}")
    # a list of batches can be read twice (bins); a generator cannot
    twice = scope.statistics(name, batches, bins=3, quiet=True)[name]
    np.testing.assert_array_equal(twice.histogram[0], scope.statistics(name, images, bins=3, quiet=True)[name].histogram[0])
    with pytest.raises(gs.ArgumentError, match="two passes.*generator"):
        scope.statistics(name, (b for b in batches), bins=3, quiet=True)


def test_samples_are_counted_on_the_batch_axis_and_one_sample_is_refused(convnet, images):
    """A tf.Tensor (or a dict of them) holds the samples (it is not a list of batches); an array
    or a dataset element without the batch axis is refused, rather than read as one sample and
    counted as many."""
    model, scope = convnet
    name = "conv/Relu:0"
    for data in (tf.constant(images), {"image": tf.constant(images)}):
        got = scope.statistics(name, data, batch_size=8, quiet=True)
        assert got.samples == len(images) and got.batches == 3
        assert_matches(got[name], keras_values(model, "conv", images))
    with pytest.raises(gs.InputError,
                       match=r"takes batches of shape \[\?,8,8,3\].*got an array of shape \[8,8,3\].*x\[None\]"):
        scope.statistics(name, images[0], quiet=True)
    with pytest.raises(gs.InputError,
                       match=r"got an array of shape \[8,8,3\].*a tf.data.Dataset of samples\? pass batch_size"):
        scope.statistics(name, tf.data.Dataset.from_tensor_slices(images), quiet=True)
    with pytest.raises(gs.InputError, match=r"give each batch with its batch axis"):
        scope.statistics(name, list(images), quiet=True)
    # a dataset that repeats would never finish: refused before anything runs
    with pytest.raises(gs.ArgumentError, match=r"never ends.*dataset.take\(n\)"):
        scope.statistics(name, tf.data.Dataset.from_tensor_slices(images).repeat(), batch_size=8, quiet=True)


def test_npy_and_npz_files_are_data(convnet, images, tmp_path):
    """A .npy file's path (read memory-mapped) and an .npz's (arrays by input name)."""
    model, scope = convnet
    name = "conv/Relu:0"
    np.save(tmp_path / "x.npy", images)
    np.savez(tmp_path / "x.npz", image=images)
    for path in (tmp_path / "x.npy", str(tmp_path / "x.npz")):
        got = scope.statistics(name, path, batch_size=8, bins=3, quiet=True)
        assert got.samples == len(images)
        assert_matches(got[name], keras_values(model, "conv", images), bins=3)
    with pytest.raises(gs.InputError, match="does not exist; give the path of a .npy or .npz file"):
        scope.statistics(name, tmp_path / "missing.npy", quiet=True)


def test_a_fixed_batch_size_takes_whole_batches_of_it():
    """A model built for batches of 4: arrays are batched by 4 when batch_size is left out;
    batches of another size, or samples that leave a short last batch, are refused, saying so;
    the figures are numpy's over the model's own values."""
    x_in = keras.Input((5,), batch_size=4, name="x")
    model = keras.Model(x_in, keras.layers.Dense(3, activation="relu", name="dense", **models._init())(x_in))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(4).normal(size=(10, 5)).astype("float32")
    with pytest.raises(gs.InputError, match=r"batch size is fixed at 4, got 10 samples in batches of 5: pass "
                                            r"batch_size=4 \(arrays are batched so when batch_size is left out\)"):
        scope.statistics("dense/Relu:0", x, batch_size=5, quiet=True)
    with pytest.raises(gs.InputError, match=r"fixed at 4, got 10 samples: the last batch would hold 2; pass a "
                                            r"number of samples divisible by 4"):
        scope.statistics("dense/Relu:0", x, quiet=True)
    for stats in (scope.statistics("dense/Relu:0", x[:8], quiet=True),
                  scope.statistics("dense/Relu:0", x[:8], batch_size=4, quiet=True)):
        assert_matches(stats["dense/Relu:0"], np.concatenate([model(x[:4]), model(x[4:8])]))


def test_a_fixed_batch_model_takes_batches_as_they_come():
    """The fixed batch size is the default for arrays only: a batched tf.data.Dataset, a list of
    batches and a generator already hold batches of 4 and are read as they are (they were refused,
    or batched again, when that default reached them)."""
    x_in = keras.Input((5,), batch_size=4, name="x")
    model = keras.Model(x_in, keras.layers.Dense(3, activation="relu", name="dense", **models._init())(x_in))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(5).normal(size=(8, 5)).astype("float32")
    want = np.concatenate([model(x[:4]), model(x[4:])])
    for data in (tf.data.Dataset.from_tensor_slices(x).batch(4), [x[:4], x[4:]], (b for b in (x[:4], x[4:]))):
        assert_matches(scope.statistics("dense/Relu:0", data, quiet=True)["dense/Relu:0"], want)


def test_the_batching_does_not_change_the_figures(convnet, images):
    _, scope = convnet
    figures = [scope.statistics("conv/BiasAdd:0", images, batch_size=b, quiet=True)["conv/BiasAdd:0"]
               for b in (1, 7, 23)]
    for other in figures[1:]:
        np.testing.assert_array_equal(other.count, figures[0].count)
        np.testing.assert_array_equal(other.min, figures[0].min)
        np.testing.assert_allclose(other.mean, figures[0].mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(other.std, figures[0].std, rtol=1e-6)


def test_nonfinite_values_are_counted_and_left_out(convnet, images):
    """NaN and Inf put in by an edit (a masked float64 pass for those batches): counted per
    channel, every other figure over the finite values; numpy over the edited values."""
    _, scope = convnet

    def poison(v):  # NaN or Inf at every fifth position of channels 0 and 1
        channel = tf.range(tf.shape(v)[-1]) < 2
        position = tf.reshape(tf.range(tf.size(v[..., :1])), tf.shape(v[..., :1])) % 5 == 0
        return tf.where(channel & position, tf.where(v > 0.5, np.inf, np.nan), v)

    edits = {"conv/BiasAdd:0": poison}
    stats = scope.statistics(["conv/BiasAdd:0"], images, batch_size=5, edits=edits, quiet=True, bins=6)
    values = scope.run("conv/BiasAdd:0", images, edits=edits)["conv/BiasAdd:0"]
    assert np.isnan(values).any() and np.isinf(values).any()
    got = stats["conv/BiasAdd:0"]
    assert got.nonfinite[0] > 0 and got.nonfinite[1] > 0 and not got.nonfinite[2:].any()
    assert_matches(got, values, bins=6)
    whole = scope.statistics("conv/BiasAdd:0", images, axis=None, edits=edits, quiet=True)["conv/BiasAdd:0"]
    assert_matches(whole, values, axis=None)


def test_a_channel_with_no_finite_value():
    x_in = keras.Input((3,), name="x")
    out = keras.layers.Lambda(lambda v: v / tf.constant([0.0, 1.0, 1.0]) * 0.0, name="div")(x_in)
    model = keras.Model(x_in, out)
    x = np.abs(np.random.default_rng(2).normal(size=(6, 3))).astype("float32") + 1
    scope = gs.trace(model, quiet=True)
    name = scope.outputs[0].name
    s = scope.statistics(name, x, quiet=True)[name]
    assert s.count.tolist() == [0, 6, 6] and s.nonfinite.tolist() == [6, 0, 0]
    assert np.isnan(s.mean[0]) and np.isnan(s.std[0]) and np.isnan(s.min[0]) and np.isnan(s.max[0])
    assert s.zero_fraction[1:].tolist() == [1.0, 1.0]
    assert s.dead().tolist() == [1, 2]  # a channel with no finite value is not dead


def test_large_offsets_keep_their_variance():
    """Values far from 0 with a small spread (1e4 + N(0, 1e-2)): a sum of squares in float32
    would cancel to nothing; the shifted sums keep the spread."""
    x_in = keras.Input((4, 16), name="x")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: v + 1e4, name="shifted")(x_in))
    x = (np.random.default_rng(3).normal(size=(30, 4, 16)) * 1e-2).astype("float32")
    scope = gs.trace(model, quiet=True)
    stats = scope.statistics("shifted/add:0", x, batch_size=7, quiet=True)["shifted/add:0"]
    values = model(x).numpy()
    np.testing.assert_allclose(stats.std, values.astype(np.float64).reshape(-1, 16).std(0), rtol=1e-6)
    np.testing.assert_allclose(stats.mean, values.astype(np.float64).reshape(-1, 16).mean(0), rtol=1e-12)


def test_an_outlier_first_value_keeps_the_spread_exact():
    """Position 0 of every sequence far from the rest (a first token's massive activation, the
    outlier-feature hunt): the deviations are not taken from that outlier, whose squares summed
    in float32 lost the spread to 1e-5 (1000 times the rounding of a typical first value)."""
    x_in = keras.Input((512, 4), name="h")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: v * 1.0, name="same")(x_in))
    x = np.random.default_rng(8).normal(size=(32, 512, 4)).astype("float32")
    x[:, 0, :] = 1000.0
    scope = gs.trace(model, quiet=True)
    name = scope.outputs[0].name
    stats = scope.statistics(name, x, batch_size=8, quiet=True)[name]
    values = model(x).numpy().astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(stats.std, values.std(0), rtol=2e-7)
    np.testing.assert_allclose(stats.mean, values.mean(0), rtol=2e-7)


def test_values_inside_loops_are_reduced_over_iterations():
    model = models.control_flow()
    scope = gs.trace(model, quiet=True)
    inside = [t for t in scope.find(r"map_square/.*/(add|Square):0$") if t.context]
    assert inside, scope.find("map_square").names
    name = inside[0].name
    x = np.random.default_rng(4).normal(size=(11, 5)).astype("float32")
    stats = scope.statistics(name, x, batch_size=4, quiet=True)
    per_batch = [scope.run(name, x[k : k + 4])[name] for k in range(0, 11, 4)]
    values = np.concatenate([np.stack(list(v)) if isinstance(v, list) else v for v in per_batch], axis=0)
    assert_matches(stats[name], values, axis=-1)
    assert stats[name].count.sum() == 11 * 5  # one row of 5 per sample, each its own iteration


def test_recurrent_cell_inside_its_loop():
    model = models.recurrent("LSTM")
    scope = gs.trace(model, quiet=True)
    name = scope.find(r"lstm/while/.*Sigmoid:0$").names[0]
    x = np.random.default_rng(5).normal(size=(9, 4, 3)).astype("float32")
    stats = scope.statistics(name, x, batch_size=4, quiet=True)[name]
    values = [np.stack(list(scope.run(name, x[k : k + 4])[name])) for k in range(0, 9, 4)]
    assert_matches(stats, np.concatenate([v.reshape(-1, v.shape[-1]) for v in values]))
    assert stats.count.sum() == 9 * 4 * 5


def test_integer_and_boolean_tensors_are_reduced_as_float64():
    x_in = keras.Input((6,), name="x")
    ints = keras.layers.Lambda(lambda v: tf.cast(tf.round(v * 3), tf.int32), name="ints")(x_in)
    flags = keras.layers.Lambda(lambda v: v > 0, name="flags")(x_in)
    model = keras.Model(x_in, [ints, flags])
    x = np.random.default_rng(6).normal(size=(17, 6)).astype("float32")
    scope = gs.trace(model, quiet=True)
    names = [scope.outputs[0].name, scope.outputs[1].name]
    stats = scope.statistics(names, x, batch_size=5, bins=4, quiet=True)
    i, b = model(x)
    assert_matches(stats[names[0]], i.numpy(), bins=4, rtol=1e-12)
    assert_matches(stats[names[1]], b.numpy(), bins=4, rtol=1e-12)
    np.testing.assert_allclose(stats[names[1]].mean, b.numpy().mean(0))  # the fraction that is True


def test_feeds_and_edits(convnet, images):
    model, scope = convnet
    conv = keras_values(model, "conv", images)
    fed = scope.statistics("conv2/Relu:0", conv, feeds=["conv/Relu:0"], quiet=True)["conv2/Relu:0"]
    assert_matches(fed, keras_values(model, "conv2", images))
    doubled = scope.statistics("conv/Relu:0", images, edits={"conv/Relu:0": lambda v: v * 2}, quiet=True)["conv/Relu:0"]
    assert_matches(doubled, conv * 2)


def test_keys_follow_the_fetches_and_layers_resolve(convnet, images):
    _, scope = convnet
    stats = scope.statistics(["conv", scope.find("conv2/Relu:0")[0]], images, quiet=True)
    assert list(stats) == ["conv/Relu:0", "conv2/Relu:0"]  # a layer by its output
    assert stats["conv/Relu"] is stats["conv/Relu:0"]  # ":0" may be left out
    with pytest.raises(gs.TensorNotFoundError, match="Did you mean 'conv2/Relu:0'"):
        stats["conv2/Reluu"]
    with pytest.raises(gs.TensorNotFoundError, match="a layer's by its outputs'.*'conv/Relu:0'"):
        stats["conv"]
    plain = stats.to_dict()
    assert plain["samples"] == 23 and plain["tensors"]["conv/Relu:0"]["count"] == stats["conv/Relu:0"].count.tolist()


def test_fused_and_plain_ops_agree(convnet, images, monkeypatch):
    model, scope = convnet
    name = "conv2/BiasAdd:0"
    fused = scope.statistics(name, images, batch_size=6, quiet=True)[name]
    monkeypatch.setattr(runtime_statistics, "FUSE", False)
    plain_scope = gs.trace(model, quiet=True)  # a new runtime: its reductions are built without XLA
    plain = plain_scope.statistics(name, images, batch_size=6, quiet=True)[name]
    for f in ("count", "min", "max", "zero_fraction", "nonfinite"):
        np.testing.assert_array_equal(getattr(plain, f), getattr(fused, f))
    np.testing.assert_allclose(plain.mean, fused.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(plain.std, fused.std, rtol=1e-6)


def test_mixed_precision_values_are_summed_in_float32():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = conv_model()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    x = np.random.default_rng(7).normal(size=(10, 8, 8, 3)).astype("float32")
    stats = gs.trace(model, quiet=True).statistics("conv/Relu:0", x, quiet=True)["conv/Relu:0"]
    assert stats.dtype == "float16"
    assert_matches(stats, keras_values(model, "conv", x), rtol=1e-5)


def test_the_model_is_left_as_it_was(convnet, images):
    model, scope = convnet
    before, predicted = weights_snapshot(model), model(images).numpy()
    scope.statistics(["conv/Relu:0", "logits/BiasAdd:0"], images, bins=3, quiet=True)
    scope.statistics("conv/Relu:0", images, edits={"conv/Relu:0": lambda v: v * 0}, quiet=True)
    assert_weights_unchanged(model, before)
    np.testing.assert_array_equal(model(images).numpy(), predicted)


# --------------------------------------------------------------------------- refusals


def test_refusals(convnet, images):
    _, scope = convnet
    with pytest.raises(gs.OptionError, match="bins must be a whole number >= 1"):
        scope.statistics("conv/Relu:0", images, bins=0, quiet=True)
    with pytest.raises(gs.OptionError, match="has no axis 4.*axis=None"):
        scope.statistics("conv/Relu:0", images, axis=4, quiet=True)
    with pytest.raises(gs.OptionError, match="batch axis"):
        scope.statistics("conv/Relu:0", images, axis=0, quiet=True)
    with pytest.raises(gs.ArgumentError, match="axis must be a whole number"):
        scope.statistics("conv/Relu:0", images, axis="channels", quiet=True)
    with pytest.raises(gs.TensorNotFoundError):
        scope.statistics("conv/Reluu:0", images, quiet=True)


def test_branch_values_are_refused():
    scope = gs.trace(models.loops_and_branches(), quiet=True)
    inside = [t for t in scope.find("branchy") if t.context and not t.context.endswith(":body")]
    assert inside
    with pytest.raises(gs.UnsupportedFetchError, match="branch that may not run"):
        scope.statistics(inside[0], np.ones((2, 5), "float32"), quiet=True)


class LoopInBranch(keras.layers.Layer):
    """A tf.map_fn inside one branch of a tf.cond on the batch's sum."""

    def call(self, x):
        return tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.map_fn(lambda r: tf.tanh(r) * 2.0, x), lambda: x - 1.0)


def test_values_of_a_loop_inside_a_branch_are_refused():
    """The loop runs only in the batches whose sum is positive: its values' figures covered only
    those (here the first batch of two: 16 values) without a word; refused as branch values are,
    though the loop's body is the innermost context."""
    x_in = keras.Input((4,), name="x")
    scope = gs.trace(keras.Model(x_in, LoopInBranch(name="lib")(x_in)), quiet=True)
    (tanh,) = [t for t in scope.find("lib") if t.op_type == "Tanh"]
    assert tanh.context.endswith(":body")  # the innermost context is the loop's body
    x = np.abs(np.random.default_rng(13).normal(size=(8, 4))).astype("float32")
    x[4:] *= -1  # the second batch of 4 takes the other branch
    with pytest.raises(gs.UnsupportedFetchError, match=r"inside lib/cond/map/while:body, inside lib/cond:then, a branch"):
        scope.statistics(tanh, x, batch_size=4, quiet=True)


def test_scalars_need_axis_none():
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: tf.reduce_sum(v), name="total")(x_in))
    scope = gs.trace(model, quiet=True)
    name = scope.outputs[0].name
    x = np.arange(12, dtype="float32").reshape(4, 3)
    with pytest.raises(gs.OptionError, match="is a scalar; pass axis=None"):
        scope.statistics(name, x, quiet=True)
    s = scope.statistics(name, x, axis=None, batch_size=2, quiet=True)[name]
    np.testing.assert_allclose([s.mean, s.min, s.max], [np.mean([15, 51]), 15, 51])


def test_one_figure_per_sample_needs_axis_none():
    """A `[batch]` tensor (a predicted class, a score per sample): the default axis -1 is its
    batch axis, and the refusal says so rather than advising the axis that was given."""
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: tf.argmax(v, -1), name="predicted")(x_in))
    scope = gs.trace(model, quiet=True)
    name = scope.outputs[0].name
    x = np.random.default_rng(0).normal(size=(9, 3)).astype("float32")
    with pytest.raises(gs.OptionError, match=r"has one axis \(\[None\]\), its batch axis: axis -1 is that axis.*"
                                               r"pass axis=None"):
        scope.statistics(name, x, quiet=True)
    assert_matches(scope.statistics(name, x, axis=None, batch_size=4, quiet=True)[name], model(x).numpy(), axis=None)


# --------------------------------------------------------------------------- memory


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_memory_stays_flat_from_50_to_500_batches(convnet):
    """Resident memory after 500 batches within a few MB of that after 50 (a generator of
    batches: nothing is held but the figures)."""
    _, scope = convnet
    names = ["conv/Relu:0", "conv2/BiasAdd:0", "logits/BiasAdd:0"]
    rng = np.random.default_rng(8)
    batch = rng.normal(size=(16, 8, 8, 3)).astype("float32")

    def run(n):
        stats = scope.statistics(names, (batch + k for k in range(n)), quiet=True)
        gc.collect()
        return stats

    run(50)  # compiled, warmed up
    run(50)
    before = _rss_mb()
    stats = run(500)
    grown = _rss_mb() - before
    assert stats.batches == 500
    assert grown < 8, f"resident memory grew {grown:.1f} MB from 50 to 500 batches"


def test_batches_with_and_without_nonfinite_values_mix():
    """log(x): NaN only in the batches holding a negative input (those are run again, masked);
    the others take the fast path. And squares past float32's range (1e20 ** 2) are summed in
    float64 by the masked pass."""
    x_in = keras.Input((3,), name="x")
    model = keras.Model(x_in, [keras.layers.Lambda(lambda v: tf.math.log(v), name="log")(x_in),
                               keras.layers.Lambda(lambda v: v * 1e20, name="huge")(x_in)])
    x = np.abs(np.random.default_rng(9).normal(size=(20, 3))).astype("float32") + 0.1
    x[13, 1] = -1.0  # in the fourth batch of 4
    scope = gs.trace(model, quiet=True)
    log, huge = (t.name for t in scope.outputs)
    stats = scope.statistics([log, huge], x, batch_size=4, quiet=True)
    values = model(x)
    assert_matches(stats[log], values[0].numpy())
    assert stats[log].nonfinite.tolist() == [0, 1, 0]
    assert_matches(stats[huge], values[1].numpy())
    assert np.isfinite(stats[huge].std).all()


def test_an_outlier_first_value_does_not_cost_precision():
    """The fast path's sums are of differences from a shift near each channel's values: a first
    value far out (1e3 among N(0, 1) values, float32) must not cancel the spread away."""
    x_in = keras.Input((6, 8), name="x")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: v * 1.0, name="same")(x_in))
    x = np.random.default_rng(10).normal(size=(64, 6, 8)).astype("float32")
    x[0, 0, :] = 1e3
    scope = gs.trace(model, quiet=True)
    name = scope.outputs[0].name
    for b in (64, 5):
        stats = scope.statistics(name, x, batch_size=b, quiet=True)[name]
        assert_matches(stats, x)


@pytest.mark.parametrize("fuse", [True, False])
def test_an_outlier_first_value_over_a_long_axis(monkeypatch, fuse):
    """A tight cluster (1 - |N(0, 1e-4)|) whose first value is 0, summed over a long axis (2048
    positions a row, as a transformer's tokens): shifted by the first value, the float32 sums of
    squares cancelled to 37% off numpy's std without XLA, 0.4% with it."""
    monkeypatch.setattr(runtime_statistics, "FUSE", fuse)
    x_in = keras.Input((2048, 2), name="x")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: v * 1.0, name="same")(x_in))
    x = (1.0 - np.abs(np.random.default_rng(11).normal(size=(32, 2048, 2))) * 1e-4).astype("float32")
    x[0, 0, :] = 0.0
    scope = gs.trace(model, quiet=True)  # a new runtime: its reductions built with FUSE as set
    name = scope.outputs[0].name
    values = model(x).numpy()
    for axis in (-1, None):
        assert_matches(scope.statistics(name, x, batch_size=32, axis=axis, quiet=True)[name], values, axis=axis)


@pytest.mark.parametrize("fuse", [True, False])
def test_tiny_values_keep_their_spread(monkeypatch, fuse):
    """Values of 1e-30 (a softmax's far tail): their float32 squares fall under float32's range
    and were flushed to 0 (std a quarter of numpy's); such batches are taken again in float64."""
    monkeypatch.setattr(runtime_statistics, "FUSE", fuse)
    x_in = keras.Input((4, 3), name="x")
    model = keras.Model(x_in, keras.layers.Lambda(lambda v: v * 1e-30, name="tiny")(x_in))
    x = np.random.default_rng(12).normal(size=(11, 4, 3)).astype("float32")
    x[:, :, 2] = 0.0  # a constant channel: its spread (0) is not tiny
    scope = gs.trace(model, quiet=True)
    name = scope.outputs[0].name
    values = model(x).numpy()
    for axis in (-1, None):
        assert_matches(scope.statistics(name, x, batch_size=4, axis=axis, bins=5, quiet=True)[name], values, axis=axis,
                       bins=5)


def test_a_histogram_of_values_that_change_between_passes_warns(convnet, images):
    """Data drawn anew on each pass (random augmentations here; a model drawing random numbers,
    as dropout traced with training=True, does the same): the histogram's pass sees other values
    than the pass that found the range, and those outside it are not counted; a warning says so.
    The same data read twice: none."""

    class Augmented:
        """Re-iterable batches, drawn anew on each pass."""

        def __init__(self):
            self.rng = np.random.default_rng(11)

        def __iter__(self):
            return iter([self.rng.uniform(size=(8, 16)).astype("float32") for _ in range(5)])

    x_in = keras.Input((16,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(4, name="dense", **models._init())(x_in))
    scope = gs.trace(model, quiet=True)
    with pytest.warns(UserWarning, match="finite values are not in its histogram.*trace in inference mode"):
        got = scope.statistics("dense/BiasAdd:0", Augmented(), bins=3, quiet=True)["dense/BiasAdd:0"]
    assert got.count.tolist() == [40] * 4
    assert (got.histogram[0].sum(1) <= 40).all() and (got.histogram[0].sum(1) < 40).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, det = convnet
        counts = det.statistics("conv/Relu:0", images, bins=3, quiet=True)["conv/Relu:0"].histogram[0]
    assert counts.sum(1).tolist() == [len(images) * 8 * 8] * 6


def test_fused_reductions_wait_for_each_other(convnet):
    """XLA launches side by side segfaulted TensorFlow 2.21 now and then: each fused reduction
    but the first takes its input through an Identity that waits for another one, so that they
    form one chain."""
    from graphscope.data.statistics import summary

    _, scope = convnet
    names = ["logits/BiasAdd:0", "conv/Relu:0", "conv2/Relu:0"]
    _, run = summary(scope._runtime, names)
    if not run._fused:
        pytest.skip("this TensorFlow has no XLA: nothing is fused")
    nodes = {n.name: n for n in run._function.definition.node_def}
    calls = [n for n in nodes.values() if "PartitionedCall" in n.op and "_XlaMustCompile" in n.attr]
    assert len(calls) == 3
    waits = {}
    for call in calls:
        source = nodes[call.input[0].split(":")[0]]
        waits[call.name] = [i[1:] for i in source.input if i.startswith("^")] if source.op == "Identity" else []
    first = [c for c, w in waits.items() if not w]
    assert len(first) == 1  # one starts; each other waits for exactly one, none for itself: a chain
    chain = first
    while len(chain) < 3:
        (following,) = [c for c, w in waits.items() if w == [chain[-1]]]
        chain.append(following)
    assert len(set(chain)) == 3
