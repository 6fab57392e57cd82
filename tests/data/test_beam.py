"""Beam: RunInference with graphscope's ModelHandler writes the store one process writes;
ComputeStatistics gives the statistics one process gives."""

from __future__ import annotations

import functools
import pathlib
import pickle

import keras
import numpy as np
import pytest

import graphscope as gs
from tests import models

beam = pytest.importorskip("apache_beam", reason="the beam extra is not installed")

from apache_beam.ml.inference.base import RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from graphscope.beam import ComputeStatistics, ExtractToZarr, GraphscopeModelHandler, ReadNpy  # noqa: E402

ROOT = pathlib.Path(__file__).parents[1]


def _data(n: int = 23):
    rng = np.random.default_rng(3)
    boxes = np.sort(rng.uniform(size=(n, 12, 4)), axis=-1).astype("float32")
    scores = rng.uniform(size=(n, 12)).astype("float32")
    return boxes, scores


@pytest.mark.slow
def test_two_worker_processes_write_the_single_process_store(tmp_path, monkeypatch):
    """DirectRunner, multi-processing, 2 workers reading the samples from .npy files: per-sample
    ragged NMS indices (counts differ per sample), per-sample dense values and a per-batch value
    (the map_fn's loop count), from a two-input model; the store equals `Scope.extract`'s,
    attributes included."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import tests.models
    boxes, scores = _data()
    scope = gs.trace(models.threshold_nms(), quiet=True)
    nms = scope.find(op_type="NonMaxSuppressionV\\d")[0].name
    fetches = [nms, scope.layer("nms_layer").output.name, "nms_layer/map/strided_slice:0"]
    single = scope.extract(fetches, {"boxes": boxes, "scores": scores}, out=tmp_path / "one.zarr", batch_size=5)
    assert [single[f].layout for f in fetches] == ["sample", "sample", "batch"]
    assert len({len(single[nms][i]) for i in range(23)}) > 1

    np.save(tmp_path / "boxes.npy", boxes)
    np.save(tmp_path / "scores.npy", scores)
    options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")
    with beam.Pipeline(options=options) as p:
        done = (
            p
            | ReadNpy(tmp_path / "boxes.npy", tmp_path / "scores.npy")
            | ExtractToZarr(models.threshold_nms, fetches, out=str(tmp_path / "beam.zarr"), batch_size=5)
        )
        assert_that(done, lambda got: _check_one_complete(got, 23))
    spread = gs.open(tmp_path / "beam.zarr")
    assert spread.attrs == single.attrs
    for name in fetches:
        assert len(spread[name]) == len(single[name])
        for i in range(len(single[name])):
            np.testing.assert_array_equal(spread[name][i], single[name][i])


def _check_one_complete(got, samples):
    assert len(got) == 1 and got[0]["complete"] and got[0]["samples"] == samples


def test_the_model_handler_in_run_inference():
    """Each example is one batch (a list of arrays per input); its inference, the fetched values."""
    boxes, scores = _data(6)
    scope = gs.trace(models.threshold_nms(), quiet=True)
    name = scope.layer("nms_layer").output.name
    expected = scope.run(name, [boxes[:3], scores[:3]])[name]
    handler = GraphscopeModelHandler(functools.partial(models.threshold_nms), [name])
    with beam.Pipeline() as p:
        got = (
            p
            | beam.Create([[boxes[:3], scores[:3]]])
            | RunInference(handler)
            | beam.Map(lambda result: result.inference[name].tolist())
        )
        assert_that(got, equal_to([expected.tolist()]))


def test_read_npy_gives_index_sample_pairs(tmp_path):
    """One file: (i, sample i); several: (i, (sample i of each file)); copies, not memory maps."""
    boxes, scores = _data(7)
    np.save(tmp_path / "boxes.npy", boxes)
    np.save(tmp_path / "scores.npy", scores)
    with beam.Pipeline() as p:
        one = p | "One" >> ReadNpy(tmp_path / "scores.npy") | "Plain" >> beam.Map(lambda kv: (kv[0], kv[1].tolist()))
        assert_that(one, equal_to([(i, scores[i].tolist()) for i in range(7)]), label="one file")
        two = p | "Two" >> ReadNpy(tmp_path / "boxes.npy", tmp_path / "scores.npy") | "Check" >> beam.Map(
            lambda kv: (kv[0], type(kv[1][0]) is np.ndarray, kv[1][0].tolist(), kv[1][1].tolist())
        )
        expected = [(i, True, boxes[i].tolist(), scores[i].tolist()) for i in range(7)]
        assert_that(two, equal_to(expected), label="two files")


@pytest.mark.parametrize(
    "files, error, match",
    [
        ((), gs.ArgumentError, r"at least one \.npy file: one per model input"),
        (("a.npy", "short.npy"), gs.InputError, r"different numbers of samples \(4, 3\).*one entry per sample"),
        (("missing.npy",), gs.InputError, r"missing\.npy' does not exist; give the path of a \.npy"),
        (("pair.npz",), gs.InputError, r"pair\.npz' is an \.npz archive; give one \.npy file per model input"),
        (("scalar.npy",), gs.InputError, r"holds a scalar; .*samples on its first axis"),
    ],
)
def test_read_npy_refuses_bad_files(tmp_path, files, error, match):
    np.save(tmp_path / "a.npy", np.zeros((4, 2)))
    np.save(tmp_path / "short.npy", np.zeros((3, 2)))
    np.save(tmp_path / "scalar.npy", np.float32(1))
    np.savez(tmp_path / "pair.npz", a=np.zeros(2), b=np.ones(2))
    with pytest.raises(error, match=match):
        ReadNpy(*(tmp_path / f for f in files))


def _fixed_dense():
    """The same weights at every call (a builder Beam's workers call)."""
    x_in = keras.Input((4,), name="x")
    out = keras.layers.Dense(3, activation="tanh", name="dense",
                             kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                             bias_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=2))(x_in)
    return keras.Model(x_in, out, name="fixed_dense")


