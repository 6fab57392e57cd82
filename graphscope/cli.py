"""The `graphscope` command line: demo, tree, find, run, grad, export, draw, extract, open, validate,
compare, numerics, stats.

Exit codes: 0 success, 1 a graphscope error (one line on stderr; the traceback with `--debug`),
2 a usage error (argparse's message). MODEL is a `.keras`/`.h5` file, a SavedModel directory,
or `demo` (`demo:map_fn` for the tf.map_fn variant).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

EXAMPLES = """examples:
  graphscope demo                               trace the built-in demo model, find and run its NMS
  graphscope tree demo                          the demo model's layers as a tree
  graphscope find demo NonMaxSuppression        tensors whose name matches a regex
  graphscope find model.keras --preset logits   the input of the final softmax
  graphscope run demo 'ROI/.*NonMaxSuppressionV3:0' --out nms.npz
  graphscope run model.keras logits/BiasAdd:0 --input x.npy --edit block4_conv3/Relu:0=saved.npy
  graphscope grad model.keras logits/BiasAdd:0 --wrt input_1 block5_conv4/BiasAdd:0 --input x.npy --out grads.npz
  graphscope export model.keras --format graphml --out model.graphml
  graphscope tree saved_model/ --signature embed  a SavedModel's other signature (default: serving_default)
  graphscope draw demo ROI --out roi.svg
  graphscope extract demo:map_fn 'ROI/.*NonMaxSuppressionV3:0' --out run.zarr
  graphscope open run.zarr
  graphscope validate demo
  graphscope compare model.keras port.keras --input x.npy   where a port starts to give other values
  graphscope numerics model.keras --input x.npy --backward logits/BiasAdd:0   where NaN/Inf start
  graphscope stats model.keras --preset pre_activations --input x.npy --dead   per-channel statistics

