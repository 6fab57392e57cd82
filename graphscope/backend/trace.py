"""model | path | tf.function  ->  a concrete function, plus the Keras call structure behind it
(recorded by `graphscope.backend.keras_calls` while tracing; the model is left as it was)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import json
import os
import random
import re
import warnings
import zipfile
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.keras_calls import TRACE_LOCK, LayerCall, fresh_helpers, keras_attributes, keras_roots, recording
from graphscope.errors import (
    GraphscopeError, GuessedInputsWarning, InputError, ModelLoadError, OptionError, UnsupportedModelError,
    outside_stacklevel, suggestion,
)
from graphscope.ir.records import shape_text

__all__ = ["Traced", "load_model", "output_keys", "trace_function"]


@dataclasses.dataclass
class Traced:
    """What tracing produced: the function, and what is known about where its ops come from."""

    function: Any  # ConcreteFunction
    name: str
    input_names: list[str]  # in the order the model or function declares its inputs
    model: Any = None  # the Keras root layer, when there is one
    root_call: LayerCall | None = None
    calls: list[LayerCall] = dataclasses.field(default_factory=list)
    training: bool = False
    source: str = "keras"  # keras | module | function | concrete_function | saved_model
    # what must stay alive for the function to run: a loaded SavedModel owns its variables
    owner: Any = dataclasses.field(default=None, repr=False)
    # where each named input is among the function's flat inputs (None: in the same order);
    # they differ where TensorFlow sorts keyword arguments by name (a SavedModel signature)
    input_positions: list[int] | None = None
    # the arguments the function or model is called with, in order: each argument's name and
    # its nest (dicts, lists, tuples) with each tensor replaced by its input's position in
    # `input_names`; a plain int for an argument that is one tensor (None: not known)
    arguments: list[tuple[str, Any]] | None = None

    @property
    def output_keys(self) -> list[str]:
        """The key or path of each flat output in the structure the function returns: a dict's
        keys (`detection_boxes`), a list's positions (`0`), paths into nested ones
        (`features/p3`); `""` for a single tensor. In the order of the function's outputs."""
        return output_keys(self.function.structured_outputs, len(self.function.outputs))


def output_keys(structure: Any, count: int) -> list[str]:
    """The path of each leaf of `structure`, in `tf.nest.flatten` order (dict keys sorted), one
    per output; positions when the structure does not account for `count` outputs.

    >>> output_keys({"scores": 1, "boxes": [2, 3]}, 3)
    ['boxes/0', 'boxes/1', 'scores']
    >>> output_keys(7, 1)
    ['']
    """
    paths: list[str] = []

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                walk(value[key], (*path, str(key)))
        elif isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple: its fields, in order
            for key, item in zip(value._fields, value):
                walk(item, (*path, key))
        elif isinstance(value, (list, tuple)):
            for k, item in enumerate(value):
                walk(item, (*path, str(k)))
        elif value is not None:
            paths.append("/".join(path))

    walk(structure, ())
    return paths if len(paths) == count else [str(k) for k in range(count)]


def trace_function(
    model: Any, input_signature: Any = None, *, training: bool = False, safe_mode: bool = True,
    signature: str | None = None,
) -> Traced:
    """Trace `model` into a ConcreteFunction and record its Keras call structure.

    Args:
        model: a Keras 3 or tf_keras model or layer, a `tf.Module` with `__call__`, a
            `tf.function` or any callable, a ConcreteFunction, or a path to a `.keras`/`.h5`
            file or a SavedModel directory.
        input_signature: `tf.TensorSpec`s or shapes, one per positional input, or dicts,
            lists and tuples of them (a bare dict: the one input); optional when the model
            knows its inputs. Inputs inside a nest are named by their path (`_nested_names`).
        training: trace the training-mode graph (dropout active, batch norm in training mode).
            For a callable or a tf.Module, the Keras layers it calls without `training=` take
            this mode, as if it were the `call` of a Keras layer called with `training=True`;
            refused (OptionError) where nothing takes it: a ConcreteFunction, a SavedModel's
            functions, a function that calls no Keras layer.
        safe_mode: load `.keras` files in Keras' safe mode, which refuses to deserialize Python
            code (lambdas); pass False only for files you trust.
        signature: the name of the SavedModel signature to trace (a SavedModel directory, or a
            loaded SavedModel); by default its `serving_default`.
    """
    if signature is not None:
        _check_signature_option(model, signature, input_signature)
    if isinstance(model, (str, os.PathLike)):
        loaded = load_model(model, safe_mode=safe_mode, as_keras=signature is None)
        if signature is not None and not hasattr(loaded, "signatures"):
            _check_signature_option(loaded, signature, input_signature)
        if signature is not None:
            _check_signature_name(loaded.signatures, signature, f"the SavedModel at {str(model)!r}")
        if _tf.is_keras_layer(loaded):
            traced = _trace_keras(loaded, input_signature, training)
        else:
            traced = _trace_module(loaded, input_signature, training, signature)
            traced.source = "saved_model"
            if not _has_own_name(loaded):  # named by its folder, whichever signature is traced
                traced.name = Path(model).name
        traced.owner = loaded
        return traced
    if _tf.is_keras_layer(model):  # Keras 3, or Keras 2 (tf_keras)
        return _trace_keras(model, input_signature, training)
    if isinstance(model, tf.types.experimental.ConcreteFunction):
        if training:
            raise OptionError(
                f"cannot trace the ConcreteFunction {_concrete_name(model)!r} with training=True: it is already "
                "traced, in the mode it was traced in; pass the tf.function or the model it came from instead"
            )
        return _from_concrete(model, name=_concrete_name(model), source="concrete_function")
    if isinstance(model, tf.types.experimental.PolymorphicFunction):
        return _trace_callable(model, input_signature, training)
    if isinstance(model, tf.Module) or hasattr(model, "signatures"):  # loaded SavedModels too
        return _trace_module(model, input_signature, training, signature)
    if callable(model):  # a lambda, a function, a bound method such as model.predict_step
        return _trace_callable(model, input_signature, training)
    raise UnsupportedModelError(
        f"cannot trace an object of type {type(model).__module__}.{type(model).__qualname__}: "
        "expected a Keras model or layer (Keras 3 or tf_keras), a tf.Module with __call__, a tf.function "
        "or any callable, a ConcreteFunction, or a path to a .keras/.h5 file or a SavedModel directory"
    )


def load_model(path: str | os.PathLike, *, safe_mode: bool = True, as_keras: bool = True) -> Any:
    """Load a `.keras`/`.h5` file (Keras, `safe_mode=True` by default) or a SavedModel directory;
    with `as_keras`, a SavedModel tf_keras saved with its default serving signature (the model's
    call) as the tf_keras model, so that its layers are known (`_keras2_saved_model`)."""
    p = Path(path)
    if not p.exists():
        hint = ""
        if isinstance(path, str) and not p.suffix and os.sep not in path:
            hint = (
                "; to trace a model by name, build it and pass the object, e.g. "
                f"gs.trace(keras.applications.{path}(weights=None))"
                if hasattr(keras.applications, path)
                else "; gs.trace takes a model object or the path of a saved model"
            )
        raise ModelLoadError(
            f"no model at {str(path)!r}: the path does not exist "
            f"(expected a .keras or .h5 file, or a SavedModel directory){hint}"
        )
    if p.is_dir():
        if not (p / "saved_model.pb").exists() and not (p / "saved_model.pbtxt").exists():
            raise ModelLoadError(
                f"{str(path)!r} is a directory but not a SavedModel (no saved_model.pb in it)"
            )
        try:
            loaded = tf.saved_model.load(str(p))
        except Exception as e:  # noqa: BLE001 - TF raises many unrelated types here
            raise ModelLoadError(
                f"could not load the SavedModel at {str(path)!r}: {_first_line(e)} "
                "(re-export it with model.export(path) or tf.saved_model.save)"
            ) from None
        if as_keras and (p / "keras_metadata.pb").exists() and _tf.keras2_default_serving(loaded):
            return _keras2_saved_model(p, safe_mode) or loaded
        return loaded
    suffix = p.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelLoadError(
            f"do not know how to load {str(path)!r}: expected a .keras or .h5 file, "
            "or a SavedModel directory"
        )
    # Keras draws seeds for the loaded layers' random generators from Python's global `random`;
    # its state is put back, so loading a file does not change the user's random stream
    state = random.getstate()
    keras2 = _saved_by_keras2(p)
    try:
        if keras2 is not None:
            return _load_keras2(p, keras2, safe_mode)
        return keras.saving.load_model(str(p), compile=False, safe_mode=safe_mode)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001
        why = _load_failure(e, "tf_keras" if keras2 is not None else "keras")
        python = "pass safe_mode=False to gs.trace"
        raise ModelLoadError(
            f"could not load {str(path)!r}: {why}",
            command_line=f"could not load {str(path)!r}: " + why.replace(
                python, f"trace it from Python with gs.trace({str(path)!r}, safe_mode=False) (the command line "
                "loads in safe mode)"),
        ) from None
    finally:
        random.setstate(state)