def test_extract_to_zarr_leaves_a_directory_of_other_files_and_another_calls_store(tmp_path):
    """Before, `out` was opened with zarr's mode "w", which empties the directory: a user's
    files there were deleted, and another call's store replaced. Now both are refused, as
    `Scope.extract` refuses them; the same call's store is written again."""
    x = np.random.default_rng(5).normal(size=(6, 4)).astype("float32")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    with pytest.raises(Exception, match="not a graphscope store"):
        with beam.Pipeline() as p:
            _ = p | beam.Create(list(enumerate(x))) | ExtractToZarr(_fixed_dense, ["dense/Tanh:0"], out=str(notes),
                                                                    batch_size=3)
    assert [f.name for f in notes.iterdir()] == ["mine.txt"] and (notes / "mine.txt").read_text() == "keep me"

    model = _fixed_dense()
    expected = model.predict(x, verbose=0)
    run = tmp_path / "run.zarr"
    gs.trace(model, quiet=True).extract("dense/Tanh:0", x[3:], out=run, batch_size=3)
    with pytest.raises(Exception, match=r"different call \(the data \(its first batch\) differ"):
        with beam.Pipeline() as p:
            _ = p | beam.Create(list(enumerate(x))) | ExtractToZarr(_fixed_dense, ["dense/Tanh:0"], out=str(run),
                                                                    batch_size=3)
    np.testing.assert_allclose(np.asarray(gs.open(run)["dense/Tanh:0"]), expected[3:], rtol=1e-5, atol=1e-6)


def test_a_tf_keras_model_on_beam_writes_what_extract_writes(tmp_path):
    pytest.importorskip("tf_keras")
    from tests import models_keras2

    x = np.random.default_rng(4).normal(size=(10, 8, 8, 3)).astype("float32")
    fetches = ["dense/Tanh:0", "conv/BiasAdd:0"]
    single = gs.trace(models_keras2.fixed_functional(), quiet=True).extract(fetches, x, out=tmp_path / "one.zarr",
                                                                              batch_size=5, quiet=True)
    with beam.Pipeline() as p:
        done = (
            p
            | beam.Create(list(enumerate(x)))
            | ExtractToZarr(models_keras2.fixed_functional, fetches, out=str(tmp_path / "beam.zarr"), batch_size=5)
        )
        assert_that(done, lambda got: _check_one_complete(got, 10))
    spread = gs.open(tmp_path / "beam.zarr")
    assert spread.attrs == single.attrs  # the same model (weights fingerprint), call and layout
    for name in fetches:
        np.testing.assert_array_equal(np.asarray(spread[name]), np.asarray(single[name]))


