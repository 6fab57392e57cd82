"""Extraction to zarr: layouts, values against executors and Keras, resuming, errors, memory."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import zarr

import graphscope as gs
from graphscope import demo
from graphscope.runtime.executor import Executor
from graphscope.data.store import store_key
from tests import models

NMS = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"


@pytest.fixture(scope="module")
def map_fn_demo():
    return gs.trace(demo.proposal_model(variant="map_fn", batch_size=None), quiet=True)


@pytest.fixture(scope="module")
def images():
    return demo.synthetic_images(37, seed=5)


def _reference(scope, names, x, batch_size):
    """Each batch run by an executor, values concatenated by sample."""
    ex = scope.executor(names)
    out = {n: [] for n in names}
    for start in range(0, len(x), batch_size):
        r = ex(x[start : start + batch_size])
        for n in names:
            out[n].extend(list(r[n]))
    return out


def test_values_layouts_and_attributes(map_fn_demo, images, tmp_path):
    """Per-sample arrays chunked by batch, map_fn values one per sample (ragged NMS indices),
    attributes naming the tensor, model, weights and signature."""
    scope = map_fn_demo
    roi = scope.layer("ROI").output.name
    names = ["conv1/BiasAdd:0", NMS, roi]
    bundle = scope.extract(names, images, out=tmp_path / "run.zarr", batch_size=8)
    assert bundle.complete and bundle.samples == 37 and bundle.batches == 5
    ref = _reference(scope, names, images, 8)
    for n in names:
        stored = bundle[n]
        assert len(stored) == 37 and stored.layout == "sample"
        for i in (0, 7, 8, 36, -1):
            np.testing.assert_array_equal(stored[i], ref[n][i])
    np.testing.assert_array_equal(np.asarray(bundle["conv1/BiasAdd:0"]), np.stack(ref["conv1/BiasAdd:0"]))
    nms = bundle[NMS]
    assert nms.ragged and nms.values.dtype == np.int32
    np.testing.assert_array_equal(nms.values, np.concatenate(ref[NMS]))
    assert nms.offsets[0] == 0 and nms.offsets[-1] == len(nms.values) and len(nms.offsets) == 38

    group = zarr.open_group(tmp_path / "run.zarr", mode="r")
    conv = group[store_key("conv1/BiasAdd:0")]
    assert conv.shape == (37, 32, 32, 16) and conv.chunks == (8, 32, 32, 16)
    assert conv.metadata.dimension_names[0] == "sample"
    # Blosc LZ4 over bit-shuffled values, a codec every zarr v3 reader has
    (codec,) = conv.compressors
    assert (codec.cname.value, codec.shuffle.value) == ("lz4", "bitshuffle")
    attrs = dict(conv.attrs)
    assert attrs["name"] == "conv1/BiasAdd:0" and attrs["raw_name"].endswith("BiasAdd:0")
    assert attrs["layer"] == "conv1" and attrs["op_type"] == "BiasAdd" and attrs["dtype"] == "float32"
    assert attrs["model"] == "mask_rcnn_demo_map_fn" and len(attrs["fingerprint"]) == 64
    assert attrs["input_signature"] == [{"name": "input_image", "dtype": "float32", "shape": [None, 64, 64, 3]}]
    assert attrs["graphscope_version"] == gs.__version__


def test_layer_outputs_equal_keras(tmp_path):
    """Differential: stored layer outputs equal a Keras sub-model's predictions."""
    model = models.functional()
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(50, *model.input.shape[1:])).astype("float32")
    layers = [lay for lay in scope.layers if lay.keras_layer is not None and "/" not in lay.name and lay.index]
    bundle = scope.extract([lay.output for lay in layers][:3], x, out=tmp_path / "k.zarr", batch_size=16)
    for lay in layers[:3]:
        expected = keras.Model(model.input, lay.keras_layer.output).predict(x, verbose=0)
        np.testing.assert_allclose(np.asarray(bundle[lay.output.name]), expected, rtol=1e-5, atol=1e-6)