def _saved_by_keras2(path: Path) -> str | None:
    """The Keras version a `.keras` or `.h5` file records, where it is 2.x: a file tf_keras
    (or Keras 2) saved, which Keras 3 reads wrongly or not at all (a `.keras` file's classes are
    tf_keras', a GRU's `.h5` config holds `time_major`). None for any other file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version", "")
        else:
            import h5py  # a dependency of Keras

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version", "")
    except Exception:  # noqa: BLE001 - not a file Keras saved: Keras' own load says why
        return None
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version if version.startswith("2.") else None


def _load_keras2(path: Path, version: str, safe_mode: bool) -> Any:
    """A file Keras 2 saved, loaded by tf_keras; without tf_keras, by Keras 3 where it can."""
    try:
        import tf_keras
    except ImportError:
        try:
            return keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(
                f"could not load {str(path)!r}: it was saved by Keras 2 (tf_keras {version}), and Keras 3 "
                f"cannot read it ({_first_line(e)}); install tf_keras to load it with the Keras that saved "
                'it: pip install "tf-graphscope[keras2]"'
            ) from None
    return _tf_keras_load(tf_keras, path, safe_mode)


def _tf_keras_load(tf_keras: Any, path: Path, safe_mode: bool) -> Any:
    """tf_keras' `load_model`, its safe mode honoured for every format (`tf_keras_safe_mode`)."""
    with _tf.tf_keras_safe_mode(safe_mode):
        return tf_keras.models.load_model(str(path), compile=False, safe_mode=safe_mode)


def _keras2_saved_model(path: Path, safe_mode: bool) -> Any:
    """The tf_keras model of a SavedModel tf_keras saved, whose serving function is the model's
    call (so tracing the model traces what the SavedModel serves), loaded by tf_keras in its safe
    mode (a Lambda or a class it lacks is revived from the functions the file holds, no Python
    code run); None where tf_keras is not installed or cannot load it: then its functions are
    traced, their layers read from the name scopes."""
    try:
        import tf_keras
    except ImportError:
        return None
    state = random.getstate()  # tf_keras draws seeds for loaded layers from Python's `random`
    try:
        return _tf_keras_load(tf_keras, path, safe_mode)
    except Exception:  # noqa: BLE001 - a SavedModel tf_keras cannot revive: its functions do
        return None
    finally:
        random.setstate(state)


def _load_failure(e: BaseException, loader: str = "keras") -> str:
    """Why Keras (`loader`: "keras", or "tf_keras" for a file Keras 2 saved) could not load a
    file, and what to do: the cause Keras buries in its message."""
    text = f"{e}\n{e.__context__ or ''}"
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '([^']+)'"
                        r"|Cannot deserialize object of type `([^`]+)`", text)
    if missing or "Unknown layer" in text:
        what = f"the custom class {next(filter(None, missing.groups()))!r}" if missing else "a custom class"
        return (
            f"the file uses {what}, which is not registered: import the module that defines it, "
            f"decorated with @{loader}.saving.register_keras_serializable(), before tracing"
        )
    if "safe_mode" in text:
        return (
            "the file holds Python code (a Lambda layer's function), which Keras' safe mode "
            "refuses to load; if you trust the file, pass safe_mode=False to gs.trace"
        )
    if loader == "tf_keras":
        return f"{_first_line(e)} (the file is damaged; save it again with model.save)"
    return f"{_first_line(e)} (the file is damaged, or not saved by Keras 3; save it again with model.save)"


# --------------------------------------------------------------------------- Keras models