# --------------------------------------------------------------------------- ComputeStatistics

LOOP_FETCHES = ["nms_layer/map/while/Pad:0", "nms_layer/map/while/GatherV2:0", "nms_layer"]


def _saved_cnn(tmp_path):
    """The functional CNN saved where the workers read it, and its scope."""
    path = tmp_path / "cnn.keras"
    models.functional().save(path)
    return str(path), gs.trace(path, quiet=True)


def _images(n: int = 23):
    return np.random.default_rng(5).normal(size=(n, 8, 8, 3)).astype("float32")


def _kept(got, path):
    """The pipeline's one element, pickled to `path` (what comes out of a pipeline is a copy)."""
    assert len(got) == 1
    pathlib.Path(path).write_bytes(pickle.dumps(got[0]))


def _load(path):
    return pickle.loads(pathlib.Path(path).read_bytes())


def _assert_same(beam_stats, one):
    """Beam's figures equal one process's: counts, ranges, zero fractions and histograms
    exactly, means and deviations to float64 rounding (only the order of the merges differs)."""
    assert list(beam_stats) == list(one)
    assert (beam_stats.samples, beam_stats.batches) == (one.samples, one.batches)
    for key in one:
        a, b = beam_stats[key], one[key]
        assert (a.name, a.axis, a.dtype) == (b.name, b.axis, b.dtype)
        for field in ("count", "min", "max", "zero_fraction", "nonfinite"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{key} {field}")
        for field in ("mean", "std"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-9, err_msg=f"{key} {field}")
        assert (a.histogram is None) == (b.histogram is None)
        if a.histogram is not None:
            np.testing.assert_array_equal(a.histogram[0], b.histogram[0])
            np.testing.assert_array_equal(a.histogram[1], b.histogram[1])


def _concatenated(scope, name, inputs, batch_size, axis, fetched):
    """Every value of `name` over the data in float64, fetched batch by batch with `scope.run`
    together with `fetched` (every iteration's, inside a loop), as `[values, entries]` (`[values,
    1]` for axis None). (With a NaN among the inputs, what TensorFlow computes can depend on what
    else is fetched: a max pool's NaN reached the dense layer after it only when the ReLU
    before it was fetched too.)"""
    n = len(inputs[0])
    rows = []
    for start in range(0, n, batch_size):
        value = scope.run(fetched, [x[start:start + batch_size] for x in inputs])[name]
        for v in value if isinstance(value, list) else [value]:
            v = np.asarray(v, np.float64)
            rows.append(v.reshape(-1, 1) if axis is None else np.moveaxis(v, axis, -1).reshape(-1, v.shape[axis]))
    return np.concatenate(rows) if axis is None else np.concatenate(rows)


def _assert_numpy(stats, key, values, bins):
    """The figures numpy gives in float64 over the concatenated values (`[values, entries]`),
    entry by entry, over its finite values (the others counted in `nonfinite`)."""
    s = stats[key]
    per = (lambda field: [getattr(s, field)]) if s.axis is None else (lambda field: getattr(s, field))
    for c in range(values.shape[1]):
        column = values[:, c]
        v = column[np.isfinite(column)]
        close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6 * np.abs(v).max())
        assert (per("count")[c], per("nonfinite")[c]) == (len(v), len(column) - len(v))
        close(per("mean")[c], v.mean())
        close(per("std")[c], v.std())
        assert (per("min")[c], per("max")[c]) == (v.min(), v.max())
        close(per("zero_fraction")[c], (v == 0).mean())
        if bins is not None:
            counts, edges = np.histogram(v, bins)
            got = s.histogram if s.axis is None else (s.histogram[0][c], s.histogram[1][c])
            np.testing.assert_array_equal(got[0], counts)
            close(got[1], edges)