def test_ragged_per_sample_counts_differ(tmp_path):
    """NMS with a score threshold keeps a different number of boxes per image: stored as values
    + offsets, each sample's own array back from bundle[name][i]."""
    model = models.threshold_nms()
    scope = gs.trace(model, quiet=True)
    nms = scope.find(op_type="NonMaxSuppressionV\\d")[0].name
    rng = np.random.default_rng(1)
    boxes = np.sort(rng.uniform(size=(20, 12, 4)), axis=-1).astype("float32")[..., [0, 1, 2, 3]]
    scores = rng.uniform(size=(20, 12)).astype("float32")
    bundle = scope.extract([nms], {"boxes": boxes, "scores": scores}, out=tmp_path / "t.zarr", batch_size=6)
    stored = bundle[nms]
    lengths = [len(stored[i]) for i in range(20)]
    assert len(set(lengths)) > 1
    for i in range(20):
        expected = tf.image.non_max_suppression(boxes[i], scores[i], 6, 0.5, score_threshold=0.4).numpy()
        np.testing.assert_array_equal(stored[i], expected)
    with pytest.raises(gs.StoreError, match="ragged"):
        np.asarray(stored)


def test_per_batch_values_and_fixed_batch(tmp_path):
    """A while loop over features (not the batch) stores one entry per batch; a weight (no batch
    axis) too. A model with a fixed batch size checks the sample count up front."""
    model = models.control_flow()
    scope = gs.trace(model, quiet=True)
    loop_value = next(t for t in scope.find(layer="running_sum") if t.context and t.op_type == "AddV2")
    kernel = scope.find(op_type="ReadVariableOp")[0]
    x = np.random.default_rng(2).normal(size=(10, *model.input.shape[1:])).astype("float32")
    bundle = scope.extract([loop_value, kernel], x, out=tmp_path / "b.zarr", batch_size=4)
    assert bundle[loop_value.name].layout == "batch" and len(bundle[loop_value.name]) == 3
    assert bundle[kernel.name].layout == "batch" and not bundle[kernel.name].ragged
    ex = scope.executor([loop_value.name])
    for k, start in enumerate(range(0, 10, 4)):
        np.testing.assert_array_equal(bundle[loop_value.name][k], ex(x[start : start + 4])[loop_value.name])

    fixed = gs.trace(demo.proposal_model(variant="loop", batch_size=2), quiet=True)
    with pytest.raises(gs.InputError, match="fixed at 2"):
        fixed.extract(["conv1/Relu:0"], demo.synthetic_images(5), out=tmp_path / "f.zarr", batch_size=2)
    bundle = fixed.extract(
        ["conv1/Relu:0", "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0"], demo.synthetic_images(6),
        out=tmp_path / "g.zarr", batch_size=2,
    )
    assert bundle["conv1/Relu:0"].layout == "sample" and len(bundle["conv1/Relu:0"]) == 6
    nms = bundle["ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0"]  # image 0's NMS in a Python loop
    assert nms.layout == "batch" and nms.ragged and len(nms) == 3


def test_a_fixed_batch_model_extracts_batched_data_as_it_comes(tmp_path):
    """A model whose batch size is fixed at 4: arrays are batched by 4 when batch_size is left
    out; a batched tf.data.Dataset and a generator of batches of 4 are read as they are. Each
    store holds Keras' own values."""
    x_in = keras.Input((5,), batch_size=4, name="x")
    model = keras.Model(x_in, keras.layers.Dense(3, activation="tanh", name="dense", **models._init())(x_in))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(6).normal(size=(8, 5)).astype("float32")
    want = np.concatenate([model(x[:4]), model(x[4:])])
    data = {"arrays": x, "dataset": tf.data.Dataset.from_tensor_slices(x).batch(4),
            "generator": (b for b in (x[:4], x[4:]))}
    for kind, source in data.items():
        bundle = scope.extract("dense/Tanh:0", source, out=tmp_path / f"{kind}.zarr", quiet=True)
        np.testing.assert_allclose(np.asarray(bundle["dense/Tanh:0"]), want, rtol=1e-6, err_msg=kind)