def _trace_keras(model: Any, input_signature: Any, training: bool) -> Traced:
    if not model.built and input_signature is None:
        # with a signature, the first trace builds the model, as calling it once on data would
        raise UnsupportedModelError(
            f"model {model.name!r} is not built, so its inputs are unknown: call it once on "
            "data, call model.build(input_shape), or pass input_signature="
            "[tf.TensorSpec((None, ...), tf.float32)] to gs.trace"
        )
    if not re.fullmatch(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*", model.name):
        raise UnsupportedModelError(_root_scope_refused(model.name, f"model {model.name!r}"))
    specs, structured = _keras_signature(model, input_signature)
    _check_call_arguments(model, specs, structured)
    if not model.built:
        _build(model, specs, structured, training)
    what = f"model {model.name!r}"
    declared = "its declared input shape" if input_signature is None else "the input_signature's shape"
    # a Keras 3 subclassed model's inputs are guessed from the shapes it kept: float32, one argument
    guessed = input_signature is None and _keras_inputs(model) is None and _tf.first_call_specs(model) is None
    try:
        with TRACE_LOCK, recording([model]) as recorder, _refusing(what, specs, declared):
            cf = _model_concrete(tf.function(_calling(model)), specs, structured, training)
    except (TypeError, ValueError) as e:
        if not guessed or isinstance(e, GraphscopeError) or not _about_dtypes(e):
            raise  # an error of the model's own, not of the guessed dtypes, passes through untouched
        raise UnsupportedModelError(
            f"model {model.name!r} failed when traced on {_guess_text(specs)}, the inputs guessed from the shapes "
            f"Keras 3 kept when it was built (it keeps no dtypes): {_cause(e)}; if it takes integers or booleans, "
            "pass input_signature with their dtypes, e.g. "
            f"{_signature_text(specs, structured, _failed_dtypes(specs, tf.bool if 'bool' in str(e) else tf.int32))}"
            + (", each spec with its input's dtype (tf.bool for a mask, tf.int32 for ids)" if len(specs) > 1 else "")
        ) from None
    recorder.finish(cf.graph)
    if guessed:
        _warn_if_guessed_wrong(model, specs, structured, cf)
    names = [s.name for s in specs]
    return Traced(
        function=cf,
        name=model.name,
        input_names=names,
        model=model,
        root_call=recorder.root,
        calls=recorder.calls,
        training=training,
        source="keras",
        arguments=_keras_arguments(model, specs, structured),
    )


def _about_dtypes(e: BaseException) -> bool:
    """Whether an error raised while tracing is about a dtype (TensorFlow's 'has type float32
    that does not match expected type of bool', 'DataType float32 not in list of allowed
    values'), which the float32 a guess gives every input may cause; an error the model's own
    code raises about something else is not."""
    return re.search(r"\b(dtype|DataType|float32|type of bool|type of int)", _cause(e)) is not None


def _signature_text(specs: list[tf.TensorSpec], structured: Any, dtypes: dict[str, tf.DType]) -> str:
    """How to write the input_signature that traces the model as `specs` (flat) and `structured`
    (its nest, see `_keras_signature`) do, with the dtypes of `dtypes` (by spec name) changed: the
    whole nest, so that the advice traces the model with the structure it takes."""

    def text(nest: Any) -> str:
        if isinstance(nest, tf.TensorSpec):
            shape = nest.shape.as_list() if nest.shape.rank is not None else None
            return _spec_text(shape, dtypes.get(nest.name, nest.dtype)) if shape else repr(nest)
        if isinstance(nest, dict):
            return "{" + ", ".join(f"{k!r}: {text(v)}" for k, v in nest.items()) + "}"
        inner = ", ".join(text(v) for v in nest)
        return f"[{inner}]" if isinstance(nest, list) else f"({inner},)"

    if structured is None:
        return f"[{', '.join(text(s) for s in specs)}]"
    nests = structured if isinstance(structured, _Arguments) else (structured,)
    return f"[{', '.join(text(n) for n in nests)}]"


def _failed_dtypes(specs: list[tf.TensorSpec], dtype: tf.DType) -> dict[str, tf.DType]:
    """The dtype to suggest for a guess that failed: `dtype` for a single input; where there are
    several, which one needs it is unknown (the message asks for each input's dtype)."""
    return {specs[0].name: dtype} if len(specs) == 1 else {}


def _guess_text(specs: list[tf.TensorSpec]) -> str:
    return ", ".join(f"{s.name} {_shape(s)} {s.dtype.name}" for s in specs)


def _warn_if_guessed_wrong(model: Any, specs: list[tf.TensorSpec], structured: Any, cf: Any) -> None:
    """Warn (GuessedInputsWarning) where a Keras 3 subclassed model traced on inputs guessed from
    the shapes Keras kept (float32, its first argument only) shows that it may be called
    otherwise: an input it casts to integers or booleans (ids above 2**24 round in float32,
    silently) or formats as strings (hashed ids: every id reads otherwise), one it casts to a
    string (words a StringLookup reads: no run can cast a float to a string), or an optional
    argument of its `call` (traced without it, though it may have been called with it)."""
    cast: list[str] = []
    text: list[str] = []
    words: list[str] = []
    cast_dtypes: dict[str, tf.DType] = {}
    for spec, placeholder in zip(specs, cf.graph.inputs):
        todo, seen = [placeholder.op], set()
        while todo:
            op = todo.pop()
            for t in op.outputs:
                for reader in t.consumers():
                    if reader.name in seen:
                        continue
                    seen.add(reader.name)
                    if reader.type == "Identity":
                        todo.append(reader)
                    elif reader.type == "Cast" and (reader.outputs[0].dtype.is_integer or reader.outputs[0].dtype.is_bool):
                        cast.append(f"{spec.name} to {reader.outputs[0].dtype.name}")
                        cast_dtypes.setdefault(spec.name, reader.outputs[0].dtype)
                    elif reader.type == "Cast" and reader.outputs[0].dtype == tf.string:  # words looked up
                        words.append(spec.name)  # (StringLookup): no run can cast a float to a string
                        cast_dtypes.setdefault(spec.name, tf.string)
                    elif reader.type == "AsString":  # ids hashed as text: float32 5 reads '5.000000'
                        text.append(spec.name)
                        cast_dtypes.setdefault(spec.name, tf.int64)
    parameters = _call_parameters(model)
    # any argument with a default (`bias=None`, `scale=2.0`): the first call may have passed it, and
    # neither Keras keeps its value (tf_keras records a Python number as None)
    optional = [p.name for p in parameters if p.default is not p.empty and p.name not in ("training", "mask")
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not cast and not text and not words and not optional:
        return
    why = "; ".join(filter(None, [
        f"it casts {', '.join(dict.fromkeys(cast))} (integers fed as float32 round above 2**24)" if cast else "",
        f"it casts {', '.join(dict.fromkeys(words))} to string (text: no run can cast a float32 to a string)"
        if words else "",
        f"it formats {', '.join(dict.fromkeys(text))} as strings (an id 5 fed as float32 reads '5.000000', not '5')"
        if text else "",
        f"its call also takes {', '.join(optional)}, which the trace leaves at the default" if optional else "",
    ]))
    ways = []
    if cast or text or words:
        ways.append(f"pass input_signature with the dtypes ({_signature_text(specs, structured, cast_dtypes)})")
    if optional:
        o = optional[0]
        ways.append(f"trace a function that passes the arguments (gs.trace(lambda x: model(x, {o}=...), [x_spec]) "
                    f"for a Python value, gs.trace(lambda x, {o}: model(x, {o}={o}), [x_spec, {o}_spec]) for a tensor)")
    warnings.warn(
        f"model {model.name!r} was traced on {_guess_text(specs)}: Keras kept only the shapes of what this "
        f"subclassed model was first called with, not their dtypes nor its other arguments, and {why}. "
        f"If that is not how you call it, {' or '.join(ways)}",
        GuessedInputsWarning,
        stacklevel=outside_stacklevel(),
    )


def _call_parameters(model: Any) -> list[inspect.Parameter]:
    """The parameters of a model's `call`; none where Python cannot tell them."""
    try:
        return list(inspect.signature(model.call).parameters.values())
    except (TypeError, ValueError):
        return []


def _required_inputs(parameters: list[inspect.Parameter]) -> list[str]:
    """The names of the positional parameters of a model's `call` without a default: its inputs,
    less `training`, which the trace passes by keyword (`call(self, inputs, training)`)."""
    return [p.name for p in parameters if p.default is p.empty and p.name != "training"
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_call_arguments(model: Any, specs: list[tf.TensorSpec], structured: Any) -> None:
    """Refuse a model whose `call` needs arguments the trace would not pass: more positional
    inputs than the signature gives, or a keyword-only argument without a default (TensorFlow
    raised "missing a required argument" from inside the trace)."""
    parameters = _call_parameters(model)
    given = len(specs) if structured is None else len(structured) if isinstance(structured, _Arguments) else 1
    positional = _required_inputs(parameters)
    keywords = [p.name for p in parameters if p.default is p.empty and p.kind is p.KEYWORD_ONLY and p.name != "training"]
    if len(positional) > given:
        raise UnsupportedModelError(
            f"model {model.name!r} takes {len(positional)} inputs ({', '.join(positional)}), but the input_signature "
            f"gives {given}: pass one spec, or nest of specs, per input"
        )
    if keywords:
        names = ", ".join(keywords)
        raise UnsupportedModelError(
            f"model {model.name!r} needs the keyword argument{'s' if len(keywords) > 1 else ''} {names} (no default), "
            f"which gs.trace does not pass to a model: trace a function that passes {'them' if len(keywords) > 1 else 'it'}, "
            f"gs.trace(lambda x: model(x, {', '.join(f'{k}=...' for k in keywords)}), input_signature=[...])"
        )


def _keras_arguments(model: Any, specs: list[tf.TensorSpec], structured: Any) -> list[tuple[str, Any]]:
    """The arguments a Keras model is called with: one nest (`structured`), or one tensor per
    spec; named after the parameters of its `call` (`inputs`, else `input_<k>`)."""
    parameters = _argument_names(getattr(model, "call", None)) or []
    name = lambda k: parameters[k] if k < len(parameters) else f"input_{k}"  # noqa: E731
    if structured is None:
        return [(name(k), k) for k in range(len(specs))]
    count = iter(range(len(specs)))
    nests = structured if isinstance(structured, _Arguments) else (structured,)
    return [(name(k), tf.nest.map_structure(lambda _: next(count), nest)) for k, nest in enumerate(nests)]


class _Arguments(tuple):
    """The structure to call a model with where it takes several arguments and one of them is a
    nest (`call(inputs, bias)` with a dict `inputs`): one nest of specs per argument."""


def _model_concrete(fn: Any, specs: list[tf.TensorSpec], structured: Any, training: bool) -> Any:
    """`fn` traced on `structured` (one nest, or `_Arguments`: one per argument), or on `specs`
    as one argument each where it is None."""
    if structured is None:
        return fn.get_concrete_function(*specs, training=training)
    if isinstance(structured, _Arguments):
        return fn.get_concrete_function(*structured, training=training)
    return fn.get_concrete_function(structured, training=training)


def _calling(model: Any) -> Any:
    """A function that calls `model`, its `__call__` looked up at call time: a model whose class
    has a `__call__` of its own (keras-hub's PipelineModel) is recorded there, by the class
    `recording` gives it for the duration; the bound `model.__call__` taken before would keep
    the original class's, and the model's root call would go unrecorded."""

    def __call__(*args: Any, **kwargs: Any) -> Any:
        return model(*args, **kwargs)

    return __call__


def _build(model: Any, specs: list[tf.TensorSpec], structured: Any, training: bool) -> None:
    """Build `model` by tracing it once on `specs`, as calling it once on data would: its layers
    create their weights, and those made inside a build (keras-hub's, in their `build`) exist
    before the traced call is recorded. Builds run outside the graph (`_tf.builds_outside_graphs`),
    so the graph, thrown away, leaves nothing in the model."""
    fn = tf.function(_calling(model))
    before = _build_states(model)
    try:
        with TRACE_LOCK, _tf.builds_outside_graphs(model):
            _model_concrete(fn, specs, structured, training)
    except Exception as e:  # noqa: BLE001 - whatever the model's own code raises
        takes = ", ".join(f"{s.name} {_shape(s)}" for s in specs)
        # like a failed call on data, a failed build can leave layers built for those shapes
        # (a Sequential then keeps its input shape): say so, since a retry on it cannot work
        after = _build_states(model)
        partly = [name for key, (name, built) in after.items() if built and not before.get(key, (name, False))[1]]
        if after.keys() != before.keys() or partly:
            fix = (f"the attempt left {model.name!r} partly built for those shapes"
                   f"{' (' + ', '.join(partly[:4]) + (', ...' if len(partly) > 4 else '') + ')' if partly else ''}, "
                   "as a failed call on data does: make the model again and trace it with one spec per input its "
                   "`call` takes, with shapes it accepts")
        else:
            fix = ("give one spec per input its `call` takes, with shapes it accepts, or build it first by "
                   "calling it once on data")
        raise InputError(
            f"model {model.name!r} is not built, and calling it on the input_signature ({takes}) "
            f"to build it failed: {_cause(e)}; {fix}"
        ) from None


def _build_states(model: Any) -> dict[int, tuple[str, bool]]:
    """Each layer `model` holds, at any depth (a Sequential's InputLayer once built), and
    whether it is built."""
    states: dict[int, tuple[str, bool]] = {}
    todo = [model]
    while todo:
        layer = todo.pop()
        if id(layer) not in states:
            states[id(layer)] = (layer.name, bool(layer.built))
            todo.extend(_tf.tracked_layers(layer))
    return states


def _keras_signature(model: Any, input_signature: Any) -> tuple[list[tf.TensorSpec], Any]:
    """Flat named specs, and the structure to call the model with (None: call with *specs).
    Inputs are named as Keras names them (their InputLayer's name, which `keras.Input(name=...)`
    sets); a spec's own name wins."""
    inputs = _keras_inputs(model)
    if input_signature is not None:
        flat = tf.nest.flatten(inputs) if inputs is not None else []
        names = [_tf.keras_input_name(t) for t in flat]  # none known: input_0, input_1, ... (in a nest: its keys)
        nests = _normalize_signature(input_signature, default_dtype=_input_dtype(model), names=names)
        specs = tf.nest.flatten(nests)
        if inputs is not None:
            _check_dense(model, flat, names)  # a dense spec for a ragged input traces it dense all the same
            _check_signature(model, specs, flat)
        # a model is called with one input: a dict, list or tuple of specs is that input; one
        # spec per input of a model of several is packed into the structure it takes
        if len(nests) == 1 and not isinstance(nests[0], tf.TensorSpec):
            return specs, nests[0]
        if inputs is not None and len(flat) > 1:
            return specs, tf.nest.pack_sequence_as(inputs, specs)
        if inputs is None and not all(isinstance(n, tf.TensorSpec) for n in nests):
            return specs, _Arguments(nests)  # several arguments, a nest among them: one each
        return specs, None
    if inputs is not None:
        flat = tf.nest.flatten(inputs)
        names = [_tf.keras_input_name(t) for t in flat]
        _check_dense(model, flat, names)
        structured = tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype, name=_tf.keras_input_name(t)), inputs
        )
        return tf.nest.flatten(structured), structured
    ragged = _tf.first_call_ragged(model)  # tf_keras: else its build's shape, traced dense
    _refuse_ragged(model, list(ragged.values()), list(ragged))
    called = _first_call_signature(model)
    if called is not None:
        return _keras_signature(model, called)
    built = _built_signature(model)
    if built is not None:
        if len(built) == 1 and _is_shape(built[0]):
            # the batch size of the call that built the model is not a property of the model
            spec = tf.TensorSpec(_any_batch_shape(built[0]), _input_dtype(model), name="input_0")
            return [spec], None
        return _keras_signature(model, [_specs_of(s, _input_dtype(model)) for s in built])
    raise UnsupportedModelError(
        f"cannot tell the inputs of model {model.name!r}: pass input_signature="
        "[tf.TensorSpec((None, ...), tf.float32)] (one spec, or a shape, per positional input)"
    )


def _check_dense(model: Any, inputs: list[Any], names: list[str]) -> None:
    """A functional model's inputs, named `names`, are traced dense: refuse a ragged one, warn of
    a sparse one (`_refuse_ragged`, `_warn_sparse`)."""
    _refuse_ragged(model, inputs, names)
    _warn_sparse(model, inputs, names)


def _refuse_ragged(model: Any, inputs: list[Any], names: list[str]) -> None:
    """UnsupportedModelError for a model with a ragged input (a functional model's
    `Input(ragged=True)`, or a RaggedTensorSpec a tf_keras model was first called with), named
    `names`: traced as a dense tensor, its padding would be computed on as values, which is not
    what the model computes on ragged rows; the message gives the function that builds the ragged
    input from dense parts."""
    for t, name in zip(inputs, names):
        if not (getattr(t, "ragged", False) is True or isinstance(t, tf.RaggedTensorSpec)
                or isinstance(getattr(t, "type_spec", None), tf.RaggedTensorSpec)):
            continue
        dtype = tf.as_dtype(t.dtype).name
        shape = tf.TensorShape(t.shape)
        inner = ", ".join(str(d) for d in shape.as_list()[2:]) if shape.rank else ""
        values = f"(None, {inner})" if inner else "(None,)"
        raise UnsupportedModelError(
            f"model {model.name!r}: its input {name!r} is ragged, and gs.trace feeds dense "
            "arrays, whose padding the model would compute on as values; trace a function that builds the "
            "ragged input from dense parts: gs.trace(lambda values, row_lengths: "
            "model(tf.RaggedTensor.from_row_lengths(values, row_lengths)), "
            f"[tf.TensorSpec({values}, tf.{dtype}), tf.TensorSpec((None,), tf.int64)])"
        )


def _warn_sparse(model: Any, inputs: list[Any], names: list[str]) -> None:
    """GuessedInputsWarning for a functional model with a sparse input (`Input(sparse=True)`),
    named `names`: it is traced dense, which is what Keras computes on the dense array, but not
    always on the SparseTensor (a Hashing or lookup layer leaves its missing entries out, a
    layer's code may branch on it); the message gives the function that traces it sparse."""
    sparse = [(t, name) for t, name in zip(inputs, names)
              if getattr(t, "sparse", False) is True or isinstance(getattr(t, "type_spec", None), tf.SparseTensorSpec)]
    if not sparse:
        return
    t = sparse[0][0]
    rank = len(t.shape)
    specs = (f"[tf.TensorSpec((None, {rank}), tf.int64), tf.TensorSpec((None,), tf.{tf.as_dtype(t.dtype).name}), "
             f"tf.TensorSpec(({rank},), tf.int64)]")
    warnings.warn(
        f"model {model.name!r}: its input {', '.join(repr(n) for _, n in sparse)} is sparse, and gs.trace traces it dense "
        "(fed a dense array or a tf.SparseTensor as its dense value): the missing entries are computed on as "
        "zeros, as Keras does on a dense array but not always on a SparseTensor (a Hashing or lookup layer "
        "leaves them out, a layer may branch on it). To run what the model computes on a SparseTensor, trace "
        f"gs.trace(lambda indices, values, dense_shape: model(tf.SparseTensor(indices, values, dense_shape)), {specs})",
        GuessedInputsWarning,
        stacklevel=outside_stacklevel(),
    )


def _first_call_signature(model: Any) -> list[Any] | None:
    """One nest of specs per positional argument a tf_keras model was first called with, with
    the dtypes it was called with and any batch size, or None where Keras recorded no call (Keras
    3 records only the first argument's shapes, not its dtypes: see `_built_signature`).
    UnsupportedModelError where the call passed tensors by keyword, which a trace does not pass."""
    recorded = _tf.first_call_specs(model)
    if recorded is None:
        return None
    args, kwargs = recorded
    if kwargs:
        names = ", ".join(kwargs)
        raise UnsupportedModelError(
            f"model {model.name!r} was called with tensors by keyword ({names}), which gs.trace does not pass "
            f"to a model: trace a function that does, gs.trace(lambda x, {names.replace(', ', '=..., ')}=...: "
            f"model(x, {', '.join(f'{k}={k}' for k in kwargs)}), input_signature=[...]), one spec per argument"
        )
    return [tf.nest.map_structure(_any_batch, a) for a in args]


def _any_batch(spec: tf.TensorSpec) -> tf.TensorSpec:
    """`spec` with any batch size (the call that recorded it had one, which is not the model's)."""
    if spec.shape.rank is None:
        return tf.TensorSpec(spec.shape, spec.dtype)
    return tf.TensorSpec(_any_batch_shape(spec.shape.as_list()), spec.dtype)


def _built_signature(model: Any) -> list[Any] | None:
    """The input shapes a subclassed model recorded when it was built, one shape or nest of
    shapes (a dict it was called with) per positional input of its `call`, or None where it
    recorded none. UnsupportedModelError where its `call` takes more positional inputs than
    Keras recorded shapes for (a `build(input_shape)` sees only the first), naming them."""
    shapes = _tf.build_shapes(model)
    if not shapes or not all(_is_shape_nest(s) for s in shapes.values()):
        return None
    takes = _required_inputs(_call_parameters(model))
    if len(shapes) == 1:
        built = list(shapes.values())
    else:  # `build(self, x_shape, y_shape)`: Keras keys each shape by its argument
        built = [shapes.get(f"{name}_shape") for name in takes]
        if len(takes) != len(shapes) or any(s is None for s in built):
            return None
    if len(takes) > len(built):
        known = ", ".join(_spec_text(s, _input_dtype(model)) for s in built)
        unknown = ", ".join("tf.TensorSpec((None, ...), tf.float32)" for _ in takes[len(built):])
        raise UnsupportedModelError(
            f"model {model.name!r} takes {len(takes)} inputs ({', '.join(takes)}), but Keras recorded the "
            f"shape of only the first when it was built ({known}): pass input_signature=[{known}, {unknown}] "
            "to gs.trace, one spec per input, with the shapes your data has"
        )
    return built


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def _is_shape_nest(value: Any) -> bool:
    """A shape, or a dict, list or tuple of them (the shapes of a dict a model was built with)."""
    if _is_shape(value):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
    return bool(items) and all(_is_shape_nest(v) for v in items)


def _any_batch_shape(shape: Any) -> tuple[Any, ...]:
    """`shape` with any batch size; a scalar's `()` stays `()` (it has no batch axis)."""
    return (None, *shape[1:]) if len(shape) else ()


def _specs_of(shapes: Any, dtype: tf.DType) -> Any:
    """A nest of shapes as a nest of TensorSpecs of `dtype`, any batch size."""
    if _is_shape(shapes):
        return tf.TensorSpec(_any_batch_shape(shapes), dtype)
    if isinstance(shapes, dict):
        return {k: _specs_of(v, dtype) for k, v in shapes.items()}
    return type(shapes)(_specs_of(v, dtype) for v in shapes)


def _spec_text(shapes: Any, dtype: tf.DType) -> str:
    """How to write the spec (or nest of specs) of `shapes` in a call to gs.trace."""
    if _is_shape(shapes):
        return f"tf.TensorSpec({_any_batch_shape(shapes)!r}, tf.{dtype.name})"
    if isinstance(shapes, dict):
        return "{" + ", ".join(f"{k!r}: {_spec_text(v, dtype)}" for k, v in shapes.items()) + "}"
    inner = ", ".join(_spec_text(v, dtype) for v in shapes)
    return f"[{inner}]" if isinstance(shapes, list) else f"({inner},)"


def _keras_inputs(model: Any) -> Any:
    """A Keras model's symbolic inputs, in the structure it is called with, or None (a
    subclassed model has none). A Keras 3 Sequential has `inputs` but no `input`: its one input."""
    if not _tf.is_keras_model(model):
        return None
    try:
        return model.input
    except (AttributeError, ValueError):
        pass
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        return inputs[0]
    return inputs or None


def _check_signature(model: Any, specs: list[tf.TensorSpec], inputs: list[Any]) -> None:
    """Refuse an input_signature that a functional model's own inputs contradict."""
    takes = ", ".join(f"{t.name} {tuple(t.shape)}" for t in inputs)
    if len(specs) != len(inputs):
        raise InputError(
            f"input_signature gives {len(specs)} spec{'s' if len(specs) != 1 else ''} but model "
            f"{model.name!r} takes {len(inputs)} input{'s' if len(inputs) != 1 else ''}: {takes} "
            "(or leave input_signature out: the model knows its inputs)"
        )
    for k, (spec, t) in enumerate(zip(specs, inputs)):
        if not spec.shape.is_compatible_with(tf.TensorShape(t.shape)):
            raise InputError(
                f"input_signature[{k}] has shape {tuple(spec.shape.as_list()) if spec.shape.rank is not None else None} "
                f"but input {t.name!r} of model {model.name!r} takes {tuple(t.shape)}"
            )


def _input_dtype(model: Any) -> tf.DType:
    try:
        return tf.as_dtype(model.input_dtype)
    except (AttributeError, TypeError):
        return tf.float32


# --------------------------------------------------------------------------- other callables


def _trace_callable(fn: Any, input_signature: Any, training: bool) -> Traced:
    """A tf.function or any Python callable, with the calls of every Keras layer it reaches.

    For a bound method of a Keras model (`model.predict_step`) that model is the root, so its
    ops are named as `trace(model)` names them; any other callable's layers and models are
    first segments, as nested models are. A tf.function is traced anew (a copy of it with the
    same options), since the trace it has cached recorded nothing (and ran in another mode).
    """
    python = getattr(fn, "python_function", fn)
    helpers: list[tuple[Any, str | None]] = []
    roots = keras_roots(python, helpers)
    what = "this tf.function" if fn is not python else f"the callable {_function_name(fn)!r}"
    if not roots:
        plain = tf.function(fn) if fn is python else _tf.fresh_function(fn) if training else fn
        with _mode(training, what):
            cf = _concrete(plain, input_signature, what=what)
        traced = _from_concrete(cf, name=_function_name(fn), source="function")
        traced.training = training
        return traced
    fresh = _tf.fresh_function(fn) if fn is not python else tf.function(fn)
    with TRACE_LOCK, fresh_helpers(helpers), recording(roots) as recorder, _mode(training, what):
        cf = _concrete(fresh, input_signature, what=what)
    recorder.finish(cf.graph)
    traced = _from_concrete(cf, name=_function_name(fn), source="function")
    traced.training = training
    traced.calls = recorder.calls
    owner = getattr(python, "__self__", None)
    if owner is not None and _tf.is_keras_layer(owner):  # a model's method: the model is the root
        traced.model = owner
        traced.name = owner.name
        traced.root_call = next((c for c in recorder.calls if c.parent is None and c.layer is owner), None)
    return traced


def _trace_module(module: Any, input_signature: Any, training: bool, signature: str | None = None) -> Traced:
    """A tf.Module (or loaded SavedModel): the signature named `signature`, else its serving
    signature, else its `__call__`."""
    signatures = getattr(module, "signatures", None)
    if signature is not None:
        _check_signature_name(signatures, signature, repr(_module_name(module)))
    name = signature or "serving_default"
    if signature is not None or (input_signature is None and signatures and name in signatures):
        what = repr(_module_name(module)) if _has_own_name(module) else "the SavedModel"
        if training:
            raise OptionError(
                f"cannot trace {what} with training=True: its signature {name!r} was traced when it was saved, "
                "in the mode it was saved in; trace the Keras model (or its .keras file) with training=True instead"
            )
        cf = signatures[name]
        # a loaded SavedModel has no name of its own: it is named by the signature traced
        return _from_concrete(cf, name=_module_name(module) if _has_own_name(module) else name, source="module")
    call = getattr(module, "__call__", None)
    if call is None or not callable(call):
        raise UnsupportedModelError(
            f"{_module_name(module)!r} has no serving signature and no __call__ to trace: save it "
            "with signatures=... or give it a tf.function __call__"
        )
    is_function = isinstance(call, tf.types.experimental.PolymorphicFunction) or hasattr(
        call, "concrete_functions"
    )
    fn = call if is_function else tf.function(call)
    what = f"the tf.Module {_module_name(module)!r}"
    if training and isinstance(fn, tf.types.experimental.PolymorphicFunction):
        fn = _tf.fresh_function(fn)  # its cached traces ran in another mode
    with TRACE_LOCK, recording(keras_attributes(module)) as recorder, _mode(training, what):
        cf = _concrete(fn, input_signature, what=what)
    recorder.finish(cf.graph)
    traced = _from_concrete(cf, name=_module_name(module), source="module")
    traced.training = training
    traced.calls = recorder.calls
    return traced


@contextlib.contextmanager
def _mode(training: bool, what: str) -> Iterator[None]:
    """Trace the Keras layers that `what` calls without `training=` in training mode when
    `training` (`_tf.keras_training`); refuse when no Keras layer took the mode."""
    if not training:
        yield
        return
    with _tf.keras_training(True) as seen:
        yield
    if not seen.used:
        raise OptionError(
            f"training=True changes nothing in {what}: no Keras layer it calls took the mode (a SavedModel's "
            "functions keep the mode they were saved in; a function without Keras layers has none); trace the "
            "Keras model (or its .keras file) with training=True, or pass training=True to the layers it calls"
        )


def _concrete(fn: Any, input_signature: Any, *, what: str) -> Any:
    if input_signature is not None:
        # unnamed specs are named by TensorFlow after the function's arguments (`image`, `scale`),
        # those inside a dict, list or tuple by their path there (`token_ids`, `images/0`)
        specs = _normalize_signature(
            input_signature, default_dtype=tf.float32, names=None, arguments=_argument_names(fn)
        )
        with _refusing(what, tf.nest.flatten(specs), "the input_signature's shape"):
            return fn.get_concrete_function(*specs)
    if getattr(fn, "input_signature", None) is not None:
        with _refusing(what, tf.nest.flatten(fn.input_signature), "its own input_signature's shape"):
            return fn.get_concrete_function()
    concrete = list(getattr(fn, "concrete_functions", []) or [])
    if len(concrete) == 1:
        return concrete[0]
    raise UnsupportedModelError(
        f"cannot tell the inputs of {what}: pass input_signature="
        "[tf.TensorSpec((None, ...), tf.float32)] (one spec, or a shape, per positional input)"
    )


@contextlib.contextmanager
def _refusing(what: str, specs: list[Any], shape: str) -> Iterator[None]:
    """Turn TensorFlow's refusal to trace the model's code into `UnsupportedModelError`: what
    could not be traced, at which input shapes, TensorFlow's reason (its first line) and where
    in the user's code. An error the model's code raises itself (a `RuntimeError`, a
    `KeyError`), and graphscope's own, pass through untouched."""
    try:
        with _tf.keras_name_scopes_kept():
            yield
    except GraphscopeError:
        raise
    except Exception as e:  # noqa: BLE001 - sorted below
        scope = re.search(r"'([^']*)' is not a valid root scope name", str(e))
        if scope:  # Keras opens a scope named after the model; TensorFlow refuses one that starts with `_`
            raise UnsupportedModelError(_root_scope_refused(scope.group(1), what)) from None
        if not _refused_by_tensorflow(e):
            raise
        message = _untraceable(what, specs, shape, e)
        raise UnsupportedModelError(message, command_line=re.sub(
            r"pass (input_signature=\[.*\]) to gs\.trace", r"trace it from Python, gs.trace(model, \1) (the command "
            r"line traces a model at its own input shapes)", message)) from None


def _root_scope_refused(scope: str, what: str) -> str:
    return (f"TensorFlow refuses the name scope {scope!r} that Keras opens for {what} (a scope at the top of a "
            "graph may not start with '_', and Keras names a model after its class when it is given no name): "
            "make it with a name, e.g. MyModel(name='my_model'), and trace that")


def _refused_by_tensorflow(e: BaseException) -> bool:
    """Whether TensorFlow refused to build the graph: an error of its own types (a symbolic
    tensor used as a Python bool, a tensor out of its graph, an op's shape check), or a
    ValueError/TypeError from an op's shape or dtype inference."""
    if type(e).__module__.startswith("tensorflow."):
        return True
    text = str(e)
    return isinstance(e, (ValueError, TypeError)) and bool(re.search(
        r"\{\{node |Dimensions must be equal|Shapes? .*(are )?incompatible|must be rank|"
        r"symbolic `?tf\.Tensor|Tensor\.name is undefined", text))


def _untraceable(what: str, specs: list[Any], shape: str, e: BaseException) -> str:
    """Why `what` could not be traced at `specs`, and what to pass instead: fixed sizes where the
    shapes leave some unknown (code that branches on a size in Python needs it known)."""
    specs = [s for s in specs if isinstance(s, tf.TensorSpec)]
    shapes = ", ".join(f"{s.name} {shape_text(_shape(s))}" if s.name else shape_text(_shape(s)) for s in specs)
    reason, where = _user_code_reason(e)
    message = (f"could not trace {what} at {shape} ({shapes}): {type(e).__name__}: {reason.rstrip('.')}"
               + (f" (at {where})" if where else ""))
    unknown = any(s.shape.rank is None or None in s.shape.as_list()[1:] for s in specs)
    if unknown:
        fixed = ", ".join(_fixed_spec(s) for s in specs)
        return (f"{message}; code that needs its input's sizes can be traced only where they are known: pass "
                f"input_signature=[{fixed}] to gs.trace, with your data's sizes in place of the unknown ones")
    return f"{message}; this is the model's own code failing under tf.function at these shapes: fix it there"


def _fixed_spec(spec: tf.TensorSpec) -> str:
    """`spec` written with its unknown sizes (all but the batch axis) filled in, as an example."""
    dims = spec.shape.as_list() if spec.shape.rank is not None else [None, 64, 64, 3]
    shape = ", ".join(str(d) if d is not None else ("None" if k == 0 else "64") for k, d in enumerate(dims))
    dtype = "" if spec.dtype == tf.float32 else f", tf.{spec.dtype.name}"
    return f"tf.TensorSpec(({shape}{',' if len(dims) == 1 else ''}){dtype})"


def _user_code_reason(e: BaseException) -> tuple[str, str | None]:
    """The first line of what went wrong in a tracing error (under Keras' "Exception encountered
    when calling X.call()." the line that says why), and the last frame of TensorFlow's "in user
    code:" report outside TensorFlow, Keras and graphscope (`file.py:6 in call`)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    found = re.findall(r"^\s*\w+(?:Error|Exception): (.+)$", text, re.M)
    reason = found[-1].strip() if found else _first_line(e)
    if reason.startswith("Exception encountered when calling"):
        after = text[text.rfind(reason) + len(reason):].splitlines()
        lines = [line.strip() for line in after if line.strip() and not line.strip().startswith("Arguments received")]
        skip = ("Could not automatically infer the output shape",)
        lines = [line for line in lines if not line.startswith(skip)] or [reason]
        reason = f"{lines[0]} (in {reason.removeprefix('Exception encountered when calling ').rstrip('.')})"
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    ours = (f"{os.sep}tensorflow{os.sep}", f"{os.sep}keras{os.sep}src{os.sep}", f"{os.sep}tf_keras{os.sep}",
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outside = [f for f in frames if not any(part in f[0] for part in ours)]
    where = f"{Path(outside[-1][0]).name}:{outside[-1][1]} in {outside[-1][2]}" if outside else None
    sentence = re.match(r"(.{20,}?[.!?])(?:\s|$)", reason)  # its first sentence: TensorFlow's advice after it is
    return (sentence.group(1) if sentence else reason)[:240], where  # about tf.function, not graphscope


def _check_signature_option(model: Any, signature: Any, input_signature: Any) -> None:
    """Refuse `signature=` where it cannot pick anything: it names one of a SavedModel's
    signatures, which have their own inputs."""
    if not isinstance(signature, str):
        raise OptionError(
            f"signature= takes the name of a SavedModel signature (a str such as 'serving_default'), "
            f"got {type(signature).__name__}"
        )
    if input_signature is not None:
        raise OptionError(
            f"signature={signature!r} and input_signature= both given: a SavedModel signature has its own "
            "inputs; leave input_signature out"
        )
    if not isinstance(model, (str, os.PathLike)) and not hasattr(model, "signatures"):
        raise OptionError(
            f"signature={signature!r} picks one of a SavedModel's signatures, but {_describe(model)} has none: "
            "pass a SavedModel directory (or tf.saved_model.load's result), or leave signature out",
            command_line=f"--signature {signature} picks one of a SavedModel's signatures, but {_describe(model)} "
            "has none: give a SavedModel directory as the model, or leave --signature out",
        )


def _check_signature_name(signatures: Any, signature: str, label: str) -> None:
    """Refuse a signature name the SavedModel does not have, listing those it has."""
    if signature in (signatures or {}):
        return
    available = ", ".join(repr(k) for k in sorted(signatures or {})) or "none"
    wrong = f"{label} has no signature named {signature!r}.{suggestion(signature, list(signatures or {}))} " \
            f"Its signatures: {available}"
    raise OptionError(
        f"{wrong}; pass one of them as signature=, or leave signature out for 'serving_default'",
        command_line=f"{wrong}; give one of them as --signature NAME, or leave --signature out for 'serving_default'",
    )


def _describe(model: Any) -> str:
    if _tf.is_keras_layer(model):
        return f"the Keras {'model' if _tf.is_keras_model(model) else 'layer'} {model.name!r}"
    return f"an object of type {type(model).__name__}"


def _from_concrete(cf: Any, *, name: str, source: str) -> Traced:
    if _tf.is_saved_signature(cf):  # named as the SavedModel traced by path is named
        source = "saved_model"
    names, positions = _declared_inputs(cf)
    in_order = positions == list(range(len(positions)))
    return Traced(function=cf, name=name, input_names=names, source=source,
                  input_positions=None if in_order else positions, arguments=_arguments(cf, positions))


def _arguments(cf: Any, positions: list[int]) -> list[tuple[str, Any]] | None:
    """A ConcreteFunction's arguments (`Traced.arguments`): positional ones named by the Python
    parameters of the function it traced, keywords by their keyword; None where an argument
    holds something other than tensors (a Python value it was traced with), or where a
    parameter name is unknown."""
    args, kwargs = cf.structured_input_signature
    parameters = list(getattr(getattr(cf, "function_type", None), "parameters", None) or [])
    if len(parameters) < len(args):
        return None
    declared = {k: i for i, k in enumerate(positions)}  # flat position -> position in input_names
    count = iter(range(len(tf.nest.flatten((args, kwargs)))))
    numbered = tf.nest.pack_sequence_as(
        (args, kwargs),
        [declared.get(next(count)) if isinstance(s, tf.TensorSpec) else None for s in tf.nest.flatten((args, kwargs))],
    )
    arguments = list(zip(parameters, numbered[0])) + [(key, numbered[1][key]) for key in sorted(kwargs)]
    if any(k is None for _, nest in arguments for k in tf.nest.flatten(nest)):
        return None
    return arguments


def _declared_inputs(cf: Any) -> tuple[list[str], list[int]]:
    """A ConcreteFunction's tensor inputs in the order its Python signature declares them, each
    named, with its position among the function's flat inputs.

    The flat inputs follow `tf.nest.flatten` of `structured_input_signature`, which sorts keyword
    arguments by name: a SavedModel signature `f(x, bias)` is called by keyword and takes `bias`
    first. Its declared order is the order of the arguments of the function it wraps
    (`_tf.keyword_order`); where that is unknown, keywords stay sorted. An input is named by its
    keyword, else by its spec's name (TensorFlow names an unnamed spec after its argument), else
    `input_<k>`.
    """
    args, kwargs = cf.structured_input_signature
    leaves = tf.nest.flatten((args, kwargs))
    count = iter(range(len(leaves)))
    numbered_args, numbered_kwargs = tf.nest.pack_sequence_as(
        (args, kwargs), [next(count) if isinstance(s, tf.TensorSpec) else None for s in leaves]
    )
    declared = [(None, arg, numbered) for arg, numbered in zip(args, numbered_args)]
    declared += [(key, kwargs[key], numbered_kwargs[key]) for key in sorted(kwargs)]
    inputs: list[tuple[str | None, int]] = []  # (name, position), names filled in below
    qualified: dict[int, str] = {}  # position -> a nested leaf's name behind its argument's (`x/y`)
    for keyword, spec, numbered in declared:
        flat = [(s, k) for s, k in zip(tf.nest.flatten(spec), tf.nest.flatten(numbered)) if k is not None]
        if isinstance(spec, tf.TensorSpec) or len(flat) != len(tf.nest.flatten(spec)):
            for s, k in flat:
                inputs.append((keyword if keyword is not None and len(flat) == 1 else s.name, k))
            continue
        by_key = isinstance(spec, dict) or hasattr(spec, "_fields")
        for (s, k), path in zip(flat, output_keys(spec, len(flat))):
            inputs.append((_leaf_name(s.name, path, keyword, by_key), k))
            behind = _leaf_name(s.name, path, keyword, False)
            if by_key and behind != inputs[-1][0]:
                qualified[k] = behind
    counts = collections.Counter(name for name, _ in inputs)
    # a key of one argument's dict that is another input's name (`f(x, y)`, `x = {"y": ...}`):
    # the key goes behind its argument's name, as `_nested_names` names the specs graphscope makes
    inputs = [(qualified[k] if counts[name] > 1 and k in qualified else name, k) for name, k in inputs]
    counts = collections.Counter(name for name, _ in inputs)
    if any(n > 1 for name, n in counts.items() if name):
        inputs = [(name if counts[name] == 1 else None, k) for name, k in inputs]  # input_<k>
    order = _tf.keyword_order(cf) if kwargs and not args else None
    if order is not None and sorted(order) == [k for _, k in inputs]:
        by_position = {k: name for name, k in inputs}
        inputs = [(by_position[k], k) for k in order]
    names = [name or f"input_{i}" for i, (name, _) in enumerate(inputs)]
    return names, [k for _, k in inputs]


def _leaf_name(name: str | None, path: str, keyword: str | None, by_key: bool) -> str | None:
    """The input name of a tensor inside a nested argument: its spec's own name, unless it is
    the one TensorFlow made from the argument's name and the path (`d_alpha` for `d["alpha"]`,
    `images_1_x`); then the path (`alpha`), behind the argument's name where it starts with a
    position (`images/1/x`), as `_nested_names` names the specs graphscope makes."""
    made = "_" + path.replace("/", "_")
    if not name or not name.endswith(made):
        return name or None
    argument = keyword or name[: -len(made)]
    return path if by_key else f"{argument}/{path}"


def _normalize_signature(
    signature: Any, *, default_dtype: tf.DType, names: list[str] | None, arguments: list[str] | None = None
) -> list[Any]:
    """One nest of TensorSpecs per positional input: a spec, or dicts, lists and tuples of them
    (a bare dict is the one positional input). A shape becomes a spec of `default_dtype`.

    A spec's own name wins. A spec without one is named, by its position `k` in
    `tf.nest.flatten` order, `names[k]` where given (a Keras model's input names); else, inside
    a nest, by its path there (`_nested_names`); else, at the top, `input_<k>` where `names` is
    given and TensorFlow's name after the function's argument where it is None.
    """
    if isinstance(signature, dict) or _is_spec(signature):
        signature = [signature]
    if not isinstance(signature, (list, tuple)):
        raise UnsupportedModelError(
            "input_signature must be a list of tf.TensorSpec or shapes (or of dicts, lists and tuples of them, "
            f"one per positional input), got {type(signature).__name__}"
        )
    paths = _nested_names(signature, arguments)
    specs = []
    k = 0
    for i, item in enumerate(signature):
        def leaf(s: Any, path: str) -> tf.TensorSpec:
            nonlocal k
            known = names[k] if names is not None and k < len(names) else None
            default = known or paths.get((i, path)) or (f"input_{k}" if names is not None else None)
            k += 1
            if isinstance(s, tf.TensorSpec):
                return tf.TensorSpec(s.shape, s.dtype, name=s.name or default)
            return tf.TensorSpec(tf.TensorShape(s), default_dtype, name=default)

        specs.append(_map_specs(item, leaf, f"input_signature[{i}]", ""))
    return specs


def _is_spec(value: Any) -> bool:
    """A TensorSpec, or a shape: a TensorShape or a tuple of ints and Nones."""
    return isinstance(value, (tf.TensorSpec, tf.TensorShape)) or (
        isinstance(value, tuple) and not hasattr(value, "_fields")
        and all(d is None or isinstance(d, int) for d in value)
    )


def _map_specs(value: Any, fn: Callable[[Any, str], Any], where: str, path: str) -> Any:
    """`value` with each spec or shape replaced by `fn(spec, path)`, called in `tf.nest.flatten`
    order, keeping its dicts, lists, tuples and namedtuples (a list of ints and Nones is a
    shape, as at the top level)."""
    if _is_spec(value) or (
        isinstance(value, list) and value and all(d is None or isinstance(d, int) for d in value)
    ):
        return fn(value, path)
    join = (lambda key: f"{path}/{key}") if path else str
    if isinstance(value, dict):
        # in tf.nest.flatten's order: sorted by key
        return {key: _map_specs(value[key], fn, f"{where}[{key!r}]", join(key)) for key in sorted(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_specs(v, fn, f"{where}.{f}", join(f)) for f, v in zip(value._fields, value)))
    if isinstance(value, (list, tuple)):
        return type(value)(_map_specs(v, fn, f"{where}[{j}]", join(j)) for j, v in enumerate(value))
    raise UnsupportedModelError(
        f"{where} is a {type(value).__name__}: expected a tf.TensorSpec, a shape tuple such as "
        "(None, 224, 224, 3), or a dict, list or tuple of them"
    )


def _nested_names(signature: list[Any] | tuple[Any, ...], arguments: list[str] | None) -> dict[tuple[int, str], str]:
    """The input name of each leaf inside a nested positional input, by (input, path): its path
    of keys (`token_ids`, `encoder/token_ids`), behind the argument's name when the path starts
    with a position or when two inputs would share a name (`images/0`, `inputs/token_ids`)."""
    paths: list[tuple[int, str]] = []
    for i, item in enumerate(signature):
        _map_specs(item, lambda s, path, i=i: paths.append((i, path)), f"input_signature[{i}]", "")

    def argument(i: int) -> str:
        return arguments[i] if arguments is not None and i < len(arguments) else f"input_{i}"

    names = {}
    for i, path in paths:
        if path:  # "": a spec or shape at the top, named after its argument
            by_key = isinstance(signature[i], dict) or hasattr(signature[i], "_fields")
            names[(i, path)] = path if by_key else f"{argument(i)}/{path}"
    # an input at the top is named after its argument: a key of another argument's nest that
    # is that name (`f(x, y)`, `x = {"y": ...}`) goes behind its own argument's name (`x/y`)
    counts = collections.Counter([*names.values(), *(argument(i) for i, path in paths if not path)])
    for (i, path), name in names.items():
        if counts[name] > 1 and not name.startswith(f"{argument(i)}/"):
            names[(i, path)] = f"{argument(i)}/{name}"
    return names


def _argument_names(fn: Any) -> list[str] | None:
    """The names of the positional arguments `fn` takes (None where Python cannot tell)."""
    python = getattr(fn, "python_function", fn)
    try:
        parameters = inspect.signature(python).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


def _function_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "graph", None), "name", "function")


def _module_name(module: Any) -> str:
    return getattr(module, "name", None) or type(module).__name__


def _has_own_name(module: Any) -> bool:
    """Whether `module` has a name of its own: a loaded SavedModel (TensorFlow's `_UserObject`,
    its Python class not restored) has none."""
    return _module_name(module) not in ("", "_UserObject")


def _concrete_name(cf: Any) -> str:
    """A ConcreteFunction's name; a loaded signature's is that of the function it wraps (`embed`
    for `loaded.signatures["embed"]` saved from `m.embed`; the key itself is not kept), or
    `signature` where that is no plain name (a lambda, Keras exports' `__call__`)."""
    if not _tf.is_saved_signature(cf):
        return _function_name(cf)
    name = _tf.saved_signature_function(cf)
    return name if name.isidentifier() and not name.startswith("_") else "signature"


def _shape(spec: tf.TensorSpec) -> tuple[int | None, ...] | None:
    return tuple(spec.shape.as_list()) if spec.shape.rank is not None else None


def _cause(e: BaseException) -> str:
    """What went wrong, from an error raised while tracing: the last `SomeError: ...` line of
    TensorFlow's "in user code:" report, else the first line."""
    text = str(e)
    # Keras' own wrapper puts the reason on the line after "Exception encountered when calling ..."
    keras_reason = re.search(r"Exception encountered when calling [^\n]*\n\s*(?:\x1b\[1m)?([^\n\x1b]+)", text)
    found = re.findall(r"^\s*(\w+(?:Error|Exception): .+)$", text, re.M)
    if found and keras_reason and "Exception encountered when calling" in found[-1]:
        return f"{found[-1].split(':')[0]}: {keras_reason.group(1).strip()}"[:300]
    return found[-1][:300] if found else _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