@pytest.mark.parametrize(
    "axis, bins, broken",
    [(-1, 7, False), (None, None, False), (-1, 5, True)],
    ids=["channels-bins", "whole-tensors", "nan-inf"],
)
def test_statistics_on_beam_equal_one_process_and_numpy(tmp_path, axis, bins, broken):
    """In-process DirectRunner, 23 samples in batches of 5 (a short last one): a tensor, a layer
    (keyed by its output's canonical name) and a found Tensor; equal to `Scope.statistics` on the
    same data and to numpy in float64 over the values `scope.run` fetches. `broken`: a NaN and
    an Inf in two samples (their batches take the masked path), figures over the finite values."""
    path, scope = _saved_cnn(tmp_path)
    x = _images()
    if broken:
        x[3, 2, 2, 0], x[17, 5, 1, 2] = np.nan, np.inf
    fetches = ["conv/BiasAdd:0", "dense", *scope.find(op_type="Relu")]
    one = scope.statistics(fetches, x, batch_size=5, axis=axis, bins=bins, quiet=True)
    assert list(one) == ["conv/BiasAdd:0", "dense/Tanh:0", "relu/Relu:0"]
    with beam.Pipeline() as p:
        stats = p | beam.Create(list(enumerate(x))) | ComputeStatistics(path, fetches, batch_size=5, axis=axis,
                                                                       bins=bins)
        assert_that(stats, functools.partial(_kept, path=tmp_path / "stats.pickle"))
    spread = _load(tmp_path / "stats.pickle")
    assert isinstance(spread, gs.Statistics) and (spread.samples, spread.batches) == (23, 5)
    _assert_same(spread, one)
    assert all((np.sum(spread[key].nonfinite) > 0) == broken for key in one)
    names = [s.name for s in one.values()]
    for key in one:
        _assert_numpy(spread, key, _concatenated(scope, one[key].name, [x], 5, axis, names), bins)


