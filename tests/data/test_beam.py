"""Beam: RunInference with graphscope's ModelHandler writes the store one process writes."""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pytest

import graphscope as gs
from tests import models

beam = pytest.importorskip("apache_beam", reason="the beam extra is not installed")

from apache_beam.ml.inference.base import RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from graphscope.beam import ExtractToZarr, GraphscopeModelHandler, ReadNpy  # noqa: E402

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
