"""The conformance zoo: third-party models at tiny configs (keras-hub Tasks and their methods,
Keras 3 and tf_keras applications, recurrent and scan layers, mixed precision, a SavedModel's two
signatures, the Model Garden's Mask R-CNN where installed), each put through the same property
checks, one test function per property. Every oracle is independent of graphscope: the model
called eagerly, Keras sub-models, `tf.GradientTape`, numpy.

A model that fails a property fails the suite. A property a model cannot honestly have is listed
in `CANNOT` below, with the reason; nowhere else is anything skipped (a model whose library is not
installed is skipped by its builder)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
import keras
from graphscope.backend import tf_internals as _tf
from rich.cells import cell_len
from tests import zoo_models
from tests.conftest import text_at

pytestmark = pytest.mark.slow

# (case, property) -> why the case cannot have it. The one place a property is waived.
CANNOT: dict[tuple[str, str], str] = {
    ("gpt2.generate_step", "no_signature"): "a method: its arguments have no shapes until a signature gives them",
    ("bart.generate_step", "no_signature"): "a method: its arguments have no shapes until a signature gives them",
    ("retinanet.predict_step", "no_signature"): "a method: its arguments have no shapes until a signature gives them",
    ("mask_rcnn", "no_signature"): "a subclassed model called with an `image_shape=` keyword: no Keras inputs",
    ("gpt2", "gradient"): "its inputs are token ids and a mask (no float input)",
    ("gpt2.generate_step", "gradient"): "its inputs are token ids and a mask (no float input)",
    ("bert", "gradient"): "its inputs are token ids, segment ids and a mask (no float input)",
    ("bart", "gradient"): "its inputs are token ids and masks (no float input)",
    ("bart.generate_step", "gradient"): "its inputs are token ids and masks (no float input)",
    ("t5", "gradient"): "its inputs are token ids and masks (no float input)",
    ("llama", "gradient"): "its inputs are token ids and a mask (no float input)",
    ("mixtral", "gradient"): "its inputs are token ids and a mask (no float input)",
    ("albert", "gradient"): "its inputs are token ids, segment ids and a mask (no float input)",
    ("deberta_v3", "gradient"): "its inputs are token ids and a mask (no float input)",
    ("fnet", "gradient"): "its inputs are token ids and segment ids (no float input)",
    ("clip", "statistics"): "its logits compare every image with every text of the batch: a batch of one has others",
}

_BUILT: dict[str, Any] = {}


def _zoo(name: str) -> tuple[zoo_models.Case, gs.Scope]:
    """The case and its scope, built and traced once per session; a failure to build or trace
    is raised again by every property of the case."""
    if name not in _BUILT:
        try:
            case = zoo_models.CASES[name]()
            _BUILT[name] = (case, gs.trace(case.target, case.signature, quiet=True, **case.kwargs))
        except BaseException as error:  # noqa: BLE001  (pytest's Skipped too: kept and raised again)
            _BUILT[name] = error
    built = _BUILT[name]
    if isinstance(built, BaseException):
        raise built
    return built


@pytest.fixture(params=list(zoo_models.CASES))
def zoo(request):
    """A case's name; each property gets the case and its scope from `_zoo`, inside the test, so
    a model that cannot be built or traced fails every property (not as a fixture error)."""
    return request.param


def _waive(case: zoo_models.Case, prop: str) -> None:
    reason = CANNOT.get((case.name, prop))
    if reason:
        pytest.skip(reason)


# --------------------------------------------------------------------------- helpers

def _feed(case: zoo_models.Case, scope: gs.Scope) -> Any:
    """The case's sample as `scope.run` takes it: a dict by input name (a dict the model or
    method takes has its inputs named by its keys), a list, or one array."""
    if isinstance(case.inputs, dict):
        return {name: case.inputs[name] for name in scope.inputs}
    return case.inputs


def _by_key(structure: Any) -> dict[str, np.ndarray]:
    """A returned structure flattened to `{key: array}`, keys as `scope.output_keys` spells them."""
    return {key: np.asarray(value) for key, value in _paths(structure).items()}


def _paths(structure: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a/b": leaf}` for a nest of dicts, lists and tuples; `{"": leaf}` for a single leaf."""
    if isinstance(structure, dict):
        items = [(str(k), v) for k, v in structure.items()]
    elif isinstance(structure, (list, tuple)):
        items = [(str(k), v) for k, v in enumerate(structure)]
    else:
        return {prefix: structure}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(_paths(value, f"{prefix}/{key}" if prefix else key))
    return out


