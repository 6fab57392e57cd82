"""The README's Python examples run as written, and .ci/run runs the README's test command."""

import pathlib
import re
import shlex
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.mark.slow
def test_python_examples_run(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)  # the dataset example writes run.zarr
    namespace: dict = {}
    for block in _blocks("python"):  # the tour builds on itself, block after block
        exec(compile(block, "README.md", "exec"), namespace)
        if "nans = " in block:  # checked now: later blocks reuse its names (model, port, images)
            _check_the_tours_where_it_goes_wrong(namespace)
    assert repr(namespace["scope"]).startswith("<Scope mask_rcnn_demo:")
    assert namespace["tail"].inputs == ["conv3_block1_out/Relu:0"]
    nms = namespace["nms"]  # the loop example: its claims in comments
    assert nms.context == "ROI/map/while:body"
    value = namespace["mapped"].run(nms, namespace["demo"].synthetic_images())[nms.name]
    assert value.dtype == "int32" and value.shape == (2, 32)
    steps = namespace["steps"]  # a method's trace
    assert steps.layer("decoder").inputs.names == ["net/BiasAdd:0"] and steps.output_keys == ["scores"]
    assert repr(namespace["keras2"]).startswith("<Scope vgg19:")  # the tf_keras example
    values = namespace["values"]  # the pictures example: the figure is the values
    fig = values.plot("conv1/BiasAdd:0")
    assert len(fig.axes) == 16
    np.testing.assert_array_equal(fig.axes[5].images[0].get_array(), values["conv1/BiasAdd:0"][0, :, :, 5])
    gs = namespace["gs"]
    assert gs.presets.pre_activations(namespace["scope"]).names[:2] == ["conv1/BiasAdd:0", "conv2/BiasAdd:0"]
    assert gs.presets.logits(namespace["scope"]).names == ["rpn_class_logits/Reshape:0"]
    assert namespace["grads"]["block5_conv4/BiasAdd:0"].shape == (1, 4, 4, 512)  # the gradients example
    same, wrong = namespace["same"], namespace["wrong"]  # the compare example: its claims in comments
    assert same.first is None and len(same.rows) == 21
    assert wrong.first.name == "block1_conv2" and wrong.rows[0].ok
    found, back = namespace["found"], namespace["back"]  # the numerics example: its claims in comments
    assert repr(found.first) == "<Tensor log/Log:0 Log float32[?,3] layer=log>" and found.origins.names == ["log/Log:0"]
    assert found.details[0].chain == ("d/BiasAdd:0", "log/Log:0") and "d/BiasAdd:0 → log/Log:0" in str(found)
    assert repr(back.first) == "<Tensor h/Relu:0 Relu float32[?,6] layer=h>" and back.examined
    saved = namespace["saved"]  # the dataset example
    assert len(saved[namespace["indices"]]) == 40 and saved["conv1/BiasAdd:0"].shape == (40, 32, 32, 16)
    assert saved.ancestors("ROI", op_type="NonMaxSuppressionV3").names == [namespace["indices"]]
    _check_the_statistics_example(namespace)


def _check_the_tours_where_it_goes_wrong(namespace):
    """The tour's numerics and compare example: its claims in comments, checked by Keras and numpy."""
    import keras
    import numpy as np

    nans, logs = namespace["nans"], namespace["logs"]
    assert repr(nans.first) == "<Tensor log/Log:0 Log float32[?,3] layer=log>" and nans.origins.names == ["log/Log:0"]
    batch = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")  # the tour's
    d = np.asarray(keras.Model(logs.input, logs.get_layer("d").output)(batch))
    assert np.isfinite(d).all() and (d < 0).any()  # finite inputs, negative somewhere: log makes NaN there
    assert nans.details[0].counts.nan == int((d < 0).sum())
    diff, model, port, images = namespace["diff"], namespace["model"], namespace["port"], namespace["images"]
    assert diff.first.name == "block2_conv1" and all(row.ok for row in diff.rows[:diff.rows.index(diff.first)])
    by_hand = []  # Keras sub-models of both, layer by layer up to the first that differs
    for layer in model.layers[1:]:
        a = np.asarray(keras.Model(model.input, layer.output)(images))
        b = np.asarray(keras.Model(port.input, port.get_layer(layer.name).output)(images))
        by_hand.append((layer.name, np.allclose(a, b, rtol=1e-5, atol=1e-6)))
        if not by_hand[-1][1]:
            break
    assert by_hand == [("block1_conv1", True), ("block1_conv2", True), ("block1_pool", True), ("block2_conv1", False)]


def _statistics_blocks():
    """The statistics section's Python block and the output shown after it."""
    section = README[README.index("### Statistics over a dataset"):README.index("### On Apache Beam")]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (shown,) = re.findall(r"\n```\n(statistics of .*?)```", section, flags=re.S)
    return code, shown


