"""cli: every subcommand run as a subprocess, as a user would, bad arguments included.

Exit codes: 0 success, 1 graphscope error (one line, no traceback), 2 usage error.
"""

import argparse
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope import cli, demo
from tests import models


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "graphscope", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The residual zoo model saved as .keras, and an input for it as .npy."""
    folder = tmp_path_factory.mktemp("cli")
    model = models.residual()
    path = folder / "residual.keras"
    model.save(path)
    x = models.sample_inputs(model, batch=2)[0]
    np.save(folder / "x.npy", x)
    return model, str(path), folder


def test_help_everywhere_with_examples():
    for command in cli._SUBCOMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
    run = _cli("run", "--help")
    assert run.returncode == 0 and "examples:" in run.stdout and "--input" in run.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "required: COMMAND"),
        (("nope",), "invalid choice"),
        (("tree",), "required: MODEL"),
        (("tree", "demo", "--depth", "-1"), "expected 0 or more"),
        (("export", "demo"), "required: --format"),
        (("export", "demo", "--format", "yaml"), "invalid choice"),
        (("find", "demo", "--ancestors-of", "a", "--cut-points"), "not allowed with"),
        (("draw", "demo", "ROI", "--radius", "x"), "expected a whole number"),
        (("extract", "demo", "conv1/Relu:0"), "required: --out"),
        (("extract", "demo", "a", "--input", "x.npy", "--images", "d", "--out", "o"), "not allowed with"),
        (("extract", "demo", "a", "--batch-size", "0", "--out", "o"), "expected 1 or more"),
        (("open",), "required: STORE"),
    ],
)
def test_usage_errors_exit_2_before_loading_anything(args, message, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_tree_of_the_demo_and_of_a_saved_model(saved):
    run = _cli("tree", "demo")
    assert run.returncode == 0, run.stderr
    assert " └─ ROI               ProposalLayer  [2,?,4]                0  145  join" in run.stdout
    assert " ├─ rpn_conv_shared   Conv2D         [2,16,16,32]        9248   10  cut fork" in run.stdout
    assert run.stderr == ""
    _, path, _ = saved
    run = _cli("-q", "tree", path, "--depth", "1")
    assert run.returncode == 0, run.stderr
    assert " ├─ block1 ▸" in run.stdout and "block1_add" not in run.stdout
    short = _cli("-q", "tree", path, "--limit", "5")
    assert short.returncode == 0, short.stderr
    assert "⋮ 3 of 7 rows left out at limit=5: limit=7 shows them" in short.stdout and "└─ logits" in short.stdout
    ops = _cli("tree", "demo:map_fn", "--pattern", "ROI", "--ops")
    assert "body of while" in ops.stdout and "NonMaxSuppres" in ops.stdout


def test_find_the_nms_from_the_terminal():
    run = _cli("find", "demo", "--op-type", "NonMaxSuppressionV3", "--ancestors-of", "ROI", "--names")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0",
        "ROI/rpn_non_max_suppression_1/NonMaxSuppressionV3:0",
    ]
    table = _cli("find", "demo", "NonMaxSuppressionV3:0$")
    assert table.returncode == 0 and table.stdout.startswith("2 tensors")
    cuts = _cli("find", "demo", "--cut-points", "--names")
    assert cuts.stdout.split() == ["input_image:0", "conv1/Relu:0", "conv2/Relu:0", "rpn_conv_shared/Relu:0"]


def test_run_the_nms_to_an_npz(tmp_path):
    out = tmp_path / "nms.npz"
    run = _cli("run", "demo", "ROI/.*NonMaxSuppressionV3:0", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("2 values") and f"wrote 2 value(s) to {out}" in run.stderr
    scope = gs.trace(demo.proposal_model())
    names = scope.find(op_type="NonMaxSuppressionV3").names
    want = scope.run(names, demo.synthetic_images())
    with np.load(out, allow_pickle=False) as got:
        assert sorted(got.files) == sorted(names)
        for name in names:
            np.testing.assert_array_equal(got[name], want[name])


def test_run_a_saved_model_from_inputs_and_from_a_cut(saved, tmp_path):
    model, path, folder = saved
    x = np.load(folder / "x.npy")
    out = tmp_path / "v.npz"
    run = _cli("run", path, "block1_1_conv/BiasAdd:0", "block1_out/Relu:0", "--input", str(folder / "x.npy"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    with np.load(out) as got:
        want = keras.Model(model.input, model.get_layer("block1_out").output)(x)
        np.testing.assert_allclose(got["block1_out/Relu:0"], want, rtol=1e-5, atol=1e-5)
        conv = model.get_layer("block1_1_conv")
        pre = keras.Model(model.input, conv.input)(x)
        by_hand = keras.ops.conv(pre, conv.kernel, padding="same") + conv.bias
        np.testing.assert_allclose(got["block1_1_conv/BiasAdd:0"], by_hand, rtol=1e-5, atol=1e-5)
        np.save(tmp_path / "cut.npy", got["block1_out/Relu:0"])
    tail = tmp_path / "tail.npz"
    run = _cli("run", path, "logits/BiasAdd:0", "--input", f"block1_out/Relu:0={tmp_path / 'cut.npy'}", "--out", str(tail))
    assert run.returncode == 0, run.stderr
    with np.load(tail) as got:
        np.testing.assert_allclose(got["logits/BiasAdd:0"], model(x), rtol=1e-5, atol=1e-5)


def test_run_with_an_edit_patches_a_saved_value_in(saved, tmp_path):
    """Activation patching from the terminal: block1_out of one input patched into a run on
    another gives the first input's logits (everything after block1_out depends on it alone)."""
    model, path, folder = saved
    x = np.load(folder / "x.npy")
    clean = keras.Model(model.input, model.get_layer("block1_out").output)(x[:1])
    np.save(tmp_path / "clean.npy", np.asarray(clean))
    np.save(tmp_path / "other.npy", x[1:])
    out = tmp_path / "patched.npz"
    run = _cli("run", path, "logits/BiasAdd:0", "--input", str(tmp_path / "other.npy"),
               "--edit", f"block1_out/Relu:0={tmp_path / 'clean.npy'}", "--out", str(out))
    assert run.returncode == 0, run.stderr
    with np.load(out) as got:
        np.testing.assert_allclose(got["logits/BiasAdd:0"], model(x[:1]), rtol=1e-5, atol=1e-5)
    bad = _cli("run", path, "logits/BiasAdd:0", "--input", str(folder / "x.npy"), "--edit", "block1_out/Relu:0")
    assert bad.returncode == 2 and "--edit takes NAME=FILE" in bad.stderr