def _close(got: Any, want: Any, case: zoo_models.Case, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{case.name}: {what}: shape {got.shape}, Keras {want.shape}"
    if got.dtype.kind in "fc":
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=case.tolerance,
                                   atol=case.tolerance, err_msg=f"{case.name}: {what}")
    else:
        np.testing.assert_array_equal(got, want, err_msg=f"{case.name}: {what}")


def _keras_layers(case: zoo_models.Case) -> list[Any]:
    """Every Keras layer the model (or the model a SavedModel was saved from) owns, at any depth."""
    model = case.oracle
    if model is None:
        return []
    if hasattr(model, "_flatten_layers"):
        return list(model._flatten_layers(include_self=True, recursive=True))
    return [m for m in model.submodules if hasattr(m, "built")] + [model]


def _is_functional(layer: Any) -> bool:
    return bool(_tf.node_numbers(layer)) and hasattr(layer, "input")


def _keras_module(layer: Any) -> Any:
    """The Keras a layer belongs to: Keras 3, or tf_keras."""
    if type(layer).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    return keras


def _float(t: Any) -> bool:
    return t.dtype.startswith(("float", "bfloat", "half"))


# --------------------------------------------------------------------------- properties

def test_traces_without_a_signature_where_the_model_knows_its_inputs(zoo):
    case, scope = _zoo(zoo)
    _waive(case, "no_signature")
    assert case.signature is None, f"{case.name} was traced with a signature it should not need"
    assert scope.inputs and len(scope.model_graph.inputs) == len(scope.inputs)


# a segment ending in `_<n>`: Keras' or TensorFlow's uniquifying suffix, unless explained
_SUFFIXED = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")


def test_names_carry_no_suffix_from_a_reopened_scope(zoo):
    """No name starts with the root model's name (`image_classifier_1/...`); no input is named
    as Keras names its symbolic tensors (`keras_tensor_17`); in a name's layer path, a segment
    `x_<n>` where `x` is a layer and `x_<n>` is none is a layer's scope opened again; and the
    segment a layer call names its op or scope by (`BiasAdd_1`) is a layer's own name
    (`softmax_1`) or has `x` (or `x_0`) beside it in the same call (`MatMul_1` beside `MatMul`),
    else the call reopened a scope an earlier call opened (a shared layer's `BiasAdd_1`)."""
    case, scope = _zoo(zoo)
    root = scope.name
    own = {layer.name for layer in _keras_layers(case)} | {
        segment.split("@")[0] for lay in scope.layers for segment in lay.name.split("/")}
    names = list(scope.model_graph.tensors)
    paths = [name.rsplit(":", 1)[0].split("/") for name in names]
    tensors = scope.model_graph.tensors
    # TensorFlow uniquifies names ignoring case (`Add`, then `add_1`); `x` beside `x_1`: under the
    # same path, or anywhere in the same layer call (a loop body's argument is named after the
    # tensor it receives: `cumulative/while/body/strided_slice_1` for `cumulative/strided_slice_1`)
    present = {(tuple(p[:i]), p[i].split("@")[0].lower()) for p in paths for i in range(len(p))}
    in_call = {(tensors[n].layer, s.split("@")[0].lower()) for n, p in zip(names, paths) for s in p}
    inputs = set(scope.model_graph.inputs.names)
    wrong = [f"{name} (input named as Keras names its symbolic tensors, not as the model does)"
             for name in inputs if re.fullmatch(r"keras_tensor(_\d+)?:\d+", name)]
    for name, path in zip(names, paths):
        if name in inputs or tensors[name].is_handle and tensors[name].op_type == "Placeholder":
            continue  # inputs: checked above; a captured variable handle keeps TensorFlow's capture name
        if path[0] == root or re.fullmatch(re.escape(root) + r"_\d+", path[0]):
            wrong.append(f"{name} (starts with the root model's name)")
            continue
        layer = tensors[name].layer
        layer_depth = len(layer.split("/")) if layer else 0
        # the call's own segment: the first after the layer's last one; deeper ones are scopes TF
        # opens inside one op (`Repeat/concat/values_1`: the list's element 1, not a suffix)
        if layer is None:
            limit = 1  # an op of the model's own code: its name is its own segment
        else:
            last = max((k for k, seg in enumerate(path) if seg == layer.split("/")[-1]), default=None)
            limit = len(path) if last is None else last + 2
        for i, segment in enumerate(path[:limit]):
            bare = segment.split("@")[0]
            match = _SUFFIXED.match(bare)
            if match and i < layer_depth and match["base"] in own and bare not in own:
                wrong.append(f"{name} ({segment!r}: layer {match['base']!r}'s scope opened again)")
                break
            base = match["base"].lower() if match else ""
            # `x_1` beside `x` or `x_0` (TensorFlow numbers a list's elements: `concat/values_1`)
            if match and bare not in own and not {(tuple(path[:i]), base), (tuple(path[:i]), base + "_0")} & present \
                    and (tensors[name].layer, base) not in in_call:
                wrong.append(f"{name} ({segment!r} without {match['base']!r} beside it)")
                break
    assert not wrong, f"{case.name}: {len(wrong)} names with a suffix of a reopened scope: {wrong[:8]}"