def _check_the_statistics_example(namespace):
    """The dead-filter hunt and the range table: their claims, checked by Keras sub-models and numpy."""
    import keras
    import numpy as np

    small, photos, relus, ranges = (namespace[k] for k in ("small", "photos", "relus", "ranges"))
    convs = [small.get_layer(f"conv{k}") for k in (1, 2, 3)]
    outputs = {f"{c.name}/Relu:0": np.asarray(keras.Model(small.inputs[0], c.output)(photos), np.float64) for c in convs}
    dead = {name: np.flatnonzero(v.reshape(-1, v.shape[-1]).max(0) <= 0).tolist() for name, v in outputs.items()}
    assert dead == {"conv1/Relu:0": [], "conv2/Relu:0": [3, 17], "conv3/Relu:0": [8, 12, 16, 19, 27]}  # the comment's
    assert {k: v.tolist() for k, v in namespace["hunt"].items()} == dead
    for name, v in outputs.items():
        rows = v.reshape(-1, v.shape[-1])
        np.testing.assert_allclose(relus[name].mean, rows.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(relus[name].std, rows.std(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(relus[name].zero_fraction, (rows == 0).mean(0))
    # the range table: each pre-activation (the convolution before its ReLU, by hand) as shown
    _, shown = _statistics_blocks()
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.startswith(" conv")}
    assert list(rows) == list(ranges) == ["conv1/BiasAdd:0", "conv2/BiasAdd:0", "conv3/BiasAdd:0"]
    pre = {}
    for c in convs:
        inputs = np.asarray(keras.Model(small.inputs[0], c.input)(photos))
        pre[f"{c.name}/BiasAdd:0"] = np.asarray(keras.ops.conv(inputs, c.kernel) + c.bias, np.float64)
    for name, v in pre.items():
        lo, hi = v.min(), v.max()
        assert (ranges[name].min, ranges[name].max) == pytest.approx((lo, hi), rel=1e-6)
        assert rows[name][4:6] == [f"{lo:.3g}", f"{hi:.3g}"], rows[name]
    fetched = namespace["vggish"].run("conv3/BiasAdd:0", photos)["conv3/BiasAdd:0"]
    counts, edges = np.histogram(fetched.astype(np.float64), 256)
    assert namespace["counts"].tolist() == counts.tolist()
    np.testing.assert_allclose(namespace["edges"], edges, rtol=1e-12)
    # per filter: each its own range; the live filters' share of conv2's per-tensor range
    per_filter = namespace["per_filter"]
    by_filter = pre["conv2/BiasAdd:0"].reshape(-1, 32)
    np.testing.assert_allclose(per_filter.min, by_filter.min(0), rtol=1e-6)
    assert [f"{v:.3g}" for v in per_filter.min[:4]] == ["-0.325", "-0.488", "-0.514", "-50.3"]
    live = np.delete(by_filter, [3, 17], axis=1)
    assert (f"{live.min():.2f}", f"{live.max():.2f}") == ("-0.61", "0.64")
    share = (live.max() - live.min()) / (by_filter.max() - by_filter.min())
    assert (round(100 * share, 1), int(256 * share)) == (2.5, 6)
    assert len(namespace["fig"].axes[0].containers[0][0].get_ydata()) == 32


def test_statistics_example_runs_on_its_own():
    """The statistics section's block, after the tour's imports only (it builds its own model)."""
    code, _ = _statistics_blocks()
    namespace: dict = {}
    exec("import keras, numpy as np\nimport graphscope as gs\n" + code, namespace)
    _check_the_statistics_example(namespace)


def test_readme_repr_comments_are_true():
    import keras

    import graphscope as gs

    model = keras.applications.VGG19(weights=None, include_top=False, input_shape=(64, 64, 3))
    claims = dict((kind, scope) for scope, kind in re.findall(r"# (<Scope vgg19: [^>]*>)( \(tf_keras\))?", README))
    assert repr(gs.trace(model)) == claims[""]
    tf_keras = pytest.importorskip("tf_keras")
    vgg2 = tf_keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    keras2 = gs.trace(vgg2)
    assert repr(keras2) == claims[" (tf_keras)"]
    (tensor,) = re.findall(r"keras2\.layer\(\"block4_conv3\"\)\.output\s+# (<Tensor [^>]*>)", README)
    assert repr(keras2.layer("block4_conv3").output) == tensor


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    assert README.splitlines()[:3] == ["# graphscope", "", "```bash"]  # the title, then the commands
    first = _blocks("bash")[0].strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("graphscope demo") and first[1].endswith("pytest")
    # .ci/run takes the command from the README itself: run its own extraction and compare
    ci = (ROOT / ".ci" / "run").read_text()
    (extraction,) = [line for line in ci.splitlines() if line.startswith("command=$(")]
    got = subprocess.run(["bash", "-c", f"set -euo pipefail; {extraction}; printf %s \"$command\""],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert got == first[1]
    assert 'bash -c "$command"' in ci  # and runs it as written


@pytest.mark.slow
def test_terminal_examples_run(tmp_path):
    """The README's terminal block: tree, find the NMS, run it to an .npz, as written."""
    import subprocess
    import sys

    import numpy as np

    (block,) = [b for b in _blocks("bash") if "graphscope tree demo" in b]
    outputs = []
    for line in block.strip().splitlines():
        assert line.startswith(".venv/bin/graphscope ")
        argv = [sys.executable, "-m", "graphscope", *shlex.split(line)[1:]]
        run = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, (line, run.stderr)
        outputs.append(run.stdout)
    tree, found, values = outputs
    assert "└─ ROI" in tree and "ProposalLayer" in tree
    assert " ROI/rpn_non_max_suppression/NonM" in found and found.startswith("2 tensors")
    with np.load(tmp_path / "nms.npz") as saved:
        assert saved["ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0"].dtype == np.int32