@pytest.mark.parametrize("kind", ["dataset", "dataset_of_samples", "xy_dataset", "batches", "generator"])
def test_data_sources(map_fn_demo, images, tmp_path, kind):
    """tf.data (batched, of samples, of (x, y)), a list of batches and a generator all store the
    same values."""
    x = images[:20]
    data = {
        "dataset": lambda: tf.data.Dataset.from_tensor_slices(x).batch(8),
        "dataset_of_samples": lambda: tf.data.Dataset.from_tensor_slices(x),
        "xy_dataset": lambda: tf.data.Dataset.from_tensor_slices((x, np.arange(20))).batch(8),
        "batches": lambda: [x[i : i + 8] for i in range(0, 20, 8)],
        "generator": lambda: (x[i : i + 8] for i in range(0, 20, 8)),
    }[kind]()
    bundle = map_fn_demo.extract(
        ["conv2/Relu:0"], data, out=tmp_path / "d.zarr", batch_size=8 if kind == "dataset_of_samples" else None
    )
    assert len(bundle["conv2/Relu:0"]) == 20
    # run in the same batches of 8: a convolution's last bits may depend on the batch size
    want = np.concatenate([map_fn_demo.run("conv2/Relu:0", x[i : i + 8])["conv2/Relu:0"] for i in range(0, 20, 8)])
    np.testing.assert_array_equal(np.asarray(bundle["conv2/Relu:0"]), want)


def _count_calls(monkeypatch):
    calls = []
    original = Executor.__call__

    def counting(self, *args):
        calls.append(len(args[0][0]) if isinstance(args[0], list) else len(args[0]))
        return original(self, *args)

    monkeypatch.setattr(Executor, "__call__", counting)
    return calls


def test_interrupted_run_resumes_where_it_stopped(map_fn_demo, images, tmp_path, monkeypatch):
    """A KeyboardInterrupt after 2 batches leaves 2 batches recorded; the same call again runs
    only the other 3 and gives the store an uninterrupted run gives. Done: nothing to run."""
    names = ["conv1/BiasAdd:0", NMS]
    whole = map_fn_demo.extract(names, images, out=tmp_path / "whole.zarr", batch_size=8)

    def interrupted():
        for k, start in enumerate(range(0, 37, 8)):
            if k == 2:
                raise KeyboardInterrupt
            yield images[start : start + 8]

    with pytest.raises(KeyboardInterrupt):
        map_fn_demo.extract(names, interrupted(), out=tmp_path / "run.zarr")
    partial = gs.open(tmp_path / "run.zarr")
    assert not partial.complete and partial.samples == 16 and len(partial[NMS]) == 16
    calls = _count_calls(monkeypatch)
    done = map_fn_demo.extract(names, [images[s : s + 8] for s in range(0, 37, 8)], out=tmp_path / "run.zarr")
    assert calls == [8, 8, 5]
    _assert_same(whole, done)
    calls.clear()
    map_fn_demo.extract(names, [images[s : s + 8] for s in range(0, 37, 8)], out=tmp_path / "run.zarr")
    assert calls == []


def test_a_failed_chunk_write_leaves_no_half_chunk(map_fn_demo, images, tmp_path, monkeypatch):
    """zarr's local store writes each chunk to a temporary file and renames it into place: when
    the rename fails, no chunk file exists under its real name, the progress points before the
    batch, and the next run repairs the store (this fails loudly if zarr stops writing
    atomically)."""
    names = ["conv1/BiasAdd:0", NMS]
    whole = map_fn_demo.extract(names, images, out=tmp_path / "whole.zarr", batch_size=8)
    real = pathlib.Path.replace
    renames = []

    def failing(self, target):  # batch 2's chunk of conv1/BiasAdd:0 is never renamed into place
        renames.append(target)
        if str(target).endswith(f"{store_key('conv1/BiasAdd:0')}/c/2/0/0/0"):
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(pathlib.Path, "replace", failing)
    with pytest.raises(OSError):
        map_fn_demo.extract(names, images, out=tmp_path / "run.zarr", batch_size=8)
    monkeypatch.setattr(pathlib.Path, "replace", real)
    failed = pathlib.Path(renames[-1])
    assert failed.name == "0" and not failed.exists() and not list(failed.parent.iterdir())
    partial = gs.open(tmp_path / "run.zarr")
    assert not partial.complete and partial.samples == 16
    for name in names:  # everything recorded reads back whole
        for i in range(partial.samples):
            np.testing.assert_array_equal(partial[name][i], whole[name][i])
    _assert_same(whole, map_fn_demo.extract(names, images, out=tmp_path / "run.zarr", batch_size=8))
    assert not list((tmp_path / "run.zarr").rglob("*.partial"))