def test_every_called_layer_has_ops_or_passes_its_input_through(zoo):
    case, scope = _zoo(zoo)
    records = scope.layers
    names = [lay.name for lay in records]
    assert len(set(names)) == len(names), f"{case.name}: Layer records share a name: " + str(
        sorted({n for n in names if names.count(n) > 1}))
    # a record with no ops, inputs or outputs stands for a layer that was not called (whisper's
    # attention computes its softmax with keras.ops, not its `softmax` layer): fine, unless a
    # functional model holds it, which calls every layer it holds
    functional = [case.model] if case.target is case.model and _is_functional(case.model) else []
    functional += [lay.keras_layer for lay in records if lay.keras_layer is not None and lay.ops
                   and _is_functional(lay.keras_layer)]
    held = {id(layer) for container in functional for layer in container.layers}
    idle = [lay for lay in records if not lay.ops and lay.type != "InputLayer"
            and (lay.inputs or lay.outputs or id(lay.keras_layer) in held)]
    if idle:
        values = scope.run([t for lay in idle for t in (*lay.inputs, *lay.outputs) if not t.is_handle],
                           _feed(case, scope))
    for lay in idle:  # no ops of its own: its output must be its input (Dropout at inference)
        assert lay.outputs and lay.inputs, f"{case.name}: {lay.name} ({lay.type}) has no ops and no output"
        got = [values[t.name] for t in lay.outputs if not t.is_handle]
        ins = [values[t.name] for t in lay.inputs if not t.is_handle]
        assert len(got) == len(ins) and all(np.array_equal(g, i) for g, i in zip(got, ins)), (
            f"{case.name}: {lay.name} ({lay.type}) has no ops but its output is not its input")
    if case.target is case.model and _is_functional(case.model):  # a functional model calls every layer
        called = {n.split("@")[0] for n in names}
        missing = [layer.name for layer in case.model.layers
                   if type(layer).__name__ != "InputLayer" and layer.name not in called]
        assert not missing, f"{case.name}: layers of the model without a record: {missing}"