MODEL is a .keras/.h5 file, a SavedModel directory, or `demo` (`demo:map_fn`: the tf.map_fn
variant); --signature NAME picks one of a SavedModel's signatures. Each command has its own --help.
"""

_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (one-line help, description, examples)
    "demo": (
        "run the built-in demo model (no downloads)",
        "Build a small Mask R-CNN-like model with random weights, find the NMS op inside its "
        "custom ROI layer by an ancestor walk, and run it on a synthetic image.",
        "  graphscope demo\n  graphscope demo --variant map_fn",
    ),
    "tree": (
        "print a model's layers as a tree",
        "Print the layers as a tree: type, output shape, parameters, ops, and marks where paths "
        "fork, join, and where the model can be cut (every path from the inputs passes there). "
        "Long runs of layers fold by name prefix; --depth or --pattern opens them.",
        "  graphscope tree demo\n  graphscope tree model.keras --depth 2\n"
        "  graphscope tree demo --pattern ROI --ops     the ROI layer's ops, loops as subtrees",
    ),
    "find": (
        "search tensors by name, op type or ancestry",
        "List tensors whose canonical name matches PATTERN (a Python regex, searched), "
        "optionally only ops of a type, or only ancestors/descendants of a tensor or layer.",
        "  graphscope find demo BiasAdd\n"
        "  graphscope find demo --op-type 'NonMaxSuppression.*' --ancestors-of ROI\n"
        "  graphscope find demo --cut-points\n"
        "  graphscope find model.keras --preset pre_activations   before every activation\n"
        "  graphscope find demo Relu --names          one name per line, for scripts",
    ),
    "run": (
        "run tensors on inputs and save or show their values",
        "Run the named tensors (canonical names, or regexes standing for every tensor they match) "
        "on arrays read from .npy/.npz files (never unpickled). `--input x.npy` feeds the "
        "model's inputs in order; `--input NAME=x.npy` feeds the tensor NAME (a model input or "
        "any tensor outside loops: the model is then run from there). Values are shown as a "
        "table and, with --out, saved to an .npz keyed by tensor name. `--edit NAME=FILE` patches "
        "the tensor NAME with the array in FILE (broadcast to its shape) on this run: everything "
        "downstream is computed from it. `--plot DIR` writes a picture of each value (feature maps, "
        "attention heads, heatmaps, one row per loop iteration) as DIR/<name>.png.",
        "  graphscope run demo 'ROI/.*NonMaxSuppressionV3:0'       demo: synthetic images\n"
        "  graphscope run model.keras logits/BiasAdd:0 --input x.npy --edit conv2/Relu:0=clean.npy\n"
        "  graphscope run model.keras block4_conv3/BiasAdd:0 --input x.npy --out values.npz\n"
        "  graphscope run model.keras predictions/Softmax:0 --input pool1_pool/MaxPool2d:0=act.npy",
    ),
    "grad": (
        "gradients of a tensor with respect to inputs, tensors or weights",
        "Compute the gradient of OF (a tensor name or output key, summed over every entry) with "
        "respect to each --wrt: a model input, any tensor outside loop bodies (a pre-activation "
        "inside a layer included) or a variable by path (conv1/kernel), on the --input arrays. "
        "Shown as a table and, with --out, saved to an .npz keyed by the --wrt names.",
        "  graphscope grad demo rpn_bbox/Reshape:0 --wrt input_image conv1/kernel\n"
        "  graphscope grad model.keras logits/BiasAdd:0 --wrt input_1 conv1/kernel --input x.npy --out grads.npz",
    ),
    "export": (
        "write the op graph as GraphML, DOT or JSON, or for TensorBoard",
        "Write every op (nested functions, loop and branch bodies included) and the tensors "
        "between them, with plain string/number attributes, to standard output or --out.",
        "  graphscope export demo --format graphml --out demo.graphml\n"
        "  graphscope export model.keras --format tensorboard --out logs/   then: tensorboard --logdir logs/\n"
        "  graphscope export model.keras --format json | jq '.nodes | length'",
    ),
    "draw": (
        "draw the neighbourhood of a tensor or layer (SVG)",
        "Draw NAME (a tensor, op or layer) and its ancestors up to --radius ops away, grouped "
        "by layer, loops and branches as clusters: SVG (needs Graphviz's `dot`) or DOT text.",
        "  graphscope draw demo ROI --out roi.svg\n"
        "  graphscope draw demo 'rpn_class/Softmax:0' --radius 5 --format dot",
    ),
    "extract": (
        "run tensors over a dataset into a zarr store (resumable)",
        "Run the named tensors (names or regexes) over every sample of --input (a .npy/.npz, "
        "read memory-mapped) or --images (a directory of images, read with Keras' image-dataset "
        "utility at --size H W, in file-name order), and write them to the zarr store --out, "
        "one chunk per batch. Run the same command again after an interruption to continue "
        "where it stopped. The demo models use synthetic images when no input is given.",
        "  graphscope extract demo:map_fn 'ROI/.*NonMaxSuppressionV3:0' --out run.zarr\n"
        "  graphscope extract model.keras block4_conv3/BiasAdd:0 --images photos/ --size 224 224 --out run.zarr",
    ),
    "open": (
        "show what a saved run holds (no model needed)",
        "Show the tensors a store written by `extract` holds (layout, dtype, entries), or with "
        "NAME one stored tensor, and with --index one entry's value.",
        "  graphscope open run.zarr\n"
        "  graphscope open run.zarr 'ROI/map/while/rpn_non_max_suppression/NonMaxSuppressionV3:0' --index 3",
    ),
    "validate": (
        "replay every op on its own inputs and compare with Keras",
        "Fetch every op's inputs and outputs (or only FETCH's ops) on --input, replay each op "
        "alone from its fetched inputs, and compare layer outputs with a Keras sub-model's. "
        "Prints checked / mismatches / skipped; exit status 1 when anything disagrees.",
        "  graphscope validate demo\n  graphscope validate model.keras --input x.npy",
    ),
    "compare": (
        "compare two models (or a model and a saved run) layer by layer",
        "Run MODEL and MODEL_B once each on --input and compare every layer output paired by layer "
        "path (--tensors: every tensor, by canonical name): max |a-b|, max relative error, cosine, "
        "in a's topological order, in float64. A row is within tolerance when |a-b| <= atol + "
        "rtol*|b| everywhere (numpy.allclose, MODEL_B the reference). MODEL_B may also be a store "
        "`extract` wrote (a regression check against an earlier run on the same inputs). Exit "
        "status 1 when a row is outside tolerance.",
        "  graphscope compare model_tf_keras.h5 model_keras3.keras --input x.npy\n"
        "  graphscope compare model.keras mixed_precision.keras --input x.npy --rtol 1e-2 --atol 1e-3\n"
        "  graphscope compare model.keras run.zarr --input x.npy --tensors",
    ),
    "numerics": (
        "find where NaN or Inf values start (forward, or in a backward pass)",
        "Count NaN, +Inf and -Inf in every float tensor on --input (inside the graph, about one "
        "forward pass) and print the origins: the tensors holding them while their own inputs are "
        "finite, with layer, op, counts, inputs' ranges and the chain from the layer boundary. "
        "With --backward TENSOR, the same for the gradient of sum(TENSOR). Exit status 1 when "
        "anything is non-finite, 0 otherwise (a CI step).",
        "  graphscope numerics model.keras --input x.npy\n"
        "  graphscope numerics model.keras --input x.npy --backward logits/BiasAdd:0",
    ),
    "stats": (
        "statistics of tensors over a dataset: per-channel moments, ranges, dead units",
        "Reduce each FETCH (names or regexes; --preset adds a selection by meaning) over every "
        "sample of --input, inside the graph, to per-channel count, mean, std (population), min, "
        "max, fraction of zeros and non-finite count (NaN and Inf are counted and left out of the "
        "rest), without storing the values: memory stays flat whatever the dataset's size. "
        "--axis picks the channel axis (default -1, the last; `none`: one figure per tensor); "
        "--bins N also counts each channel's values in N equal bins between its min and max (a "
        "second pass). Prints a table; --dead lists the channels that never exceed THRESHOLD "
        "(default 0); --json writes every figure, per channel, to a file (NaN, where a channel "
        "had no finite value, written as null).",
        "  graphscope stats model.keras block4_conv3/Relu:0 --input x.npy --dead\n"
        "  graphscope stats model.keras --preset pre_activations --input x.npy --axis none --json ranges.json\n"
        "  graphscope stats model.keras logits/BiasAdd:0 --input x.npy --axis none --bins 64",
    ),
}


def _input_option(command: argparse.ArgumentParser, help_: str) -> None:
    """`--input [NAME=]FILE`, repeatable: arrays to feed, by position or by input name."""
    command.add_argument("--input", dest="inputs", action="append", default=[], metavar="[NAME=]FILE", help=help_)


def _edit_option(command: argparse.ArgumentParser, help_: str) -> None:
    """`--edit NAME=FILE`, repeatable: a tensor replaced with an array."""
    command.add_argument("--edit", dest="edits", action="append", default=[], metavar="NAME=FILE", help=help_)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphscope",
        description="Look inside a TensorFlow/Keras model and run any tensor you find there.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmd = {}
    for name, (help_, description, examples) in _SUBCOMMANDS.items():
        cmd[name] = sub.add_parser(
            name,
            help=help_,
            description=description,
            epilog="examples:\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "open":
            cmd[name].add_argument("store", metavar="STORE", help="a directory `graphscope extract` wrote")
        elif name != "demo":
            cmd[name].add_argument("model", metavar="MODEL", help="a .keras/.h5 file, a SavedModel directory, or demo")
            cmd[name].add_argument("--signature", metavar="NAME",
                                   help="which signature of a SavedModel to trace (default: serving_default)")

    cmd["demo"].add_argument("--variant", choices=("loop", "map_fn"), default="loop",
                             help="how the ROI layer loops over the batch (default: loop)")

    cmd["tree"].add_argument("--depth", type=_natural, help="levels to show (default: as many as fit in ~60 rows)")
    cmd["tree"].add_argument("--pattern", help="only layers whose path matches this regex")
    cmd["tree"].add_argument("--ops", action="store_true", help="list each layer's ops (loops and branches as subtrees)")
    cmd["tree"].add_argument("--limit", type=_natural, default=60, help="rows to show without --depth or --pattern (default 60)")

    cmd["find"].add_argument("pattern", metavar="PATTERN", nargs="?", help="regex searched in tensor names")
    cmd["find"].add_argument("--op-type", help="only ops whose type fully matches this regex")
    cmd["find"].add_argument("--layer", help="only tensors created inside this layer")
    walk = cmd["find"].add_mutually_exclusive_group()
    walk.add_argument("--ancestors-of", metavar="NAME", help="only tensors upstream of NAME (a tensor or layer)")
    walk.add_argument("--descendants-of", metavar="NAME", help="only tensors downstream of NAME")
    walk.add_argument("--cut-points", action="store_true", help="only tensors every path from the inputs passes through")
    walk.add_argument("--preset", choices=("pre_activations", "logits", "attention", "layer_outputs"),
                      help="a selection by meaning: before each activation, the final softmax's input, "
                           "attention probabilities, or every layer's output")
    cmd["find"].add_argument("--names", action="store_true", help="print names only, one per line")
    cmd["find"].add_argument("--include-unused", action="store_true",
                             help="also list tensors no output depends on (left out by default)")

    cmd["run"].add_argument("fetches", metavar="FETCH", nargs="+", help="tensor names (or regexes: every match)")
    _input_option(cmd["run"], ".npy/.npz arrays to feed; repeat for several inputs (demo: optional)")
    cmd["run"].add_argument("--out", metavar="FILE.npz", help="save the values to this .npz")
    cmd["run"].add_argument("--plot", metavar="DIR",
                            help="write a picture of each fetched value to DIR (one PNG per tensor; needs matplotlib)")
    _edit_option(cmd["run"], "replace tensor NAME with the array in FILE (.npy/.npz), broadcast to its shape")
    cmd["grad"].add_argument("of", metavar="OF", help="the tensor (or output key) to differentiate, summed")
    cmd["grad"].add_argument("--wrt", nargs="+", required=True, metavar="NAME",
                             help="model inputs, tensors or variable paths to differentiate with respect to")
    _input_option(cmd["grad"], "a .npy/.npz per model input, in order (or NAME=FILE); default for demo: synthetic images")
    _edit_option(cmd["grad"], "replace tensor NAME with the array in FILE, as for run")
    cmd["grad"].add_argument("--out", metavar="FILE.npz", help="save the gradients to this .npz")

    cmd["export"].add_argument("--format", required=True, choices=("graphml", "dot", "json", "tensorboard"))
    cmd["export"].add_argument("--out", metavar="FILE", help="write here instead of standard output "
                                                             "(tensorboard: the log directory, required)")

    cmd["draw"].add_argument("name", metavar="NAME", help="a tensor, op or layer name")
    cmd["draw"].add_argument("--radius", type=_natural, default=3, help="how many ops upstream to include (default 3)")
    cmd["draw"].add_argument("--format", choices=("svg", "dot"), help="default: from --out's suffix, else svg")
    cmd["draw"].add_argument("--out", metavar="FILE", help="write here instead of standard output")

    cmd["extract"].add_argument("fetches", metavar="FETCH", nargs="+", help="tensor names (or regexes: every match)")
    source = cmd["extract"].add_mutually_exclusive_group()
    source.add_argument("--input", dest="inputs", action="append", default=[], metavar="FILE",
                        help=".npy/.npz with one entry per sample; repeat for several inputs")
    source.add_argument("--images", metavar="DIR", help="a directory of images (jpeg, png, bmp, gif)")
    cmd["extract"].add_argument("--size", type=_natural, nargs=2, metavar=("H", "W"), help="image size (with --images)")
    cmd["extract"].add_argument("--batch-size", type=_positive,
                                help="samples per batch and chunk (default 32, or the batch size the model fixes)")
    cmd["extract"].add_argument("--out", required=True, metavar="STORE", help="the zarr store's directory")

    cmd["open"].add_argument("name", metavar="NAME", nargs="?", help="one stored tensor")
    cmd["open"].add_argument("--index", type=int, help="show this entry's value (sample, or batch)")

    cmd["validate"].add_argument("fetches", metavar="FETCH", nargs="*", help="only these tensors' ops (default: every op)")
    _input_option(cmd["validate"], ".npy/.npz arrays to feed (demo: optional)")
    cmd["compare"].add_argument("model_b", metavar="MODEL_B",
                                help="the model to compare with (as MODEL), or a directory `extract` wrote")
    cmd["compare"].add_argument("--signature-b", metavar="NAME",
                                help="which signature of MODEL_B, a SavedModel, to trace (default: --signature's)")
    _input_option(cmd["compare"], ".npy/.npz arrays both models are fed (demo: optional)")
    cmd["compare"].add_argument("--tensors", action="store_true",
                                help="pair every tensor by canonical name (default: layer outputs by layer path)")
    cmd["compare"].add_argument("--rtol", type=_tolerance, default=1e-5, help="relative tolerance (default 1e-5)")
    cmd["compare"].add_argument("--atol", type=_tolerance, default=1e-6, help="absolute tolerance (default 1e-6)")
    _input_option(cmd["numerics"], ".npy/.npz arrays to feed, one per model input (demo: optional)")
    cmd["numerics"].add_argument("--backward", metavar="TENSOR",
                                 help="check the gradient of sum(TENSOR) instead (after a finite forward pass)")
    _edit_option(cmd["numerics"], "replace tensor NAME with the array in FILE, as for run")
    cmd["stats"].add_argument("fetches", metavar="FETCH", nargs="*", help="tensor names (or regexes: every match)")
    _input_option(cmd["stats"], ".npy/.npz with one entry per sample, one per model input, in order (or "
                                "NAME=FILE), read memory-mapped (demo: optional)")
    cmd["stats"].add_argument("--preset", choices=("pre_activations", "logits", "attention", "layer_outputs"),
                              help="also every tensor of a selection by meaning (as for find --preset)")
    cmd["stats"].add_argument("--axis", type=_axis, default=-1, metavar="none|INT",
                              help="the channel axis (default -1, the last); none: one figure per tensor")
    cmd["stats"].add_argument("--bins", type=_positive, metavar="N", help="also a histogram of N equal bins per channel")
    cmd["stats"].add_argument("--batch-size", type=_positive, metavar="N",
                              help="samples per batch (default 32, or the batch size the model fixes)")
    cmd["stats"].add_argument("--dead", type=float, nargs="?", const=0.0, metavar="THRESHOLD",
                              help="list the channels whose values never exceed THRESHOLD (default 0); "
                                   "give it after the FETCHes, or with a value")
    cmd["stats"].add_argument("--json", metavar="FILE", help="write every figure, per channel, to this JSON file")
    return parser


def _axis(text: str) -> int | None:
    """argparse type: an axis (an int, negative from the end) or `none`."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or none, got {text!r}") from None