def test_grad_writes_gradients_equal_to_gradient_tape(saved, tmp_path):
    import tensorflow as tf

    model, path, folder = saved
    x = np.load(folder / "x.npy")
    out = tmp_path / "grads.npz"
    run = _cli("grad", path, "logits/BiasAdd:0", "--wrt", "image", "stem_conv/kernel", "--input",
               str(folder / "x.npy"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "stem_conv/kernel" in run.stdout
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = tf.reduce_sum(model(xs))
    gx, gk = tape.gradient(y, [xs, model.get_layer("stem_conv").kernel.value])
    with np.load(out) as got:
        assert sorted(got.files) == ["image", "stem_conv/kernel"]
        np.testing.assert_allclose(got["image"], gx.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["stem_conv/kernel"], gk.numpy(), rtol=1e-4, atol=1e-6)
    wrong = _cli("grad", path, "logits/BiasAdd:0", "--wrt", "stem_conv/kernl", "--input", str(folder / "x.npy"))
    assert wrong.returncode == 1 and "Did you mean 'stem_conv/kernel'" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


def test_find_a_preset_from_the_terminal():
    run = _cli("find", "demo", "--preset", "pre_activations", "--names")
    assert run.returncode == 0, run.stderr
    scope = gs.trace(demo.proposal_model(), quiet=True)
    assert run.stdout.split() == gs.presets.pre_activations(scope).names
    assert "rpn_class/Softmax" not in run.stdout and "conv1/BiasAdd:0" in run.stdout
    logits = _cli("find", "demo", "--preset", "logits", "--names")
    assert logits.stdout.split() == ["rpn_class_logits/Reshape:0"]
    bad = _cli("find", "demo", "--preset", "nope")
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr


def test_run_plots_one_png_per_fetched_tensor(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    run = _cli("--quiet", "run", "demo", "conv1/BiasAdd:0", "rpn_class/Softmax:0", "--plot", str(tmp_path / "pics"))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["conv1_BiasAdd_0.png", "rpn_class_Softmax_0.png"]
    picture = matplotlib.image.imread(tmp_path / "pics" / "conv1_BiasAdd_0.png")
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 400  # 16 channels, two rows of 8
    assert "wrote 2 picture(s)" in run.stderr


def test_run_errors_are_one_line(saved, tmp_path):
    _, path, folder = saved
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = [
        (("run", path, "logits/BiasAdd:0", "--input", str(tmp_path / "pickled.npy")), "without unpickling"),
        (("run", path, "logits/BiasAdd:0", "--input", str(tmp_path / "missing.npy")), "does not exist"),
        (("run", "demo", "ROI/nope:0"), "no tensor named 'ROI/nope:0'"),
        (("tree", str(tmp_path / "nowhere.keras")), "nowhere.keras"),
        (("tree", "demo", "--pattern", "rpn_clas_raw"), "Did you mean 'rpn_class_raw'"),
    ]
    for args, message in cases:
        run = _cli(*args)
        assert run.returncode == 1, (args, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("graphscope: error:") and message in lines[0], run.stderr
    no_input = _cli("run", path, "logits/BiasAdd:0")
    assert no_input.returncode == 2 and "run needs --input" in no_input.stderr
    debug = _cli("--debug", "run", "demo", "ROI/nope:0")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "TensorNotFoundError" in debug.stderr


def test_export_to_stdout_and_to_a_file(tmp_path):
    import json

    import networkx as nx

    run = _cli("export", "demo", "--format", "json")
    assert run.returncode == 0, run.stderr
    G = nx.node_link_graph(json.loads(run.stdout), edges="edges")
    assert "ROI/rpn_non_max_suppression/NonMaxSuppressionV3" in G
    out = tmp_path / "demo.graphml"
    run = _cli("export", "demo", "--format", "graphml", "--out", str(out))
    assert run.returncode == 0 and run.stdout == ""
    assert nx.read_graphml(out).number_of_nodes() == G.number_of_nodes()


def test_draw_svg_or_dot_and_the_graphviz_hint(tmp_path):
    dot = _cli("draw", "demo", "ROI", "--radius", "1", "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith("digraph") and "cluster" in dot.stdout
    env = dict(os.environ, PATH=str(tmp_path))  # no Graphviz on this PATH
    missing = _cli("draw", "demo", "ROI", "--out", str(tmp_path / "roi.svg"), env=env)
    assert missing.returncode == 1 and "install Graphviz" in missing.stderr
    assert not (tmp_path / "roi.svg").exists()
    if shutil.which("dot"):
        run = _cli("draw", "demo", "rpn_class/Softmax:0", "--out", str(tmp_path / "softmax.svg"))
        assert run.returncode == 0, run.stderr
        assert "<svg" in (tmp_path / "softmax.svg").read_text()


def test_nothing_is_written_but_the_paths_given(tmp_path):
    """Every writing command, run where the user stands: the files asked for appear, and nothing
    else, anywhere: not in the working directory, not in the temporary directory (Graphviz's
    scratch files included), not at home. Two libraries write there on import, whatever runs:
    Keras its ~/.keras/keras.json, and matplotlib (imported by TensorFlow where it is installed)
    its font cache."""
    work, home, scratch = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for folder in (work, home, scratch):
        folder.mkdir()
    np.save(work / "images.npy", demo.synthetic_images())
    calls = [
        ["tree", "demo"],
        ["find", "demo", "--op-type", "NonMaxSuppressionV3"],
        ["run", "demo", "ROI/.*NonMaxSuppressionV3:0", "--input", "images.npy", "--out", "nms.npz"],
        ["export", "demo", "--format", "graphml", "--out", "demo.graphml"],
    ]
    if shutil.which("dot"):
        calls.append(["draw", "demo", "ROI", "--out", "roi.svg"])
    script = "import sys\nfrom graphscope import cli\nfor argv in %r:\n    assert cli.main(argv) == 0, argv\n" % calls
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(scratch), "PYTHONPATH": os.getcwd()}
    env.pop("KERAS_HOME", None)
    run = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    made = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    wanted = {"work/images.npy", "work/nms.npz", "work/demo.graphml"} | ({"work/roi.svg"} if shutil.which("dot") else set())
    theirs = {p for p in made if p == "home/.keras/keras.json" or p.startswith("home/.cache/matplotlib/")}
    assert made - theirs == wanted


NMS = "ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0"


def test_extract_resume_and_open_from_the_terminal(tmp_path):
    images = demo.synthetic_images(10, seed=4)
    np.save(tmp_path / "x.npy", images)
    out = tmp_path / "run.zarr"
    args = ("extract", "demo:map_fn", "ROI/.*NonMaxSuppressionV3:0", "conv1/Relu:0",
            "--input", str(tmp_path / "x.npy"), "--batch-size", "4", "--out", str(out))
    run = _cli(*args)
    assert run.returncode == 0, run.stderr
    assert "wrote 10 samples" in run.stderr and "per sample" in run.stdout
    assert any(NMS in line for line in run.stdout.splitlines())  # a long name stays whole, on one line
    again = _cli(*args)  # finished: nothing to do, same store
    assert again.returncode == 0 and "wrote 10 samples" in again.stderr
    bundle = gs.open(out)
    scope = gs.trace(demo.proposal_model(variant="map_fn", batch_size=None), quiet=True)
    # in the extract's batches of 4: a convolution's last bits may depend on the batch size
    runs = [scope.run([NMS, "conv1/Relu:0"], images[i : i + 4]) for i in range(0, 10, 4)]
    expected = {name: [v for r in runs for v in r[name]] for name in (NMS, "conv1/Relu:0")}
    np.testing.assert_array_equal(np.asarray(bundle["conv1/Relu:0"]), np.stack(expected["conv1/Relu:0"]))
    assert [list(bundle[NMS][i]) for i in range(10)] == [list(v) for v in expected[NMS]]
    shown = _cli("open", str(out))
    assert shown.returncode == 0 and "conv1/Relu:0" in shown.stdout and "ragged" in shown.stdout
    one = _cli("open", str(out), NMS, "--index", "3")
    assert one.returncode == 0 and "1 value" in one.stdout and f"int32[{len(bundle[NMS][3])}]" in one.stdout
    past = _cli("open", str(out), NMS, "--index", "10")  # 10 samples: 0 to 9
    assert past.returncode == 1 and "Traceback" not in past.stderr
    assert "--index 10 is out of range" in past.stderr and "10 entries" in past.stderr
    wrong = _cli("extract", "demo:map_fn", "conv2/Relu:0", "--input", str(tmp_path / "x.npy"), "--out", str(out))
    assert wrong.returncode == 1 and "different call" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = _cli("open", str(tmp_path / "nothing.zarr"))
    assert missing.returncode == 1 and "no store at" in missing.stderr


def test_extract_a_directory_of_images(tmp_path):
    images = (demo.synthetic_images(5, seed=6) * 255).round()
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, image in enumerate(images):
        keras.utils.save_img(folder / f"{k:02d}.png", image, scale=False)
    out = tmp_path / "run.zarr"
    run = _cli("extract", "demo:map_fn", "conv1/BiasAdd:0", "--images", str(folder), "--size", "64", "64",
               "--batch-size", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    scope = gs.trace(demo.proposal_model(variant="map_fn", batch_size=None), quiet=True)
    expected = scope.run("conv1/BiasAdd:0", images.astype("float32"))["conv1/BiasAdd:0"]
    np.testing.assert_allclose(np.asarray(gs.open(out)["conv1/BiasAdd:0"]), expected, rtol=1e-5, atol=1e-4)
    no_size = _cli("extract", "demo:map_fn", "conv1/BiasAdd:0", "--images", str(folder), "--out", str(out))
    assert no_size.returncode == 2 and "--size" in no_size.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = _cli("extract", "demo:map_fn", "conv1/BiasAdd:0", "--images", str(empty), "--size", "64", "64",
                "--out", str(tmp_path / "e.zarr"))
    assert none.returncode == 1 and "cannot read images" in none.stderr


def test_validate_from_the_terminal():
    run = _cli("validate", "demo")
    assert run.returncode == 0, run.stderr
    assert "mismatches  0" in run.stdout and "all agree" in run.stdout
    some = _cli("validate", "demo", "conv1/Relu:0", "rpn_class/Softmax:0")
    assert some.returncode == 0 and "2 ops replayed" in some.stdout


def _two_signatures_and_inputs(tmp_path):
    """The SavedModel with two signatures at tmp_path/two, and arrays for its `embed` signature's
    inputs, saved as tmp_path/x.npy and tmp_path/bias.npy."""
    path = tmp_path / "two"
    models.save_two_signatures(path)
    rng = np.random.default_rng(0)
    x, bias = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "bias.npy", bias)
    return path, x, bias


def test_every_command_that_takes_a_model_takes_a_signature(tmp_path, capsys):
    parser = cli._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        options = {o for a in command._actions for o in a.option_strings}
        takes_model = any(a.dest == "model" for a in command._actions)
        assert ("--signature" in options) == takes_model, name
    path, x, bias = _two_signatures_and_inputs(tmp_path)
    out = tmp_path / "embedding.npz"
    argv = ["-q", "run", str(path), "embedding", "--signature", "embed", "--input", f"bias={tmp_path / 'bias.npy'}",
            "--input", f"x={tmp_path / 'x.npy'}", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    want = tf.saved_model.load(str(path)).signatures["embed"](x=tf.constant(x), bias=tf.constant(bias))["embedding"]
    (got,) = np.load(out).values()  # one value, keyed by its tensor's name
    np.testing.assert_allclose(got, want, rtol=1e-6)
    capsys.readouterr()
    assert cli.main(["-q", "find", str(path), "BiasAdd:0$", "--names", "--signature", "embed"]) == 0
    assert capsys.readouterr().out.split() == ["features/BiasAdd:0", "pool/BiasAdd:0"]
    assert cli.main(["-q", "find", str(path), "BiasAdd:0$", "--names"]) == 0  # serving_default
    assert capsys.readouterr().out.split() == ["proj/BiasAdd:0", "head/BiasAdd:0"]



def test_compare_traces_both_saved_models_at_the_signature(tmp_path, capsys):
    """`--signature` names the function of MODEL and of MODEL_B where both are SavedModels
    (MODEL_B was traced at serving_default: another function, refused here for its other
    layers, compared silently where the two share layer names); `--signature-b` picks B's."""
    path, x, bias = _two_signatures_and_inputs(tmp_path)
    other = models.TwoSignatures()
    tf.train.Checkpoint(other).read(str(path / "variables" / "variables")).assert_existing_objects_matched()
    pool = other.embedder.get_layer("pool").kernel
    pool.assign(pool.numpy() + 0.5)
    tf.saved_model.save(other, str(tmp_path / "other"), signatures={"serving_default": other.serve, "embed": other.embed})
    inputs = ["--input", str(tmp_path / "x.npy"), "--input", str(tmp_path / "bias.npy")]
    assert cli.main(["-q", "compare", str(path), str(path), "--signature", "embed", *inputs]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "all within tolerance" in out and "features" in out and "proj" not in out
    assert cli.main(["-q", "compare", str(path), str(tmp_path / "other"), "--signature", "embed", *inputs]) == 1
    assert "first outside tolerance: pool" in capsys.readouterr().out  # features agree: the copy's pool does not
    assert cli.main(["-q", "compare", str(path), str(tmp_path / "other"), "--signature", "embed",
                     "--signature-b", "serving_default", *inputs]) == 1
    assert "--signature-b" not in capsys.readouterr().err  # B's inputs differ: refused as such


def test_errors_give_the_way_out_in_options_and_it_works(tmp_path, capsys):
    """Where the CLI is the caller, an error's advice names its options (--signature NAME,
    --input NAME=FILE), not Python's arguments; following it runs. The same mistakes made from
    Python keep Python's advice."""
    path, x, bias = _two_signatures_and_inputs(tmp_path)

    def error(*argv):
        assert cli.main(["-q", *map(str, argv)]) == 1
        return capsys.readouterr().err

    err = error("run", path, "embedding", "--signature", "nope", "--input", tmp_path / "x.npy")
    assert "give one of them as --signature NAME" in err and "signature=" not in err, err
    err = error("run", path, "embedding", "--signature", "embed", "--input", tmp_path / "x.npy")
    assert "--input NAME=FILE" in err and "a dict by name" not in err and "list of arrays" not in err, err
    err = error("run", path, "embedding", "--signature", "embed", "--input", f"x={tmp_path / 'x.npy'}")
    assert "--input bias=FILE" in err, err
    # the way out: one --input per input, in the order the message lists them
    out = tmp_path / "embedding.npz"
    assert cli.main(["-q", "run", str(path), "embedding", "--signature", "embed", "--input", str(tmp_path / "x.npy"),
                     "--input", str(tmp_path / "bias.npy"), "--out", str(out)]) == 0, capsys.readouterr().err
    want = tf.saved_model.load(str(path)).signatures["embed"](x=tf.constant(x), bias=tf.constant(bias))["embedding"]
    (got,) = np.load(out).values()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # from Python, Python's advice
    with pytest.raises(gs.OptionError, match="pass one of them as signature="):
        gs.trace(str(path), signature="nope", quiet=True)
    scope = gs.trace(str(path), signature="embed", quiet=True)
    with pytest.raises(gs.InputError, match="a list of arrays in that order, or a dict by name"):
        scope.run("embedding", x)


def test_find_leaves_unused_tensors_out_unless_asked(tmp_path):
    path = tmp_path / "lstm.keras"
    models.recurrent("LSTM").save(path)
    scope = gs.trace(path, quiet=True)
    used = _cli("find", str(path), "Sigmoid", "--layer", "lstm", "--names")
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == scope.find("Sigmoid", layer="lstm").names != []
    every = _cli("find", str(path), "Sigmoid", "--layer", "lstm", "--names", "--include-unused")
    assert every.stdout.split() == scope.find("Sigmoid", layer="lstm", include_unused=True).names
    assert len(every.stdout.split()) == 2 * len(used.stdout.split())


def test_compare_two_models_and_a_saved_run(saved, tmp_path, capsys):
    model, path, folder = saved
    other = keras.models.clone_model(model)
    weights = model.get_weights()
    other.set_weights(weights)
    kernel = other.get_layer("block2_1_conv").kernel
    kernel.assign(kernel.numpy() + 0.5)  # the copy's, not the model's
    other_path = tmp_path / "other.keras"
    other.save(other_path)
    x = folder / "x.npy"
    assert cli.main(["-q", "compare", path, path, "--input", str(x)]) == 0
    out = capsys.readouterr().out
    assert "all within tolerance" in out and "block2_1_conv" in out
    assert cli.main(["-q", "compare", path, str(other_path), "--input", str(x)]) == 1
    captured = capsys.readouterr()
    assert "first outside tolerance: block2_1_conv" in captured.out
    assert "block2_1_conv is the first of" in captured.err
    # every tensor, with a tolerance loose enough for nothing but the perturbed kernel's consequences
    assert cli.main(["-q", "compare", path, str(other_path), "--input", str(x), "--tensors", "--rtol", "0.5"]) == 1
    assert "block2_1_conv/" in capsys.readouterr().out
    # a store `extract` wrote, as the reference: a regression check
    store = tmp_path / "run.zarr"
    scope = gs.trace(model, quiet=True)
    scope.extract([lay.output for lay in scope.layers if lay.type != "InputLayer"], np.load(x), out=store, quiet=True)
    assert cli.main(["-q", "compare", str(other_path), str(store), "--input", str(x)]) == 1
    assert "first outside tolerance: block2_1_conv" in capsys.readouterr().out
    assert cli.main(["-q", "compare", path, str(store), "--input", str(x), "--atol", "0", "--rtol", "0"]) == 0
    with pytest.raises(SystemExit) as usage:
        cli.main(["compare", path, path, "--rtol", "-1"])
    assert usage.value.code == 2 and "expected a number >= 0" in capsys.readouterr().err


@keras.saving.register_keras_serializable(package="graphscope_tests_numerics")
class _Sqrt(keras.layers.Layer):
    def call(self, x):
        return tf.sqrt(x)


def test_numerics_from_the_terminal_exits_1_where_values_are_not_finite(saved, tmp_path, capsys):
    model, path, folder = saved
    assert cli.main(["-q", "numerics", path, "--input", str(folder / "x.npy")]) == 0
    assert "all finite" in capsys.readouterr().out
    x = np.load(folder / "x.npy").copy()
    x.flat[3] = np.nan  # a NaN in the input: the input is where it starts
    np.save(tmp_path / "nan.npy", x)
    assert cli.main(["-q", "numerics", path, "--input", str(tmp_path / "nan.npy")]) == 1
    out, err = capsys.readouterr()
    (name,) = gs.trace(model, quiet=True).inputs
    assert f"first: {name}" in out and f"they start at {name}" in err
    # backward: a sqrt at 0 after a relu; the gradient of sum(out) is infinite at the relu's output
    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="d1")(x_in)
    rooted = keras.Model(x_in, keras.layers.Dense(2, name="out")(_Sqrt(name="root")(h)))
    rooted.save(tmp_path / "rooted.keras")
    np.save(tmp_path / "r.npy", np.random.RandomState(5).randn(3, 4).astype("float32"))
    argv = ["-q", "numerics", str(tmp_path / "rooted.keras"), "--input", str(tmp_path / "r.npy")]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--backward", "out/BiasAdd:0"]) == 1
    out, err = capsys.readouterr()
    assert "first: d1/Relu:0" in out and "gradients of sum(out/BiasAdd:0)" in out and "d1/Relu:0" in err


def _numpy_figures(values, axis=-1):
    """Per channel (or whole, axis=None) figures of `values` by numpy, in float64."""
    v = np.asarray(values, np.float64)
    rows = v.reshape(-1, 1) if axis is None else np.moveaxis(v, axis, -1).reshape(-1, v.shape[axis])
    return {"count": [len(rows)] * rows.shape[1], "mean": rows.mean(0), "std": rows.std(0), "min": rows.min(0),
            "max": rows.max(0), "zero_fraction": (rows == 0).mean(0)}


def test_stats_from_the_terminal_equal_numpy_and_scope_statistics(saved, tmp_path, capsys):
    import json

    model, path, folder = saved
    x = models.sample_inputs(model, batch=10, seed=3)[0]
    np.save(tmp_path / "x10.npy", x)
    scope = gs.trace(model, quiet=True)
    fetches = ["block1_1_conv/Relu:0", "logits/BiasAdd:0"]
    values = scope.run(fetches, x)  # the oracle: every value, then numpy
    maxes = values["block1_1_conv/Relu:0"].reshape(-1, 4).max(0)
    threshold = float(np.sort(maxes)[1])  # at least two channels never exceed it
    out = tmp_path / "stats.json"
    argv = ["-q", "stats", path, *fetches, "--input", str(tmp_path / "x10.npy"), "--batch-size", "4",
            "--json", str(out), "--dead", repr(threshold)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed, err = capsys.readouterr()
    assert "statistics of 2 tensors over 10 samples (3 batches)" in printed
    dead = np.flatnonzero(maxes <= threshold).tolist()
    assert len(dead) >= 2
    assert f"block1_1_conv/Relu:0: {len(dead)} of 4 channels never above {threshold:g}: " \
           f"{', '.join(map(str, dead))}" in printed
    assert f"wrote the statistics of 2 tensor(s) to {out}" in err
    got = json.loads(out.read_text())
    assert (got["samples"], got["batches"]) == (10, 3) and list(got["tensors"]) == fetches
    assert got["dead"] == {"threshold": threshold, "tensors": {"block1_1_conv/Relu:0": dead, "logits/BiasAdd:0":
                           np.flatnonzero(values["logits/BiasAdd:0"].max(0) <= threshold).tolist()}}
    want = scope.statistics(fetches, x, batch_size=4, quiet=True)
    for name in fetches:
        entry, by_numpy = got["tensors"][name], _numpy_figures(values[name])
        assert entry["axis"] == values[name].ndim - 1 and entry["nonfinite"] == [0] * len(entry["count"])
        for field, numpy_value in by_numpy.items():
            # numpy in float64 over every value: float32 sums within about 1e-6 of the values' scale
            np.testing.assert_allclose(entry[field], numpy_value, rtol=1e-6, atol=1e-6, err_msg=f"{name} {field}")
            np.testing.assert_array_equal(entry[field], getattr(want[name], field))  # what Python gives
        assert entry["min"] == by_numpy["min"].tolist() and entry["max"] == by_numpy["max"].tolist()  # exact


def test_stats_of_a_preset_per_tensor_with_histograms(saved, tmp_path, capsys):
    import json

    model, path, folder = saved
    x = np.load(folder / "x.npy")
    scope = gs.trace(model, quiet=True)
    names = gs.presets.pre_activations(scope).names
    values = scope.run(names, x)
    out = tmp_path / "ranges.json"
    argv = ["-q", "stats", path, "--preset", "pre_activations", "--input", str(folder / "x.npy"), "--axis", "none",
            "--bins", "5", "--json", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"statistics of {len(names)} tensors over 2 samples (1 batch)")
    got = json.loads(out.read_text())["tensors"]
    assert list(got) == names
    for name in names:  # a calibration table: each tensor's range, exactly numpy's
        v = values[name].astype(np.float64)
        assert (got[name]["axis"], got[name]["min"], got[name]["max"]) == (None, v.min(), v.max())
        counts, edges = np.histogram(v, 5)
        assert got[name]["histogram"]["counts"] == counts.tolist()
        np.testing.assert_allclose(got[name]["histogram"]["edges"], edges, rtol=1e-12)
    # a channel with no finite value is null in the file (JSON has no NaN)
    nan = np.load(folder / "x.npy").copy()
    nan[..., 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    argv = ["-q", "stats", path, "image", "--input", str(tmp_path / "nan.npy"), "--json", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    (image,) = json.loads(out.read_text())["tensors"].values()
    assert image["mean"][1] is None and image["min"][1] is None and image["count"][1] == 0
    assert image["nonfinite"] == [0, nan[..., 1].size, 0]
    np.testing.assert_allclose(image["mean"][0], nan[..., 0].astype(np.float64).mean(), rtol=1e-6)


def test_stats_errors_are_one_line_in_the_commands_options(saved, tmp_path, capsys):
    _, path, folder = saved
    run = _cli("stats", path, "logits/BiasAdd:0", "--input", str(folder / "x.npy"), "--axis", "3")
    assert run.returncode == 1, run.stderr
    (line,) = run.stderr.strip().splitlines()  # no traceback; the way out as an option, not axis=None
    assert line.startswith("graphscope: error: 'logits/BiasAdd:0' has no axis 3: it is rank 2") and \
        "pass --axis none for one figure per tensor, or an axis from -2 to 1" in line and "axis=None" not in line, line
    for argv, message in [(("stats", path, "--input", "x.npy"), "stats needs FETCH"),
                          (("stats", path, "logits/BiasAdd:0"), "stats needs --input FILE"),
                          (("stats", "demo", "conv1/Relu:0", "--bins", "0"), "argument --bins: expected 1 or more"),
                          (("stats", "demo", "conv1/Relu:0", "--axis", "last"), "expected a whole number or none")]:
        with pytest.raises(SystemExit) as done:
            cli.main(list(argv))
        assert done.value.code == 2 and message in capsys.readouterr().err