def _submodel_checks(case: zoo_models.Case, scope: gs.Scope) -> tuple[list[tuple[Any, list[Any], Any, Any]], list[str]]:
    """(record, Keras symbolic outputs, Keras model to build from, input value maker) for every
    layer call inside a functional model whose record graphscope made: Keras builds a sub-model
    from the functional model's inputs to that call's output."""
    checks, read = [], []
    by_name = {lay.name: lay for lay in scope.layers}
    containers: list[tuple[str, Any, Any]] = []  # (path prefix, functional Keras model, inputs maker)
    if case.model is not None and case.target is case.model and _is_functional(case.model):
        containers.append(("", case.model, lambda values: case.inputs))
    elif case.model is None and case.oracle is not None:  # a SavedModel: its layers are the saved model's
        containers.append(("", case.oracle, lambda values: next(iter(case.inputs.values()))))
    for lay in scope.layers:
        if lay.keras_layer is not None and lay.keras_layer is not case.target and _is_functional(lay.keras_layer) \
                and lay.input_structure is not None:
            structure = lay.input_structure

            def maker(values, structure=structure):
                args = tf.nest.map_structure(lambda n: values[n], structure)
                return args[0] if isinstance(args, (tuple, list)) and len(args) == 1 else args

            containers.append((lay.name + "/", lay.keras_layer, maker))
            read.extend(n for n in tf.nest.flatten(structure) if isinstance(n, str))
    for prefix, container, maker in containers:
        for layer in container.layers:
            if type(layer).__name__ == "InputLayer":
                continue
            for k, outputs in enumerate(_tf.node_outputs(container, layer), start=1):
                record = by_name.get(prefix + layer.name + ("" if k == 1 else f"@{k}"))
                if record is not None and record.outputs:
                    checks.append((record, outputs, container, maker))
    return checks, read


def test_every_layer_output_equals_keras(zoo):
    """Top-level layer calls against `keras.Model(model.input, layer.output)`; calls inside a
    nested functional model against the same sub-model of it, fed what graphscope says its call
    was fed."""
    case, scope = _zoo(zoo)
    checks, read = _submodel_checks(case, scope)
    if not checks:  # a method calling sublayers directly (generate_step): Keras has no sub-model
        _each_call_equals_keras(case, scope)
        return
    needed = [t.name for record, _, _, _ in checks for t in record.outputs if not t.is_handle] + read
    values = scope.run(list(dict.fromkeys(needed)), _feed(case, scope))
    groups: dict[tuple[int, int], list] = {}  # by functional model and call of it (a shared one is called twice)
    compared = 0
    for check in checks:
        groups.setdefault((id(check[2]), id(check[3])), []).append(check)
    for group in groups.values():
        container, maker = group[0][2], group[0][3]
        k = _keras_module(container)
        symbolic = [out for _, outputs, _, _ in group for out in outputs]
        try:
            want = iter(tf.nest.flatten(k.Model(container.input, symbolic)(maker(values), training=False)))
        except ValueError:  # Keras cannot build a sub-model to one of them: each on its own
            want = None
        for record, outputs, _, _ in group:
            got = [values[t.name] for t in record.outputs if not t.is_handle]
            if want is None:
                try:
                    expected = [np.asarray(w) for w in
                                tf.nest.flatten(k.Model(container.input, outputs)(maker(values), training=False))]
                except ValueError:  # "not connected to inputs": Keras has no sub-model to this call
                    continue
            else:
                expected = [np.asarray(next(want)) for _ in outputs]
            compared += 1
            if len(got) < len(expected):  # one tensor returned twice (DINOv2's encoder: x, and x in a dict)
                expected = [w for j, w in enumerate(expected)
                            if not any(v.shape == w.shape and np.array_equal(v, w) for v in expected[:j])]
            assert len(got) == len(expected), f"{case.name}: {record.name}: {len(got)} outputs, Keras {len(expected)}"
            for g, w in zip(got, expected):
                _close(g, w, case, record.name)
    assert compared, f"{case.name}: Keras could build no sub-model to any layer call"