_KILLED = """
import sys, time
import graphscope as gs
from graphscope import demo
scope = gs.trace(demo.proposal_model(variant="map_fn", batch_size=None), quiet=True)
images = demo.synthetic_images(37, seed=5)
def slow():
    for start in range(0, 37, 4):
        if start >= 12:
            time.sleep(0.5)
        yield images[start : start + 4]
print("start", flush=True)
scope.extract(["conv1/BiasAdd:0", {nms!r}], slow(), out=sys.argv[1])
"""


@pytest.mark.slow
def test_a_killed_process_resumes(map_fn_demo, images, tmp_path):
    """SIGKILL (no clean-up at all) part-way: what is recorded reads back whole, and the same
    call finishes the store equal to an uninterrupted run."""
    out = tmp_path / "run.zarr"
    names = ["conv1/BiasAdd:0", NMS]
    script = tmp_path / "job.py"
    script.write_text(_KILLED.format(nms=NMS))
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
    job = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    samples = 0
    while time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
        try:
            samples = zarr.open_group(out, mode="r").attrs["graphscope"]["progress"]["samples"]
        except Exception:  # not created yet
            continue
        if samples >= 16:
            break
    job.send_signal(signal.SIGKILL)
    job.wait()
    partial = gs.open(out)
    assert not partial.complete and 16 <= partial.samples < 37
    whole = map_fn_demo.extract(names, images, out=tmp_path / "whole.zarr", batch_size=4)
    for name in names:
        for i in range(partial.samples):
            np.testing.assert_array_equal(partial[name][i], whole[name][i])
    resumed = map_fn_demo.extract(names, [images[s : s + 4] for s in range(0, 37, 4)], out=out)
    _assert_same(whole, resumed)


def _assert_same(a: gs.Bundle, b: gs.Bundle) -> None:
    assert a.names == b.names and a.samples == b.samples and b.complete
    for name in a.names:
        assert len(a[name]) == len(b[name])
        for i in range(len(a[name])):
            np.testing.assert_array_equal(a[name][i], b[name][i])


def test_a_different_call_is_refused(map_fn_demo, images, tmp_path):
    out = tmp_path / "run.zarr"
    map_fn_demo.extract(["conv1/Relu:0"], images[:10], out=out, batch_size=5)
    with pytest.raises(gs.StoreError, match="the fetched tensors"):
        map_fn_demo.extract(["conv2/Relu:0"], images[:10], out=out, batch_size=5)
    with pytest.raises(gs.StoreError, match=r"the data \(its first batch\)"):
        map_fn_demo.extract(["conv1/Relu:0"], images[10:20], out=out, batch_size=5)
    other = gs.trace(demo.proposal_model(variant="map_fn", batch_size=None, seed=1), quiet=True)
    with pytest.raises(gs.StoreError, match="weights"):
        other.extract(["conv1/Relu:0"], images[:10], out=out, batch_size=5)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(gs.StoreError, match="not a graphscope store"):
        map_fn_demo.extract(["conv1/Relu:0"], images[:10], out=tmp_path / "notes", batch_size=5)
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


