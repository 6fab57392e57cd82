"""notebooks/: every notebook runs top to bottom without an error, and shows what it promises."""

import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def _text(nb):
    """Everything the notebook printed or displayed, as one string."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def _outputs(nb, mime):
    return [out["data"][mime] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if mime in out.get("data", {})]


def test_the_notebooks_are_the_eight_listed():
    assert [p.name for p in NOTEBOOKS] == [
        "01_tour.ipynb", "02_vgg19_preactivations.ipynb", "03_mask_rcnn_nms.ipynb", "04_cutting_resnet50.ipynb",
        "05_grad_cam_vgg19.ipynb", "06_activation_patching.ipynb", "07_where_it_goes_wrong.ipynb",
        "08_dataset_statistics.ipynb",
    ]


# what 07_where_it_goes_wrong shows, each printed only after the notebook's own check by hand (Keras
# sub-models, tf.GradientTape, numpy) has passed; and the tables and the plot it shows them in
WHERE_IT_GOES_WRONG = [
    "origin compress/Log:0: finite inputs, 17 NaN where 1 + embed < 0: agree",
    "the tape's gradient is non-finite for the padded sample only, where the sqrt's input is 0: agree",
    "first layer that differs by hand: fc2; gs.compare: fc2: agree",
]


def _checked_by_hand(nb, lines):
    """Assert the notebook printed each of `lines` (its checks by hand); its HTML outputs, joined."""
    text = _text(nb)
    for line in lines:
        assert line in text
    return "\n".join(_outputs(nb, "text/html"))


def _shows_where_it_goes_wrong(nb):
    html = _checked_by_hand(nb, WHERE_IT_GOES_WRONG)
    assert "first: compress/Log:0" in html and "compress/add:0 → compress/Log:0" in html  # the forward table
    assert "first: magnitude/Sum:0" in html and "gradients of sum(score/Add:0)" in html  # the backward one
    assert "DIFFERS ◀ first" in html and "first outside tolerance: fc2" in html  # the comparison's table
    assert len(_outputs(nb, "image/png")) == 1  # Comparison.plot


# what 08_dataset_statistics shows, each printed only after the notebook's own check by hand (numpy over
# Keras sub-models' values, np.histogram of the concatenated values); and the tables and plots it shows
DATASET_STATISTICS = [
    "dead by hand: relu2 [5, 11], relu3 [0, 10], relu1 none; per-channel mean, std, min, max, zeros: agree",
    "outlier feature by hand: 7 in ln1 and ln2; per-feature std: agree",
    "most drifted channels by hand: [11, 15, 4]; shift per channel: agree",
    "pre-activation ranges and 64-bin histograms by hand: conv1, conv2, conv3; 7 levels: agree",
]


def _shows_dataset_statistics(nb):
    html = _checked_by_hand(nb, DATASET_STATISTICS)
    assert "statistics of 3 tensors over 256 samples (4 batches)" in html  # the dead-filter hunt's table
    assert "relu2/Relu:0 (float32): 16 channels of axis 3" in html  # one row per channel, the dead marked
    assert re.findall(r"^ +(\d+) .* dead *$", html, re.M) == ["5", "11"]
    assert "statistics of 2 tensors over 128 samples" in html and "ln1/add_2:0" in html  # the hidden states
    assert "histogram" in html and "conv2/BiasAdd:0" in html  # the calibration ranges' table
    assert len(_outputs(nb, "image/png")) == 2  # Statistics.plot per channel, and one tensor's histogram


def _saved_executed(stem):
    """A notebook stored executed: every code cell has its outputs (the first, imports only, may have
    none), and none is an error."""
    (path,) = [p for p in NOTEBOOKS if p.stem == stem]
    nb = nbformat.read(path, as_version=4)
    assert all(cell.get("outputs") or cell.source.startswith("import os") for cell in nb.cells
               if cell.cell_type == "code")
    assert not [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    return nb


def test_where_it_goes_wrong_is_saved_with_its_outputs():
    """07 is stored executed, so that it shows its results where it is read without running it (after a
    change: `jupyter nbconvert --to notebook --execute --inplace notebooks/07_where_it_goes_wrong.ipynb`)."""
    _shows_where_it_goes_wrong(_saved_executed("07_where_it_goes_wrong"))


def test_dataset_statistics_is_saved_with_its_outputs():
    """08 is stored executed too (after a change, as 07; TensorFlow's start-up lines on stderr, if any,
    taken out of the imports cell's outputs)."""
    _shows_dataset_statistics(_saved_executed("08_dataset_statistics"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    html = "\n".join(_outputs(nb, "text/html"))
    assert "<pre" in html  # graphscope's tables and trees, rendered for the notebook
    if path.stem in ("02_vgg19_preactivations", "05_grad_cam_vgg19", "06_activation_patching"):
        assert _outputs(nb, "image/png")  # the histogram, the Grad-CAM maps, the patching heatmap
    if path.stem == "05_grad_cam_vgg19":
        assert "graphscope and the Keras sub-model agree at the layer output" in _text(nb)
        assert len(_outputs(nb, "image/png")) >= 3  # the feature maps (Results.plot) and two overlays
    if path.stem == "06_activation_patching":
        assert "restores the clean logit exactly: agree" in _text(nb)
    if path.stem in ("01_tour", "03_mask_rcnn_nms"):
        assert "NonMaxSuppressionV3:0" in _text(nb)
        assert _outputs(nb, "image/svg+xml") or "install Graphviz" in html  # the picture, or how to get it
        assert "agree" in _text(nb) or "kept" in _text(nb)  # checked by hand
    if path.stem == "04_cutting_resnet50":
        assert "cut at conv2_block1_add/Add:0" in _text(nb)
        assert "DisconnectedError:" in _text(nb)
    if path.stem == "07_where_it_goes_wrong":
        _shows_where_it_goes_wrong(nb)  # as run now, not only as saved
    if path.stem == "08_dataset_statistics":
        _shows_dataset_statistics(nb)