def _each_call_equals_keras(case: zoo_models.Case, scope: gs.Scope) -> None:
    """Every top-level layer call outside loops, called again eagerly by Keras on the values
    graphscope says it was passed, gives the outputs graphscope computes for it."""
    tensors = scope.model_graph.tensors
    calls = [lay for lay in scope.layers if "/" not in lay.name and lay.input_structure is not None
             and lay.outputs and lay.keras_layer is not None
             and all(t.context is None for t in (*lay.inputs, *lay.outputs))]
    assert calls, f"{case.name}: no layer call outside loops to compare with Keras"
    names = {n for lay in calls for n in tf.nest.flatten((lay.input_structure, lay.input_keywords))
             if isinstance(n, str) and n in tensors and not tensors[n].is_handle}
    values = scope.run(sorted(names | {t.name for lay in calls for t in lay.outputs if not t.is_handle}),
                       _feed(case, scope))

    def value(n: Any) -> Any:
        return values[n] if isinstance(n, str) and n in values else n

    for lay in calls:
        args = tf.nest.map_structure(value, lay.input_structure)
        kwargs = {k: tf.nest.map_structure(value, v) for k, v in (lay.input_keywords or {}).items()}
        want = tf.nest.flatten(lay.keras_layer(*args, **kwargs))
        got = [values[t.name] for t in lay.outputs if not t.is_handle]
        assert len(got) == len(want), f"{case.name}: {lay.name}: {len(got)} outputs, Keras {len(want)}"
        for g, w in zip(got, want):
            _close(g, np.asarray(w), case, f"{lay.name} called again by Keras")


def test_outputs_by_key_equal_the_models_own(zoo):
    case, scope = _zoo(zoo)
    want = _by_key(case.call(case.inputs))
    got = scope.run(scope.output_keys, _feed(case, scope))
    assert sorted(scope.output_keys) == sorted(want), f"{case.name}: keys {scope.output_keys}, model {sorted(want)}"
    for key in scope.output_keys:
        _close(got[key], want[key], case, f"output {key!r}")


def test_gradient_of_an_output_equals_gradient_tape(zoo):
    case, scope = _zoo(zoo)
    _waive(case, "gradient")
    floats = [t for t in scope.model_graph.inputs if _float(t)]
    assert floats, f"{case.name}: no float input (list it in CANNOT if it truly has none)"
    feed = _feed(case, scope)
    position = [t.name for t in scope.model_graph.inputs].index(floats[0].name)
    name = scope.inputs[position]
    if isinstance(case.inputs, dict):
        key = name if name in case.inputs else name.removeprefix("d_")
        watched = {k: tf.constant(v) for k, v in case.inputs.items()}
        x = watched[key]
    elif isinstance(case.inputs, list):
        watched = [tf.constant(v) for v in case.inputs]
        x = watched[position]
    else:
        watched = x = tf.constant(case.inputs)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        outputs = _paths(case.call(watched))
        sums = {k: tf.reduce_sum(tf.cast(v, tf.float32)) for k, v in outputs.items() if v.dtype.is_floating}
    key = next((k for k in scope.output_keys if k in sums and tape.gradient(sums[k], x) is not None), None)
    assert key is not None, f"{case.name}: no float output depends on {name}"
    want = tape.gradient(sums[key], x)
    got = scope.gradients(scope.output(key), [name], feed)[name]
    _close(got, np.asarray(want), case, f"d sum(output {key!r}) / d {name}")