@pytest.mark.slow
def test_statistics_with_two_worker_processes(tmp_path, monkeypatch):
    """DirectRunner, multi-processing, 2 workers reading the samples from .npy files: the CNN per
    channel with histograms, and values inside a tf.map_fn loop (every iteration's, one of them
    of a different length per image) per tensor with histograms, in one pipeline; each equal
    to `Scope.statistics` and to numpy."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import tests.models
    path, cnn = _saved_cnn(tmp_path)
    x = _images()
    boxes, scores = _data()
    nms = gs.trace(models.threshold_nms(), quiet=True)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "boxes.npy", boxes)
    np.save(tmp_path / "scores.npy", scores)
    cnn_fetches = ["conv/BiasAdd:0", "relu/Relu:0", "dense"]
    options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")
    with beam.Pipeline(options=options) as p:
        a = p | "ReadX" >> ReadNpy(tmp_path / "x.npy") | "CNN" >> ComputeStatistics(path, cnn_fetches, batch_size=4,
                                                                                    bins=7)
        b = (p | "ReadBoxes" >> ReadNpy(tmp_path / "boxes.npy", tmp_path / "scores.npy")
             | "NMS" >> ComputeStatistics(models.threshold_nms, LOOP_FETCHES, batch_size=5, axis=None, bins=5))
        assert_that(a, functools.partial(_kept, path=tmp_path / "cnn.pickle"), label="cnn")
        assert_that(b, functools.partial(_kept, path=tmp_path / "nms.pickle"), label="nms")
    got_cnn, got_nms = _load(tmp_path / "cnn.pickle"), _load(tmp_path / "nms.pickle")
    one = cnn.statistics(cnn_fetches, x, batch_size=4, bins=7, quiet=True)
    _assert_same(got_cnn, one)
    for key in one:
        _assert_numpy(got_cnn, key, _concatenated(cnn, one[key].name, [x], 4, -1, [s.name for s in one.values()]), 7)
    one = nms.statistics(LOOP_FETCHES, [boxes, scores], batch_size=5, axis=None, bins=5, quiet=True)
    _assert_same(got_nms, one)
    names = [s.name for s in one.values()]
    for key in one:
        _assert_numpy(got_nms, key, _concatenated(nms, one[key].name, [boxes, scores], 5, None, names), 5)


@pytest.mark.parametrize(
    "fetches, options, error, match",
    [
        (["sum"], {"bins": 0}, gs.OptionError, r"bins must be a whole number >= 1 \(or None for no histogram\)"),
        (["sum"], {"batch_size": 0}, gs.ArgumentError, r"batch_size must be a whole number >= 1, got 0"),
        (["sum"], {"axis": 2}, gs.OptionError, r"has no axis 2: it is rank 2.*axis=None.*from -2 to 1"),
        ([], {}, gs.ArgumentError, r"nothing to take statistics of: give at least one tensor name"),
        (["sum/ad:0"], {}, gs.TensorNotFoundError, r"sum/ad:0"),
    ],
)
def test_compute_statistics_refuses_bad_input_where_the_pipeline_is_built(fetches, options, error, match):
    """Checked once, before anything runs: the same refusals as `Scope.statistics`."""
    with pytest.raises(error, match=match):
        ComputeStatistics(models.loops_and_branches, fetches, **options)


def test_compute_statistics_refuses_a_tensor_inside_a_branch():
    scope = gs.trace(models.loops_and_branches(), quiet=True)
    branch = next(t for t in scope.find("branchy/.*") if t.context and not t.context.endswith(":body")
                  and t.dtype == "float32")
    with pytest.raises(gs.UnsupportedFetchError, match=r"inside .*a branch that may not run.*fetch the branch op"):
        ComputeStatistics(models.loops_and_branches, [branch.name])


def _two_inputs():
    """A Keras model of two named inputs, `tokens` then `scale` (keras-hub style)."""
    tokens = keras.Input((4,), name="tokens")
    scale = keras.Input((1,), name="scale")
    h = keras.layers.Dense(3, activation="tanh", name="mix")(tokens)
    out = keras.layers.Multiply(name="scaled")([h, scale])
    model = keras.Model({"tokens": tokens, "scale": scale}, out, name="two")
    for k, w in enumerate(model.weights):
        w.assign(np.random.default_rng(k).normal(size=w.shape).astype("float32"))
    return model


def test_samples_as_dicts_by_input_name_on_beam_equal_keras(tmp_path):
    """Samples that are dicts (keys in another order than the model's inputs) are stacked by
    key and fed by name: the store holds what a Keras sub-model computes on the same samples,
    sample by sample, and the statistics are one process's over the same data."""
    rng = np.random.default_rng(9)
    n = 11
    tokens = rng.normal(size=(n, 4)).astype("float32")
    scale = rng.uniform(1, 2, size=(n, 1)).astype("float32")
    path = tmp_path / "two.keras"
    model = _two_inputs()
    model.save(path)
    mix = keras.Model(model.inputs, model.get_layer("mix").output)
    want = mix({"tokens": tokens, "scale": scale}).numpy()
    scope = gs.trace(str(path), quiet=True)
    fetches = [scope.layer("mix").output.name, scope.layer("scaled").output.name]
    samples = [(i, {"scale": scale[i], "tokens": tokens[i]}) for i in range(n)]
    with beam.Pipeline() as p:
        done = p | beam.Create(samples) | ExtractToZarr(str(path), fetches, out=str(tmp_path / "beam.zarr"), batch_size=4)
        assert_that(done, lambda got: _check_one_complete(got, n))
    store = gs.open(tmp_path / "beam.zarr")
    np.testing.assert_allclose(np.stack([store[fetches[0]][i] for i in range(n)]), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.stack([store[fetches[1]][i] for i in range(n)]), want * scale, rtol=1e-6, atol=1e-6)

    with beam.Pipeline() as p:
        stats = p | beam.Create(samples) | ComputeStatistics(str(path), fetches, batch_size=4, bins=3)
        assert_that(stats, lambda got: _kept(got, tmp_path / "stats.pkl"))
    one = scope.statistics(fetches, {"tokens": tokens, "scale": scale}, batch_size=4, bins=3, quiet=True)
    _assert_same(_load(tmp_path / "stats.pkl"), one)


def test_samples_of_mixed_forms_are_refused_saying_what_would_be_right(tmp_path):
    path = tmp_path / "two.keras"
    _two_inputs().save(path)
    rng = np.random.default_rng(1)
    samples = [(0, {"tokens": rng.normal(size=4).astype("float32"), "scale": np.ones(1, "float32")}),
               (1, (rng.normal(size=4).astype("float32"), np.ones(1, "float32")))]
    with pytest.raises(Exception, match="sample 1 is not a dict of the keys of sample 0 .*same input names"):
        with beam.Pipeline() as p:
            _ = p | beam.Create(samples) | ComputeStatistics(str(path), ["mix/Tanh:0"], batch_size=4)