def _natural(text: str) -> int:
    """argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    """argparse type: an int >= 1."""
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, oneDNN notices) silenced.

    Those lines are written before TensorFlow's logging is configured, so no environment
    variable hides them; the file descriptor of stderr is pointed at /dev/null for the import only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing also logs (cuInit)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _scope(model: str, quiet: bool, *, free_batch: bool = False, signature: str | None = None) -> Any:
    """The traced MODEL (its `signature`, for a SavedModel); `free_batch`: the map_fn demo with
    a free batch size (for datasets)."""
    import graphscope as gs

    if model in ("demo", "demo:loop", "demo:map_fn"):
        from graphscope import demo

        variant = model.partition(":")[2] or "loop"
        batch = None if free_batch and variant == "map_fn" else 2
        return gs.trace(demo.proposal_model(variant=variant, batch_size=batch), quiet=quiet, signature=signature)
    return gs.trace(model, quiet=quiet, signature=signature)


def _fetch_names(scope: Any, items: Sequence[str]) -> list[str]:
    """Each item: an exact tensor name, else a regex standing for every tensor it matches."""
    from graphscope.errors import GraphscopeError

    names: list[str] = []
    for item in items:
        try:
            names.append(scope.tensor(item).name)
            continue
        except GraphscopeError as not_a_name:
            error = not_a_name
        try:
            found = scope.find(item)
        except GraphscopeError:  # not a valid regex either: the name error says more
            raise error from None
        if not found:
            raise error
        names.extend(n for n in found.names if n not in names)
    return names


def _run(scope: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    inputs, feeds = _given(scope, args, parser)
    return scope.run(_fetch_names(scope, args.fetches), inputs, feeds=feeds, edits=_edits(args, parser))


def _grad(scope: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    inputs, feeds = _given(scope, args, parser)
    return scope.gradients(args.of, args.wrt, inputs, feeds=feeds, edits=_edits(args, parser))


def _given(scope: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Any, list[str] | None]:
    """What --input gives (a dict by name, a tuple of positional arrays, or one array) and the
    feeds it implies: none for model inputs (the default feeds); for any other tensor, exactly
    the named ones (the model is run from there)."""
    named, positional = _inputs(args, parser)
    if named:
        return named, (list(named) if any(n not in scope.inputs for n in named) else None)
    return (tuple(positional) if len(positional) > 1 else positional[0]), None


def _edits(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any] | None:
    """--edit NAME=FILE: the arrays that replace tensors."""
    from graphscope.data.sources import read_array

    edits: dict[str, Any] = {}
    for spec in args.edits:
        name, sep, path = spec.rpartition("=")
        if not sep or not name or not path:
            parser.error(f"--edit takes NAME=FILE (a tensor name and a .npy/.npz file), got {spec!r}")
        value = read_array(path)
        if isinstance(value, dict):
            if len(value) != 1:
                parser.error(f"--edit {spec!r}: {path} holds {len(value)} arrays; give a file with one")
            (value,) = value.values()
        edits[name] = value
    return edits or None


def _inputs(args: argparse.Namespace, parser: argparse.ArgumentParser, *, mmap: bool = False,
            demo_samples: int | None = None) -> tuple[dict[str, Any], list[Any]]:
    """--input arrays: by name (NAME=FILE), or positional (memory-mapped with `mmap`); the
    demo's synthetic images if none (`demo_samples` of them, or one batch)."""
    from graphscope.data.sources import read_array

    named: dict[str, Any] = {}
    positional: list[Any] = []
    for spec in args.inputs:
        name, sep, path = spec.rpartition("=")
        if sep and name:
            named[name] = read_array(path, mmap=mmap)
        else:
            value = read_array(spec, mmap=mmap)
            positional.extend(value.values() if isinstance(value, dict) else [value])
    if named and positional:
        parser.error("give every --input as NAME=FILE, or none of them")
    if not named and not positional:
        if not args.model.startswith("demo"):
            parser.error(f"{args.command} needs --input FILE (one per model input) or --input NAME=FILE")
        from graphscope import demo

        positional = [demo.synthetic_images() if demo_samples is None else demo.synthetic_images(demo_samples, seed=1)]
    return named, positional