def test_gradients_wrt_the_models_weights_equal_gradient_tape(zoo):
    # a weight given as itself is found by its handle: Keras 3 names the TensorFlow variables of
    # layers a model builds during a call after the model alone (MiT's `hierarchical_encoder_0_0/
    # kernel` for eight kernels), and a name lookup gave another weight's gradient
    case, scope = _zoo(zoo)
    _waive(case, "gradient")
    _waive(case, "weight_gradient")
    if isinstance(case.target, str) or case.model is None:
        pytest.skip("a SavedModel's variables are its own, not the model's")
    inputs = case.inputs
    watched = ({k: tf.constant(v) for k, v in inputs.items()} if isinstance(inputs, dict)
               else [tf.constant(v) for v in inputs] if isinstance(inputs, list) else tf.constant(inputs))
    weights = [w for w in case.model.trainable_weights if tf.as_dtype(w.dtype).is_floating]
    with tf.GradientTape(persistent=True) as tape:
        outputs = _paths(case.call(watched))
        sums = {k: tf.reduce_sum(tf.cast(v, tf.float32)) for k, v in outputs.items() if v.dtype.is_floating}
    values = [w if isinstance(w, tf.Variable) else w.value for w in weights]
    key = next((k for k in scope.output_keys if k in sums), None)
    assert key is not None, f"{case.name}: no float output"
    want = tape.gradient(sums[key], values)
    reached = [i for i, g in enumerate(want) if g is not None and not isinstance(g, tf.IndexedSlices)]
    chosen = reached[:: max(1, len(reached) // 6)][:6] + reached[-1:]
    assert chosen, f"{case.name}: no weight reaches output {key!r}"
    got = scope.gradients(scope.output(key), [weights[i] for i in chosen], _feed(case, scope))
    for i, g in zip(chosen, got.values()):
        _close(g, want[i].numpy(), case, f"d sum(output {key!r}) / d {getattr(weights[i], 'path', weights[i].name)}")


def _middle(scope: gs.Scope) -> Any:
    """A float top-level layer output half way through the model, outside loops, that an
    output depends on."""
    outputs = {t.name for t in scope.outputs}
    candidates = [t for t in gs.presets.layer_outputs(scope) if _float(t) and t.context is None
                  and t.name not in outputs and outputs & set(scope.descendants(t).names)]
    assert candidates, "no float layer output outside loops that an output depends on"
    return candidates[len(candidates) // 2]


def test_an_identity_edit_changes_nothing_and_a_zero_edit_changes_what_lies_downstream(zoo):
    case, scope = _zoo(zoo)
    middle = _middle(scope)
    downstream = set(scope.descendants(middle).names)
    fetches = [t for t in (*scope.outputs, *gs.presets.layer_outputs(scope)) if t.name in downstream and _float(t)]
    fetches = list({t.name: t for t in (*scope.outputs, *fetches)}.values())
    feed = _feed(case, scope)
    base = scope.run(fetches, feed)
    same = scope.run(fetches, feed, edits={middle: lambda v: v})
    for t in fetches:
        np.testing.assert_array_equal(same[t.name], base[t.name], err_msg=f"{case.name}: identity edit at {middle.name}")
    zero = scope.run(fetches, feed, edits={middle: tf.zeros_like})
    changed = [t.name for t in fetches if t.name in downstream and not np.array_equal(zero[t.name], base[t.name])]
    assert changed, f"{case.name}: zeroing {middle.name} changed nothing downstream"


_ACTIVATION_LAYERS = {"Activation", "ReLU", "Softmax", "ELU", "LeakyReLU"}
_WITH_ACTIVATION = {"Dense", "EinsumDense", "BaseConv", "Conv", "Conv1D", "Conv2D", "BaseDepthwiseConv",
                    "DepthwiseConv2D", "BaseSeparableConv", "SeparableConv2D", "Conv2DTranspose"}


def _activates(layer: Any) -> bool:
    """Whether `layer`'s output is an activation's (a layer that is one, or a fused `activation=`)."""
    classes = {c.__name__ for c in type(layer).__mro__}
    if classes & _ACTIVATION_LAYERS:
        return getattr(getattr(layer, "activation", None), "__name__", "") != "linear"
    if classes & _WITH_ACTIVATION:
        activation = getattr(layer, "activation", None)
        return activation is not None and getattr(activation, "__name__", "linear") != "linear"
    return False


def test_presets_find_what_the_model_has(zoo):
    case, scope = _zoo(zoo)
    feed = _feed(case, scope)
    if "transformer" in case.kinds:
        attention = gs.presets.attention(scope)
        assert attention, f"{case.name}: no attention probabilities found"
        probs = scope.run(attention[:4], feed)
        for t in attention[:4]:
            values = probs[t.name] if isinstance(probs[t.name], list) else [probs[t.name]]  # per iteration in loops
            assert values and all(np.allclose(np.sum(np.asarray(v), axis=-1), 1.0, atol=1e-3) for v in values), t.name
    unused = scope.unused  # a call no output needs (generate_step's prefill of the last layer): not offered
    expected = [lay for lay in scope.layers if lay.ops and not all(t.op in unused for t in lay.outputs)
                and _activates(lay.keras_layer if lay.keras_layer is not None else _oracle_layer(case, lay))]
    assert expected or not any(_activates(layer) for layer in _keras_layers(case)), (
        f"{case.name}: layers with activations but no record of their calls")
    pre = gs.presets.pre_activations(scope)
    found = {t.layer for t in pre}

    def has_pre(lay: Any) -> bool:  # inside the call (a fused activation), or its input (an Activation layer)
        return bool(set(lay.inputs.names) & set(pre.names)) or any(
            f == lay.name or (f or "").startswith(lay.name + "/") for f in found)

    missing = [lay.name for lay in expected if not has_pre(lay)]
    assert not missing, f"{case.name}: no pre-activation found in {len(missing)} activated layer calls: {missing[:8]}"
    if "classifier" in case.kinds:
        logits = gs.presets.logits(scope)
        assert len(logits) == 1, f"{case.name}: logits preset gave {logits.names}"
        values = scope.run([logits[0], scope.outputs[0]], feed)
        z = values[logits[0].name].astype(np.float64)
        softmax = np.exp(z - z.max(-1, keepdims=True))
        softmax /= softmax.sum(-1, keepdims=True)
        np.testing.assert_allclose(softmax, values[scope.outputs[0].name], rtol=case.tolerance, atol=case.tolerance)


def _oracle_layer(case: zoo_models.Case, lay: Any) -> Any:
    """The Keras layer a name-scope record stands for (a SavedModel's), from the model it was
    saved from."""
    try:
        return case.oracle.get_layer(lay.name.split("@")[0].split("/")[0]) if case.oracle is not None else None
    except ValueError:
        return None


def test_unused_ops_are_those_tensorflow_prunes(zoo):
    """What graphscope leaves out of queries as unused is what TensorFlow's own pruning of each
    graph and body drops (the presets' and queries' idea of the model rests on it), and no op
    an output needs is among it."""
    import networkx as nx

    from tests.ir.test_query import _unused_by_tensorflow

    case, scope = _zoo(zoo)
    G = scope.graph
    expected = {G.graph["names"][raw] for raw in _unused_by_tensorflow(scope.function.graph)}
    assert set(scope.unused) == expected, f"{case.name}: {sorted(set(scope.unused) ^ expected)[:8]}"
    outputs = {scope.tensor(n).op for n in scope.outputs.names}
    assert not outputs.union(*(nx.ancestors(G, op) for op in outputs)) & set(scope.unused), case.name


def test_the_layer_tree_renders_at_80_columns(zoo):
    case, scope = _zoo(zoo)
    tree = scope.layer_tree()
    text = text_at(tree, width=80)
    lines = text.splitlines()
    long = [line for line in lines if cell_len(line) > 80]
    assert not long, f"{case.name}: {len(long)} lines over 80 columns: {long[:3]}"
    # every layer's label is shown whole in the first column (folded under its guide lines, not cut)
    header = next(k for k, line in enumerate(lines) if line.lstrip().startswith("layer "))
    width = lines[header].index(" type ") + 1
    column = "".join(re.sub(r"[│├└─▸\s]", "", line[:width]) for line in lines[header + 2:])
    position = 0
    for _, label, _, _ in tree.rows:
        label = re.sub(r"[▸\s]", "", label)
        found = column.find(label, position)
        assert found >= 0, f"{case.name}: layer {label!r} is not shown whole at 80 columns:\n{text}"
        position = found + len(label)
    assert len(tree.rows) >= 2, f"{case.name}: an empty tree"


def test_compare_with_keras_own_layer_values(zoo):
    """`gs.compare` of the model with a mapping of Keras' own values, one per layer call Keras
    builds a sub-model to (as in `test_every_layer_output_equals_keras`): those rows, and only
    they, are paired, every one within the case's tolerance, the errors numpy's; and the model
    compared with itself has every layer output paired and equal."""
    case, scope = _zoo(zoo)
    feed = _feed(case, scope)
    itself = gs.compare(scope, scope, feed)
    assert itself.rows and not itself.unmatched, f"{case.name}: {itself.unmatched}"
    assert all(r.max_abs == 0 or r.note for r in itself.rows), f"{case.name}: {itself.first}"
    checks, read = _submodel_checks(case, scope)
    dead = scope.model_graph.unused  # compare leaves out what no output needs (DeepLabV3's unused stacks)
    checks = [c for c in checks if len(c[0].outputs) == 1 and not c[0].output.is_handle and c[0].output.context is None
              and c[0].output.op not in dead]
    values = scope.run(list(dict.fromkeys(read)), feed) if read else {}
    want: dict[str, np.ndarray] = {}
    for record, outputs, container, maker in checks:
        try:
            (value,) = tf.nest.flatten(_keras_module(container).Model(container.input, outputs)(maker(values),
                                                                                                training=False))
        except ValueError:  # Keras has no sub-model to this call
            continue
        want[record.name] = np.asarray(value)
    if not want:  # a method calling sublayers directly: Keras has no sub-model
        return
    cmp = gs.compare(scope, want, feed, rtol=case.tolerance, atol=case.tolerance)
    assert {r.name for r in cmp.rows} == set(want) and not cmp.unmatched.b, f"{case.name}: {cmp.unmatched.b}"
    assert cmp.ok, f"{case.name}: {cmp.first}"
    position = {name: k for k, name in enumerate(scope.graph)}
    ranks = [position[scope.tensor(r.tensor).op] for r in cmp.rows]
    assert ranks == sorted(ranks), f"{case.name}: rows out of topological order"
    got = scope.run([r.tensor for r in cmp.rows], feed)
    for r in cmp.rows[:: max(1, len(cmp.rows) // 8)]:  # the errors are numpy's (a sample of rows)
        d = np.abs(np.asarray(got[r.tensor], np.float64) - np.asarray(want[r.name], np.float64))
        np.testing.assert_allclose(r.max_abs, d.max() if d.size else 0.0, rtol=1e-5, atol=1e-12,
                                   err_msg=f"{case.name}: {r.name}")


def test_statistics_equal_numpy_over_the_models_own_outputs(zoo):
    """`scope.statistics` of every numeric output (per channel; per tensor for outputs of rank 1
    or less), over the case's samples one batch each (the whole sample where the batch size is
    fixed): counts exact, the rest numpy's float64 figures over the model's own outputs."""
    case, scope = _zoo(zoo)
    _waive(case, "statistics")
    want = _by_key(case.call(case.inputs))
    keys = [k for k in scope.output_keys if want[k].dtype.kind in "fiub" and want[k].size]
    assert keys, f"{case.name}: no numeric output"
    fixed = any(t.shape and t.shape[0] is not None for t in scope.model_graph.inputs)
    feed = _feed(case, scope)
    for axis in (-1, None):
        chosen = [k for k in keys if (want[k].ndim >= 2) == (axis is not None)]
        if not chosen:
            continue
        stats = scope.statistics([scope.output(k) for k in chosen], feed, batch_size=None if fixed else 1, axis=axis,
                                 quiet=True)
        for k in chosen:
            got, value = stats[scope.output(k).name], want[k].astype(np.float64)
            rows = value.reshape(-1, 1) if axis is None else value.reshape(-1, value.shape[-1])
            finite = np.isfinite(rows)
            np.testing.assert_array_equal(np.atleast_1d(got.count), finite.sum(0), err_msg=f"{case.name}: {k} count")
            masked = np.where(finite, rows, np.nan)
            for f, fn in (("mean", np.nanmean), ("std", np.nanstd), ("min", np.nanmin), ("max", np.nanmax)):
                np.testing.assert_allclose(np.atleast_1d(getattr(got, f)), fn(masked, 0), rtol=case.tolerance,
                                           atol=case.tolerance, err_msg=f"{case.name}: {k} {f}")
