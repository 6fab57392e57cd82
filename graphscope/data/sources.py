"""Where a dataset job's inputs come from: numpy arrays, `tf.data.Dataset`s, iterables of batches,
and `.npy`/`.npz` files; read ahead on a thread."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from graphscope.backend import tf_internals as _tf
from graphscope.errors import ArgumentError, InputError
from graphscope.ir.records import shape_text
from graphscope.runtime.inputs import InputSignature

__all__ = ["DEFAULT_BATCH_SIZE", "Batches", "Prefetch", "read_array"]

DEFAULT_BATCH_SIZE = 32


def read_array(path: str, *, mmap: bool = False) -> Any:
    """An array from a .npy (memory-mapped with `mmap`), or a dict of arrays from an .npz;
    pickles are refused (files from the command line, and Beam's `ReadNpy`)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise InputError(f"input file {path!r} does not exist; give the path of a .npy or .npz file") from None
    except OSError as e:
        raise InputError(f"cannot open input file {path!r}: {e.strerror}; give a readable .npy or .npz file") from None
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):
        raise InputError(
            f"{path!r} is not a .npy or .npz file (it does not start with NumPy's or a zip's "
            "signature); save arrays with numpy.save or numpy.savez"
        )
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except ValueError as e:  # object arrays (pickles), or a damaged header
        raise InputError(
            f"cannot read {path!r} as a .npy/.npz file without unpickling ({e}); "
            "save plain numeric arrays with numpy.save or numpy.savez"
        ) from None
    except (EOFError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {path!r}: the file is damaged ({e}); save it again with numpy.save") from None


def _all_arrays(data: Any) -> bool:
    """Whether every leaf of `data` (dicts, lists and tuples opened) is a numpy array."""
    if isinstance(data, Mapping):
        return all(_all_arrays(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return bool(data) and all(_all_arrays(v) for v in data)
    return isinstance(data, np.ndarray)


def _read_npy_paths(data: Any) -> Any:
    """`data` (a dict, list or tuple of inputs) with each `.npy` file's path in it read as its
    array (memory-mapped): `[images.npy, meta.npy]` for a model of two inputs."""
    if isinstance(data, (str, os.PathLike)) and os.fspath(data).endswith(".npy"):
        return read_array(os.fspath(data), mmap=True)
    if isinstance(data, Mapping):
        return {k: _read_npy_paths(v) for k, v in data.items()}
    if type(data) in (list, tuple):
        return type(data)(_read_npy_paths(v) for v in data)
    return data


def _numpy(data: Any) -> Any:
    """`data` with its tensors (eager `tf.Tensor`s, at the top or in dicts, lists and tuples) as
    numpy arrays; anything else as it is."""
    import tensorflow as tf

    if tf.is_tensor(data) and hasattr(data, "numpy"):
        return data.numpy()
    if isinstance(data, Mapping):
        return {k: _numpy(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_numpy(v) for v in data) if type(data) in (list, tuple) else data
    return data


class Batches:
    """The batches of `data` for an executor's inputs (its `signature`): each a list of arrays,
    one per input."""

    def __init__(self, data: Any, signature: InputSignature, batch_size: int | None, *,
                 arrays_batch: int | None = None) -> None:
        """`arrays_batch`: the batch size for arrays when `batch_size` is None (a model's fixed
        one; else DEFAULT_BATCH_SIZE). Datasets and iterables hold their batches already."""
        import tensorflow as tf

        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ArgumentError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.inputs = list(signature.names)
        self._signature = signature  # dicts: by input name, or any spelling of it
        self.samples: int | None = None
        self._arrays: list[np.ndarray] | None = None
        self._dataset = None
        self._iterable: Iterable[Any] | None = None
        self._first: list[np.ndarray] | None = None
        self._rest: Iterator[Any] = iter(())
        self.batch_count: int | None = None
        self.batch_size = batch_size
        self.skipped: tuple[int, int] | None = None  # (batches, samples) the last `iterate` passed over
        if isinstance(data, (str, os.PathLike)) and (
            os.path.exists(data) or os.fspath(data).endswith((".npy", ".npz"))
        ):  # a .npy file (memory-mapped) or an .npz
            data = read_array(os.fspath(data), mmap=True)
        elif isinstance(data, (Mapping, list, tuple)):  # a .npy file's path per input
            data = _read_npy_paths(data)
        data = _numpy(data)  # tensors hold arrays (not batches to iterate over), read as numpy's
        arrays = self._as_arrays(data)
        if arrays is not None:
            self._arrays = arrays
            self.samples = len(arrays[0])
            self.batch_size = batch_size or arrays_batch or DEFAULT_BATCH_SIZE
        elif isinstance(data, tf.data.Dataset):
            self._dataset_given_batched = any(
                getattr(spec, "shape", None) is not None and spec.shape.rank and spec.shape.rank >= 1
                and spec.shape[0] is None for spec in tf.nest.flatten(data.element_spec))
            if int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
                raise ArgumentError(
                    "the tf.data.Dataset never ends (it repeats): a pass over it would not finish; "
                    "take a finite part of it (dataset.take(n)) or leave out .repeat()"
                )
            if batch_size is not None:
                n = int(data.cardinality())
                self.samples = n if n >= 0 else None
                data = data.batch(batch_size)
            n = int(data.cardinality())
            self.batch_count = n if n >= 0 else None
            self._dataset = data
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            if batch_size is not None:
                raise ArgumentError(
                    "batch_size applies to arrays and tf.data.Datasets; an iterable's items are "
                    "its batches: leave batch_size out, or pass the arrays themselves"
                )
            self._iterable = data
        else:
            raise ArgumentError(
                f"data must be numpy arrays (a dict or list of them for several inputs, or of .npy files' paths), "
                f"a .npy or .npz file's path, a tf.data.Dataset or an iterable of batches, got {type(data).__name__}"
            )

    def _as_arrays(self, data: Any) -> list[np.ndarray] | None:
        """The per-input arrays when `data` is arrays (not batches); None otherwise."""
        n = len(self.inputs)
        if isinstance(data, np.ndarray):
            arrays = [data]
        elif isinstance(data, Mapping) and _all_arrays(data):  # by input name, or by argument with its nest
            arrays = self._signature.bind(data)
        elif (
            isinstance(data, (list, tuple))
            and n > 1
            and len(data) == n
            and all(isinstance(v, np.ndarray) for v in data)
        ):
            arrays = list(data)
        elif isinstance(data, (list, tuple)) and _all_arrays(data) and self._signature.by_argument(data, refuse=False):
            arrays = self._signature.by_argument(data)  # one nest per argument, as the function takes them
        else:
            return None
        if len(arrays) != n:
            takes = (f"the model takes {n} input{'s' if n != 1 else ''} ({', '.join(self.inputs)}), "
                     f"got {len(arrays)} array(s)")
            raise InputError(
                f"{takes}: pass a list of arrays in that order, or a dict by name",
                command_line=f"{takes}: give one --input FILE per input, in that order (an .npz's arrays count "
                "in the order they were saved)",
            )
        if any(a.ndim == 0 for a in arrays):
            raise InputError("each input array needs the samples on its first axis; got a scalar")
        counts = {len(a) for a in arrays}
        if len(counts) > 1:
            raise InputError(
                f"the input arrays hold different numbers of samples ({', '.join(str(len(a)) for a in arrays)}); "
                "give each input one entry per sample"
            )
        if not counts or counts == {0}:
            raise InputError("the input arrays hold no samples; give at least one")
        self._check_ranks(arrays, "one sample? give it with a batch axis (x[None])")
        return arrays

    def _check_ranks(self, arrays: list[np.ndarray], advice: str) -> None:
        """Refuse an array without the samples' axis (one sample, a dataset of samples read
        as batches): left alone, a list holding it would be read as one sample written as
        nested lists, and every sample counted wrong."""
        for name, spec, a in zip(self.inputs, self._signature.tensors, arrays):
            if spec.shape is not None and isinstance(a, np.ndarray) and a.ndim == len(spec.shape) - 1:
                raise InputError(
                    f"input {name!r} takes batches of shape {shape_text(spec.shape)} (the samples on the first "
                    f"axis), got an array of shape {shape_text(a.shape)}, without that axis: {advice}"
                )

    def count(self) -> int | None:
        """How many batches there are, when known."""
        if self.samples is not None and self.batch_size:
            return -(-self.samples // self.batch_size)
        return self.batch_count

    def iterate(self, skip: int = 0) -> Iterator[list[np.ndarray]]:
        """The batches after the first `skip`, each a list of arrays (one per input). The
        batches and samples passed over are counted in `skipped` (fewer than `skip` batches
        when the data ends before), set before the first batch is yielded or the data ends."""
        self.skipped = None
        passed = [0, 0]
        for k, batch in enumerate(self._all()):
            if k < skip:
                passed[0] += 1
                passed[1] += len(batch[0])
                continue
            if self.skipped is None:
                self.skipped = (passed[0], passed[1])
            yield batch
        if self.skipped is None:
            self.skipped = (passed[0], passed[1])

    def _all(self) -> Iterator[list[np.ndarray]]:
        """Every batch (an array's as views: a memory-mapped file's skipped batches are not read)."""
        if self._arrays is not None:
            b = self.batch_size
            assert b is not None
            for start in range(0, self.samples or 0, b):
                yield [a[start : start + b] for a in self._arrays]
            return
        if self._dataset is not None:
            import tensorflow as tf

            elements = self._dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
            while True:
                try:
                    element = next(elements)
                except StopIteration:
                    return
                except tf.errors.OpError as e:
                    raise InputError(self._dataset_failed(e)) from None
                yield self._element(element)
        if not self.one_pass and self._first is not None:  # a list of batches: read it again
            for element in self._iterable:
                yield self._element(element)
            return
        yield self.first()
        for element in self._rest:
            yield self._element(element)

    def _dataset_failed(self, e: Any) -> str:
        """What to say when reading the dataset fails in TensorFlow."""
        reason = _tf.failure_reason(e)[:200]
        if self.batch_size is not None and self._dataset_given_batched:
            return (f"batching the dataset's elements by batch_size={self.batch_size} failed ({reason}): its elements "
                    "look like batches already; leave batch_size out for a dataset of batches")
        return f"reading the dataset failed in TensorFlow: {reason}"

    @property
    def one_pass(self) -> bool:
        """Whether the data can be read only once (an iterator, such as a generator)."""
        return self._iterable is not None and iter(self._iterable) is self._iterable

    def first(self) -> list[np.ndarray]:
        """The first batch. A one-pass iterator (a generator) is read once: `iterate` gives
        this batch again, then the rest."""
        if self._iterable is not None:
            if self._first is None:
                self._rest = iter(self._iterable)
                item = next(self._rest, None)
                if item is None:
                    raise InputError("data holds no batches; give at least one")
                self._first = self._element(item)
            return self._first
        for batch in self.iterate():
            return batch
        raise InputError("data holds no batches; give at least one")

    def _element(self, element: Any) -> list[np.ndarray]:
        """One batch as a list of arrays; Keras' `(x, y[, sample_weight])` tuples give x."""
        n = len(self.inputs)
        # one nest per argument (a function of nests), before Keras' (x, y) reading of a tuple
        nests = self._signature.by_argument(element, refuse=False) if isinstance(element, (list, tuple)) else None
        if nests is not None:
            element = nests
        elif isinstance(element, tuple) and element and isinstance(element[0], (tuple, list, Mapping)):
            element = element[0]
        elif isinstance(element, tuple) and n == 1 and len(element) in (2, 3):
            element = element[0]
        if isinstance(element, Mapping):
            arrays = self._signature.bind(element)
        elif isinstance(element, (list, tuple)) and nests is None:
            arrays = self._signature.by_argument(element) or list(element)
        elif isinstance(element, (list, tuple)):
            arrays = list(element)
        else:
            arrays = [element]
        arrays = [np.asarray(a.numpy() if hasattr(a, "numpy") else a) for a in arrays]
        if len(arrays) != n:
            raise InputError(
                f"a batch holds {len(arrays)} array(s), the model takes {n} ({', '.join(self.inputs)}): "
                "give one array per input, in that order, or a dict by name"
            )
        counts = {len(a) if a.ndim else -1 for a in arrays}
        if len(counts) != 1 or -1 in counts:
            raise InputError(
                "each batch needs one array per input with the samples on the first axis, all "
                f"of the same length; got shapes {', '.join(str(a.shape) for a in arrays)}"
            )
        self._check_ranks(arrays, "a tf.data.Dataset of samples? pass batch_size=N (or batch it)" if self._dataset
                          is not None else "give each batch with its batch axis (x[None] for one sample)")
        return arrays


class Prefetch:
    """Iterate `source` on a thread, `depth` items ahead."""

    def __init__(self, source: Iterator[Any], depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True, name="graphscope-read")
        self._thread.start()

    def _fill(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # raised again on the consuming thread
            self._put(("error", e))

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