def _extract(scope: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    fetches = _fetch_names(scope, args.fetches)
    batch_size = args.batch_size
    if args.size and not args.images:
        parser.error("--size goes with --images")
    if args.images:
        if not args.size:
            parser.error("--images needs --size H W (the size images are resized to)")
        import keras

        from graphscope.errors import InputError

        if not os.path.isdir(args.images):
            raise InputError(f"--images {args.images!r} is not a directory; give a directory of image files")
        try:
            data = keras.utils.image_dataset_from_directory(
                args.images, labels=None, image_size=tuple(args.size), batch_size=batch_size or 32,
                shuffle=False, verbose=False,
            )
        except ValueError as e:  # Keras: no images found, or a bad size
            raise InputError(
                f"cannot read images from {args.images!r}: {e}; give a directory holding .jpeg, .png, "
                ".bmp or .gif files and --size H W of at least 1"
            ) from None
        batch_size = None  # the dataset is batched already
    elif args.inputs:
        from graphscope.data.sources import read_array

        arrays: list[Any] = []
        for path in args.inputs:
            value = read_array(path, mmap=True)
            arrays.extend(value.values() if isinstance(value, dict) else [value])
        data = arrays[0] if len(arrays) == 1 else arrays
    elif args.model.startswith("demo"):
        from graphscope import demo

        data = demo.synthetic_images(64, seed=1)
    else:
        parser.error("extract needs --input FILE (one per model input) or --images DIR --size H W")
    return scope.extract(fetches, data, out=args.out, batch_size=batch_size, quiet=args.quiet)


def _plots(values: Any, folder: str) -> list[str]:
    """One PNG per value (`Results.plot`), named after the tensor (`/` and `:` as `_`)."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, value in values.items():
        if value is None:  # a branch that did not run: nothing to draw
            continue
        path = os.path.join(folder, name.replace("/", "_").replace(":", "_") + ".png")
        values.plot(name).savefig(path, dpi=100)
        written.append(path)
    return written


def _save_npz(path: str, values: dict[str, Any]) -> list[str]:
    """Save values keyed by tensor name; per-iteration lists as `name#k`. Returns what was left out."""
    import numpy as np

    arrays, skipped = {}, []
    for name, value in values.items():
        if value is None:
            skipped.append(name)
        elif isinstance(value, list):
            for k, item in enumerate(value):
                if item is None:
                    skipped.append(f"{name}#{k}")
                else:
                    arrays[f"{name}#{k}"] = item
        else:
            arrays[name] = value
    np.savez(path, **arrays)
    return skipped


def _write(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)


def _command(args: argparse.Namespace, parser: argparse.ArgumentParser, console: Any) -> None:
    if args.command == "demo":
        from graphscope import demo

        for renderable in demo.report(variant=args.variant):
            _show(console, renderable)
        return
    if args.command == "open":
        import graphscope as gs

        bundle = gs.open(args.store)
        if args.name is None:
            if args.index is not None:
                parser.error("--index goes with NAME")
            _show(console, bundle)
            return
        stored = bundle[args.name]
        _show(console, repr(stored))
        if args.index is not None:
            from graphscope.errors import OptionError
            from graphscope.ir.records import Results

            if not -len(stored) <= args.index < len(stored):
                raise OptionError(
                    f"--index {args.index} is out of range: {stored.name!r} has {len(stored)} entries "
                    f"(give 0 to {len(stored) - 1}, or -1 for the last)"
                )
            _show(console, Results({f"{stored.name}[{args.index}]": stored[args.index]}))
        return
    if args.command == "stats":  # usage errors before loading anything
        if not args.fetches and not args.preset:
            parser.error("stats needs FETCH... (tensor names or regexes) or --preset NAME")
        if not args.inputs and not args.model.startswith("demo"):
            parser.error("stats needs --input FILE (one per model input, one entry per sample) or --input NAME=FILE")
    scope = _scope(args.model, args.quiet, free_batch=args.command in ("extract", "stats"), signature=args.signature)
    if args.command == "tree":
        _show(console, scope.layer_tree(depth=args.depth, pattern=args.pattern, ops=args.ops, limit=args.limit))
    elif args.command == "find":
        from graphscope.ir.query import narrow

        if args.preset:
            from graphscope.ir.presets import PRESETS

            found = PRESETS[args.preset](scope)
        elif args.cut_points:
            found = scope.cut_points()
        elif args.ancestors_of:
            found = scope.ancestors(args.ancestors_of, include_unused=args.include_unused)
        elif args.descendants_of:
            found = scope.descendants(args.descendants_of, include_unused=args.include_unused)
        else:
            found = scope.find(include_unused=args.include_unused)
        found = narrow(found, args.pattern, op_type=args.op_type, layer=args.layer)
        if args.names:
            for name in found.names:
                print(name)
        else:
            _show(console, found)
    elif args.command in ("run", "grad"):
        values = (_run if args.command == "run" else _grad)(scope, args, parser)
        _show(console, values)
        if args.out:
            skipped = _save_npz(args.out, values)
            note = f" (left out, not run: {', '.join(skipped)})" if skipped else ""
            print(f"wrote {len(values) - len(skipped)} value(s) to {args.out}{note}", file=sys.stderr)
        if getattr(args, "plot", None):
            written = _plots(values, args.plot)
            print(f"wrote {len(written)} picture(s) to {args.plot}", file=sys.stderr)
    elif args.command == "export":
        if args.format == "tensorboard":
            if not args.out:
                parser.error("--format tensorboard writes an event file: give --out DIR, then run tensorboard --logdir DIR")
            written = scope.export("tensorboard", args.out)
            print(f"wrote {written}; view it with: tensorboard --logdir {args.out}", file=sys.stderr)
        else:
            _write(scope.export(args.format), args.out)
    elif args.command == "extract":
        bundle = _extract(scope, args, parser)
        _show(console, bundle)
        print(f"wrote {bundle.samples} samples to {bundle.path}", file=sys.stderr)
    elif args.command == "validate":
        inputs, _ = _given(scope, args, parser)  # validate runs the whole model: its inputs
        report = scope.validate(inputs, fetches=_fetch_names(scope, args.fetches) if args.fetches else None)
        _show(console, report)
        if not report.ok:
            raise _Disagree(f"{len(report.mismatches)} value(s) disagree")
    elif args.command == "compare":
        _compare(scope, args, parser, console)
    elif args.command == "numerics":
        inputs, feeds = _given(scope, args, parser)
        report = scope.numerics(inputs, feeds=feeds, edits=_edits(args, parser), backward=args.backward)
        _show(console, report)
        if not report.ok:
            where = f": they start at {report.first.name}" if report.first is not None else ""
            raise _Disagree(f"non-finite values in {len(report.bad)} tensor(s){where}")
    elif args.command == "stats":
        _stats(scope, args, parser, console)
    elif args.command == "draw":
        picture = scope.draw(args.name, radius=args.radius)
        fmt = args.format or ("dot" if args.out and args.out.endswith((".dot", ".gv")) else "svg")
        _write(picture.source if fmt == "dot" else picture.svg(), args.out)


def _compare(scope: Any, args: argparse.Namespace, parser: argparse.ArgumentParser, console: Any) -> None:
    """compare: MODEL against MODEL_B (a model, or a store `extract` wrote), one run each."""
    import graphscope as gs
    from graphscope.data.store import is_store

    inputs, feeds = _given(scope, args, parser)
    if feeds:
        parser.error("compare feeds the models' inputs: give --input FILE, or NAME=FILE for a model input")
    if is_store(args.model_b):
        b = gs.open(args.model_b)
    else:  # a SavedModel is traced at the signature MODEL's was, unless --signature-b names another
        saved = os.path.isdir(args.model_b) and args.model_b != "demo"
        signature = args.signature_b or (args.signature if saved else None)
        b = _scope(args.model_b, args.quiet, signature=signature)
    report = gs.compare(scope, b, inputs, match="tensors" if args.tensors else "layers",
                        rtol=args.rtol, atol=args.atol)
    _show(console, report)
    if report.first is not None:
        raise _Disagree(f"{report.first.name} is the first of {sum(not r.ok for r in report.rows)} row(s) "
                        "outside tolerance")


def _stats(scope: Any, args: argparse.Namespace, parser: argparse.ArgumentParser, console: Any) -> None:
    """stats: the fetches' statistics over --input, as a table; the dead channels; the JSON file."""
    fetches = _fetch_names(scope, args.fetches)
    if args.preset:
        from graphscope.ir.presets import PRESETS

        fetches += [n for n in PRESETS[args.preset](scope).names if n not in fetches]
    if not fetches:
        from graphscope.errors import ArgumentError

        raise ArgumentError(f"--preset {args.preset} finds no tensor in this model; name the tensors as FETCH")
    from graphscope.errors import GraphscopeError

    named, positional = _inputs(args, parser, mmap=True, demo_samples=64)  # a dataset: memory-mapped
    data: Any = named or (positional[0] if len(positional) == 1 else positional)
    batch_size = args.batch_size
    if batch_size is None and not args.inputs and args.model in ("demo", "demo:loop"):
        batch_size = 2  # the loop demo's fixed batch size
    try:
        stats = scope.statistics(fetches, data, batch_size=batch_size, axis=args.axis, bins=args.bins,
                                 quiet=args.quiet)
    except GraphscopeError as e:
        if e.command_line is None:  # the way out, in this command's options
            e.command_line = _as_options(str(e))
        raise
    _show(console, stats)
    dead = stats.dead(args.dead) if args.dead is not None else None
    if dead is not None:
        for key, channels in dead.items():
            s = stats[key]
            shown = ", ".join(map(str, channels[:20].tolist())) + (", ..." if len(channels) > 20 else "")
            if s.axis is None:
                line = f"{key}: {'never' if len(channels) else 'sometimes'} above {args.dead:g}"
            else:
                line = (f"{key}: {len(channels)} of {s.entries} channel{'s' if s.entries != 1 else ''} never above "
                        f"{args.dead:g}" + (f": {shown}" if len(channels) else ""))
            console.print(line, crop=False, highlight=False, markup=False)
    if args.json:
        import json

        figures = _json_ready(stats.to_dict())
        if dead is not None:
            figures["dead"] = {"threshold": args.dead, "tensors": {k: v.tolist() for k, v in dead.items()}}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, allow_nan=False)
        print(f"wrote the statistics of {len(stats)} tensor(s) to {args.json}", file=sys.stderr)