def test_data_of_another_length_is_refused_not_cut_to_the_stored_run(tmp_path):
    """The first batch matched, the length did not: before, a finished run was handed back as it
    was (10 rows for data of 20, or 20 for data of 10) and a run continued with shorter data of
    unknown length kept the rows written before. The same data, read another way, continues."""
    model = models.functional()
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(0).normal(size=(20, 8, 8, 3)).astype("float32")
    expected = keras.Model(model.input, model.get_layer("dense").output).predict(x, verbose=0)
    name = scope.layer("dense").output.name

    def batches(n, stop=None):
        for k, start in enumerate(range(0, n, 5)):
            if k == stop:
                raise KeyboardInterrupt
            yield x[start : start + 5]

    out = tmp_path / "run.zarr"
    scope.extract(name, x[:10], out=out, batch_size=5)
    for longer in (x, batches(20), tf.data.Dataset.from_tensor_slices(x).filter(lambda _: True).batch(5)):
        with pytest.raises(gs.StoreError, match="the data differ: (20|more than 10) samples"):
            scope.extract(name, longer, out=out, batch_size=None if not isinstance(longer, np.ndarray) else 5)
    assert len(gs.open(out)[name]) == 10
    np.testing.assert_allclose(np.asarray(scope.extract(name, batches(10), out=out)[name]), expected[:10],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(gs.StoreError, match="the data differ: 5 samples"):
        scope.extract(name, batches(5), out=out)

    other = tmp_path / "other.zarr"
    with pytest.raises(KeyboardInterrupt):
        scope.extract(name, batches(20, stop=3), out=other)  # 15 samples written
    with pytest.raises(gs.StoreError, match="the data differ: 10 samples in 2 batches"):
        scope.extract(name, batches(10), out=other)
    with pytest.raises(gs.StoreError, match="the data differ: 10 samples"):
        scope.extract(name, x[:10], out=other, batch_size=5)
    done = scope.extract(name, x, out=other, batch_size=5)
    assert done.samples == 20
    np.testing.assert_allclose(np.asarray(done[name]), expected, rtol=1e-5, atol=1e-6)


def test_data_batched_otherwise_is_refused_before_a_row_is_written(tmp_path):
    """A run of batches of 4, 3 and 4 samples stopped after 7 samples, continued with the same
    11 samples in batches of 4 (the first batch the same): skipping two batches passes over 8
    samples, not 7. Before, the refusal came after the run, which had written samples 8-10 at
    rows 7-9 (an incomplete store reads them) and left a store the right data could not finish."""
    x_in = keras.Input((4,), name="x")
    model = keras.Model(x_in, keras.layers.Dense(3, name="d")(x_in))
    scope = gs.trace(model, quiet=True)
    x = np.random.default_rng(3).normal(size=(11, 4)).astype("float32")
    expected = model.predict(x, verbose=0)

    def batches(stop=None):
        for k, (start, n) in enumerate([(0, 4), (4, 3), (7, 4)]):
            if k == stop:
                raise KeyboardInterrupt
            yield x[start : start + n]

    out = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        scope.extract("d/BiasAdd:0", batches(stop=2), out=out)
    for other in (x, (x[s : s + 4] for s in range(0, 11, 4))):
        with pytest.raises(gs.StoreError, match="8 samples in 2 batches, the stored run's 7 samples"):
            scope.extract("d/BiasAdd:0", other, out=out, batch_size=4 if isinstance(other, np.ndarray) else None)
    stored = gs.open(out)
    assert not stored.complete and stored.samples == 7
    np.testing.assert_allclose(np.asarray(stored["d/BiasAdd:0"]), expected[:7], rtol=1e-5, atol=1e-6)
    done = scope.extract("d/BiasAdd:0", batches(), out=out)
    assert done.complete and done.samples == 11
    np.testing.assert_allclose(np.asarray(done["d/BiasAdd:0"]), expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_values_are_stored_as_float32_exactly(tmp_path):
    """zarr v3 has no bfloat16: a mixed_bfloat16 model's values were refused ("bfloat16 values are
    not numbers"). They are stored as float32, which holds each of them exactly; the tensor's
    dtype attribute says bfloat16."""
    x_in = keras.Input((5,), name="x")
    hidden = keras.layers.Dense(7, activation="relu", name="d1", dtype="mixed_bfloat16")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(3, name="d2", dtype="mixed_bfloat16")(hidden), name="bf16")
    x = np.random.default_rng(1).normal(size=(11, 5)).astype("float32") * 3
    expected = [np.asarray(v) for v in keras.Model(x_in, [hidden, model.output])(x)]
    assert {v.dtype.name for v in expected} == {"bfloat16"}
    bundle = gs.trace(model, quiet=True).extract(["d1/Relu:0", "d2/BiasAdd:0"], x, out=tmp_path / "run.zarr",
                                                 batch_size=4)
    for name, value in zip(["d1/Relu:0", "d2/BiasAdd:0"], expected):
        stored = bundle[name]
        assert stored.dtype == np.float32 and stored.attrs["dtype"] == "bfloat16"
        np.testing.assert_array_equal(np.asarray(stored), value.astype(np.float32))


def test_a_store_whose_names_meant_other_tensors_is_not_continued(tmp_path):
    """Stores written while shared layers' calls were numbered in the order they ran (issue 20)
    name the other call's tensor: the raw TensorFlow names tell, and resuming is refused."""
    scope = gs.trace(models.shared_out_of_order(), quiet=True)
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    out = tmp_path / "run.zarr"
    scope.extract(["conv1/Tanh:0"], x, out=out, batch_size=3)
    group = zarr.open_group(out, mode="r+")
    attrs = dict(group.attrs["graphscope"])
    other = scope.tensor("conv1@2/Tanh:0").raw_name  # what `conv1/Tanh:0` meant before the fix
    attrs["call"] = {**attrs["call"], "raw_fetches": [other]}
    group.attrs["graphscope"] = attrs
    with pytest.raises(gs.StoreError, match="TensorFlow names"):
        scope.extract(["conv1/Tanh:0"], x, out=out, batch_size=3)
    del attrs["call"]["raw_fetches"]  # written before raw names were recorded: refused too
    group.attrs["graphscope"] = attrs
    with pytest.raises(gs.StoreError, match="numbered shared layers"):
        scope.extract(["conv1/Tanh:0"], x, out=out, batch_size=3)


@pytest.mark.parametrize(
    "data, kwargs, error, match",
    [
        ("images", {}, gs.ArgumentError, "data must be numpy arrays"),
        ([], {}, gs.InputError, "no batches"),
        (np.zeros((0, 64, 64, 3), "float32"), {}, gs.InputError, "no samples"),
        ({"image": np.zeros((2, 64, 64, 3), "float32")}, {}, gs.InputError, "Did you mean 'input_image'"),
        (np.zeros((4, 64, 64, 3), "float32"), {"batch_size": 0}, gs.ArgumentError, "batch_size"),
        ([np.zeros((4, 64, 64, 3), "float32")], {"batch_size": 2}, gs.ArgumentError, "its batches"),
        (np.zeros((4, 32, 32, 3), "float32"), {}, gs.InputError, "expects shape"),
    ],
)
def test_bad_data_is_explained(map_fn_demo, tmp_path, data, kwargs, error, match):
    with pytest.raises(error, match=match):
        map_fn_demo.extract(["conv1/Relu:0"], data, out=tmp_path / "x.zarr", **kwargs)


def test_branch_values_are_refused(tmp_path):
    scope = gs.trace(models.loops_and_branches(), quiet=True)
    branch = next(t for t in scope.find() if t.context and t.context.endswith((":then", ":else")))
    x = models.sample_inputs(scope.model, batch=4)[0]
    with pytest.raises(gs.UnsupportedFetchError, match="branch"):
        scope.extract([branch], x, out=tmp_path / "b.zarr")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_memory_stays_flat_over_a_large_dataset(map_fn_demo, tmp_path):
    """300 batches of 16 generated on the fly (300 MB of inputs, 300 MB of values on disk):
    resident memory after batch 300 is within 60 MB of after batch 50."""
    rss = {}

    def batches():
        rng = np.random.default_rng(0)
        for k in range(300):
            if k in (50, 299):
                with open("/proc/self/statm") as f:
                    rss[k] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            yield rng.uniform(size=(16, 64, 64, 3)).astype("float32")

    bundle = map_fn_demo.extract(["conv1/BiasAdd:0"], batches(), out=tmp_path / "big.zarr")
    assert bundle.samples == 4800
    assert rss[299] - rss[50] < 60, rss


@pytest.mark.parametrize("by", ["list", "dict"])
def test_a_npy_path_per_input(tmp_path, by):
    """Several inputs, each from its .npy file (a list in input order, or a dict by input
    name): the stored values are Keras' on the arrays."""
    model = models.multi_input()
    scope = gs.trace(model, quiet=True)
    rng = np.random.default_rng(3)
    img, meta = rng.normal(size=(5, 4, 4, 1)).astype("float32"), rng.normal(size=(5, 3)).astype("float32")
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "meta.npy", meta)
    paths = [tmp_path / "img.npy", str(tmp_path / "meta.npy")]
    data = paths if by == "list" else {"meta": paths[1], "img": paths[0]}
    bundle = scope.extract("add", data, out=tmp_path / "store", batch_size=2, quiet=True)
    want = keras.Model(model.inputs, model.get_layer("add").output)([img, meta]).numpy()
    got = np.stack([bundle["add/Add:0"][i] for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    stats = scope.statistics("add", data, batch_size=2, quiet=True)["add/Add:0"]
    np.testing.assert_allclose(stats.mean, want.mean(0), rtol=1e-6, atol=1e-6)