def _as_options(message: str) -> str:
    """A statistics error's advice, in `stats`' options instead of Python's arguments."""
    for python, option in (("axis=None", "--axis none"), ("bins=", "--bins "), ("batch_size=", "--batch-size "),
                           ("batch_size", "--batch-size")):
        message = message.replace(python, option)
    return message


def _json_ready(value: Any) -> Any:
    """NaN (a channel with no finite value) as null: JSON has no NaN (nor Inf)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _show(console: Any, renderable: Any) -> None:
    """Print without cropping: a name longer than the terminal is wider stays one line (the
    terminal wraps it), so that it can be copied whole."""
    console.print(renderable, crop=False)


class _Disagree(Exception):
    """validate found mismatches, numerics non-finite values: exit status 1, the report already
    printed."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `graphscope` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.debug and args.command != "open":  # a saved run opens without TensorFlow
        _quiet_tensorflow_import()
    from rich.console import Console

    from graphscope.errors import GraphscopeError

    console = Console()
    try:
        _command(args, parser, console)
        return 0
    except (GraphscopeError, OSError) as e:  # OSError: an unwritable --out, an unreadable directory...
        if args.debug:
            raise
        # the message as the command line's user reads it, where it differs (options, not arguments)
        print(f"graphscope: error: {getattr(e, 'command_line', None) or e}", file=sys.stderr)
        return 1
    except _Disagree as e:
        print(f"graphscope: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
