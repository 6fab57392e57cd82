"""Variable writes inside the model's call, at any depth: an executor or a gradient returns what
one call of the model computes from the current state, and every variable keeps its value.

Oracle: the model's own `tf.function`, called eagerly on the same inputs with the variables'
values saved before and put back by hand after; gradients from `tf.GradientTape` around that
call. Every variable is checksummed around every graphscope call.
"""

from __future__ import annotations

import hashlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope.runtime import writes

SPEC = [tf.TensorSpec((None, 3), tf.float32)]
X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)


def checksum(module: tf.Module) -> str:
    h = hashlib.sha256()
    for v in sorted(module.variables, key=lambda v: v.name):
        h.update(v.name.encode() + np.asarray(v.numpy()).tobytes())
    return h.hexdigest()


def model_call(module: tf.Module, x: np.ndarray, *, wrt: list | None = None):
    """The model's own call, then its variables put back as they were: (outputs, gradients of
    the outputs' sum with respect to `wrt`, the input `"x"` or variables)."""
    saved = [v.numpy() for v in module.variables]
    xs = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xs)
        out = module(xs)
        total = tf.reduce_sum(out)
    grads = [tape.gradient(total, xs if isinstance(w, str) else w) for w in (wrt or [])]
    for v, value in zip(module.variables, saved):
        v.assign(value)
    return out.numpy(), [g.numpy() for g in grads]


class LoopAndBranch(tf.Module):
    """The issue's repro: +1 in each of 3 loop iterations, +10 in a branch; the output does not
    read `v`."""

    def __init__(self):
        self.v = tf.Variable(0.0, name="v")

    @tf.function
    def __call__(self, x):
        def body(i, acc):
            self.v.assign_add(1.0)
            return i + 1, acc + x

        _, acc = tf.while_loop(lambda i, a: i < 3, body, [tf.constant(0), tf.zeros_like(x)])
        return tf.cond(tf.reduce_sum(x) > -1e9, lambda: (self.v.assign_add(10.0), acc * 2)[1], lambda: acc)


class WriteThenRead(tf.Module):
    """A top-level write the output reads back, and one no read follows."""

    def __init__(self):
        self.v = tf.Variable(2.0, name="v")
        self.unread = tf.Variable([1.0, 1.0, 1.0], name="unread")

    @tf.function
    def __call__(self, x):
        self.v.assign_add(1.0)
        y = x * self.v + self.unread
        self.unread.assign(tf.reduce_mean(x, 0))
        return y


class LoopAccumulates(tf.Module):
    """A loop that adds into a variable and reads it back in every iteration, then a read after
    the loop."""

    def __init__(self):
        self.total = tf.Variable(tf.ones((3,)), name="total")

    @tf.function
    def __call__(self, x):
        def body(i, acc):
            self.total.assign_add(tf.reduce_sum(x, 0) * tf.cast(i + 1, tf.float32))
            return i + 1, acc + x * self.total

        _, acc = tf.while_loop(lambda i, a: i < 3, body, [tf.constant(0), tf.zeros_like(x)])
        return acc + self.total


class NestedFunction(tf.Module):
    """Writes in a nested `tf.function`, called at the top level and from a loop body: a scatter
    and an optimizer step (`ResourceApplyGradientDescent`), each read back."""

    def __init__(self):
        self.table = tf.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], name="table")
        self.w = tf.Variable([0.5, -1.0, 2.0], name="w")

    @tf.function
    def bump(self, x):
        self.table.scatter_add(tf.IndexedSlices(x[:1], tf.constant([1])))
        tf.raw_ops.ResourceApplyGradientDescent(var=self.w.handle, alpha=tf.constant(0.1), delta=x[0])
        return x * self.w + self.table[1]

    @tf.function
    def __call__(self, x):
        y = self.bump(x)

        def body(i, acc):
            return i + 1, acc + self.bump(acc)

        _, y = tf.while_loop(lambda i, a: i < 2, body, [tf.constant(0), y])
        return y


class MapFnWrites(tf.Module):
    """`tf.map_fn` whose function counts in a variable and scales each row by the count."""

    def __init__(self):
        self.count = tf.Variable(1.0, name="count")

    @tf.function
    def __call__(self, x):
        def row(r):
            self.count.assign_add(1.0)
            return r * self.count

        return tf.map_fn(row, x)


class Generator(tf.Module):
    """A `tf.random.Generator`'s state is a variable the stateful random ops advance."""

    def __init__(self):
        self.rng = tf.random.Generator.from_seed(7)
        self.state = self.rng.state  # so that `variables` lists it

    @tf.function
    def __call__(self, x):
        return x + self.rng.normal(tf.shape(x)) + self.rng.uniform(tf.shape(x))


class XlaWrites(tf.Module):
    """A write in a function compiled with XLA, which TensorFlow does not inline."""

    def __init__(self):
        self.seen = tf.Variable(0.0, name="seen")

    @tf.function(jit_compile=True)
    def helper(self, x):
        self.seen.assign_add(tf.reduce_sum(x))
        return x * 2.0

    @tf.function
    def __call__(self, x):
        return self.helper(x) + 1.0


MODELS = [LoopAndBranch, WriteThenRead, LoopAccumulates, NestedFunction, MapFnWrites, Generator, XlaWrites]


@pytest.mark.parametrize("make", MODELS, ids=lambda m: m.__name__)
def test_executors_return_one_calls_values_and_leave_every_variable(make):
    module = make()
    scope = gs.trace(module, SPEC, quiet=True)
    before = checksum(module)
    for k in range(3):  # the same state every time: the values repeat
        want, _ = model_call(module, X + k)
        assert checksum(module) == before
        (got,) = scope.run(scope.outputs, X + k).values()
        assert checksum(module) == before, f"call {k} moved a variable"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_repro_leaves_the_counter_at_zero():
    module = LoopAndBranch()
    scope = gs.trace(module, SPEC, quiet=True)
    for _ in range(3):
        scope.run(scope.outputs, X)
    assert float(module.v.numpy()) == 0.0
    module(tf.constant(X))  # the model itself still writes
    assert float(module.v.numpy()) == 13.0


@pytest.mark.parametrize("make", [WriteThenRead, LoopAccumulates, NestedFunction], ids=lambda m: m.__name__)
def test_gradients_see_the_writes_and_leave_every_variable(make):
    module = make()
    scope = gs.trace(module, SPEC, quiet=True)
    variables = [v for v in module.trainable_variables if v.name != "unread:0"]
    before = checksum(module)
    _, want = model_call(module, X, wrt=["x", *variables])
    got = scope.gradients(scope.outputs[0], [scope.inputs[0], *variables], X)
    assert checksum(module) == before
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _writes_left(program) -> list[str]:
    """The write ops the executable graph can still run: top-level, and in every function a
    top-level op calls, at any depth."""
    library = {f.signature.name: f for f in program.graph_def.library.function}
    found, todo, seen = [], list(program.graph_def.node), set()
    while todo:
        node = todo.pop()
        if writes.WRITE_OPS.fullmatch(node.op):
            found.append(node.input[0].split(":")[0])
        for value in node.attr.values():
            kind = value.WhichOneof("value")
            for func in [value.func] if kind == "func" else value.list.func if kind == "list" else []:
                if func.name in library and func.name not in seen:
                    seen.add(func.name)
                    todo.extend(library[func.name].node_def)
    return found


@pytest.mark.parametrize("make, copied", [(LoopAndBranch, []), (XlaWrites, []), (WriteThenRead, ["v"])],
                         ids=["loop", "xla", "top"])
def test_a_write_no_read_follows_is_dropped_and_only_a_variable_read_back_is_copied(make, copied):
    """A write that nothing reads back is removed, inside loops and branches too; a copy is made
    only for a variable read back after its write."""
    module = make()
    scope = gs.trace(module, SPEC, quiet=True)
    scope.run(scope.outputs, X)
    program = scope._runtime._program  # what the executable graph became
    assert {program.captures[p].ref() for p in program.private} == {getattr(module, n).handle.ref() for n in copied}
    copies = set(program.private.values())
    left = _writes_left(program)
    assert all(w in copies or w.startswith(tuple(copies)) for w in left), left
    assert bool(left) == bool(copied)


class Counting(keras.Model):
    """A Keras model in training mode: batch-norm statistics (written, never read back) and a
    non-trainable counter a loop adds to and reads."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4, kernel_initializer="glorot_uniform")
        self.bn = keras.layers.BatchNormalization()

    def build(self, shape):
        self.steps = self.add_weight(shape=(), initializer="ones", trainable=False, name="steps")

    def call(self, x, training=False):
        h = self.bn(self.dense(x), training=training)

        def body(i, acc):
            self.steps.assign_add(1.0)
            return i + 1, acc + h * self.steps

        return tf.while_loop(lambda i, a: i < 2, body, [tf.constant(0), tf.zeros_like(h)])[1]


def test_a_keras_model_in_training_mode_moves_no_weight():
    model = Counting()
    model(X)  # built
    scope = gs.trace(model, [tf.TensorSpec((None, 3), tf.float32)], training=True, quiet=True)
    saved = [v.numpy() for v in model.weights]
    want = model(tf.constant(X), training=True).numpy()
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(saved, model.weights)), "Keras itself moves them"
    for v, value in zip(model.weights, saved):
        v.assign(value)
    for _ in range(2):
        (got,) = scope.run(scope.outputs, X).values()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for v, value in zip(model.weights, saved):
            np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)


# ---- the write-op pattern, against TensorFlow's op registry

# ops with a resource input that read a variable or do not write one
NOT_WRITES = {
    "ReadVariableOp", "ResourceGather", "ResourceGatherNd", "VariableShape", "VarIsInitializedOp",
    "ReadVariableXlaSplitND", "_ReadVariablesOp", "DestroyResourceOp", "DisableCopyOnRead",
    "ResourceCreateOp", "ResourceInitializedOp", "ResourceUsingOp",
    "StatefulPartitionedCall", "FakeQueue", "IteratorGetDevice", "ExperimentalIteratorGetDevice",
}


def _registered_ops():
    from tensorflow.python.framework import op_def_registry

    for name in dir(tf.raw_ops):
        op_def = op_def_registry.get(name)
        if op_def is not None:
            yield op_def


def _classified(*, variables: bool, reads, written) -> tuple[list[str], list[str]]:
    """Registered ops with a resource input that is a variable (`variables`) or is not: those
    `reads` lists that still match WRITE_OPS (wrong), and those neither listed nor matching
    `written` (unclassified)."""
    resource = tf.resource.as_datatype_enum
    wrong, unclassified = [], []
    for op_def in _registered_ops():
        inputs = {a.name for a in op_def.input_arg if a.type == resource}
        if not inputs or bool({"resource", "ref", "var"} & inputs) != variables:
            continue
        if reads(op_def.name):
            if writes.WRITE_OPS.fullmatch(op_def.name):
                wrong.append(op_def.name)
        elif not written.fullmatch(op_def.name):
            unclassified.append(op_def.name)
    return wrong, unclassified


def test_every_op_that_writes_a_variable_matches_the_pattern():
    """Every registered op whose resource input is a variable (`resource`, `ref`, `var` or one of
    an optimizer's slots) is told apart: a write, or a known read."""
    wrong, unclassified = _classified(variables=True, reads=NOT_WRITES.__contains__, written=writes.WRITE_OPS)
    assert not wrong and not unclassified, (wrong, unclassified)
    families = ["AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "ResourceScatterNdUpdate",
                "ResourceScatterMax", "ResourceApplyAdam", "ResourceSparseApplyFtrlV2", "ResourceStridedSliceAssign",
                "StatefulUniformFullInt", "RngReadAndSkip", "ResourceCountUpTo"]
    names = {op_def.name for op_def in _registered_ops()}
    assert set(families) <= names
    assert all(writes.WRITE_OPS.fullmatch(f) for f in families)
    calls_and_reads = ["StatefulPartitionedCall", "PartitionedCall", "ReadVariableOp"]
    assert not any(writes.WRITE_OPS.fullmatch(f) for f in calls_and_reads)


# ops with a resource input that is not a variable, which read it or change nothing a model owns
# across calls
STATE_READS = {
    "LookupTableFindV2", "LookupTableSizeV2", "LookupTableExportV2", "QueueSizeV2", "QueueIsClosedV2",
    "ReaderNumRecordsProducedV2", "ReaderNumWorkUnitsCompletedV2", "ReaderSerializeStateV2",
    "ResourceAccumulatorNumAccumulated", "BoostedTreesExampleDebugOutputs", "BoostedTreesGetEnsembleStates",
    "BoostedTreesPredict", "BoostedTreesSerializeEnsemble", "BoostedTreesTrainingPredict",
    "BoostedTreesQuantileStreamResourceGetBucketBoundaries", "IsBoostedTreesEnsembleInitialized",
    "IsBoostedTreesQuantileStreamResourceInitialized", "VariableShape",
    "MutexLock",  # the lock is released when the call ends
    # a table's initializers: they fill it once and are no-ops after (see writes.STATE_WRITE_OPS)
    "InitializeTableV2", "InitializeTableFromTextFileV2", "InitializeTableFromDataset",
}
# values of the call (TensorArrays, datasets and their iterators), files (summary writers) and
# communication: not the model's state (iterators: a model that keeps one across calls is left for
# later)
CALL_LOCAL = re.compile(
    r"TensorArray\w+|\w*Dataset(V\d)?|\w*Iterator\w*|Delete\w+|\w*Summary\w*|ImportEvent|Collective\w+"
)


def test_every_op_that_writes_another_resource_matches_the_pattern():
    """Every registered op whose resource input is not a variable (a table, queue, stack,
    accumulator, reader, tree ensemble) is told apart: a write of the model's state, a read, or
    an op on a value of the call."""
    wrong, unclassified = _classified(
        variables=False, reads=lambda name: name in STATE_READS or bool(CALL_LOCAL.fullmatch(name)),
        written=writes.STATE_WRITE_OPS,
    )
    assert not wrong and not unclassified, (wrong, unclassified)
    families = ["LookupTableInsertV2", "LookupTableRemoveV2", "LookupTableImportV2", "QueueEnqueueV2",
                "QueueDequeueManyV2", "StackPushV2", "ResourceAccumulatorApplyGradient", "ReaderReadV2",
                "BoostedTreesUpdateEnsembleV2"]
    assert set(families) <= {op_def.name for op_def in _registered_ops()}
    assert all(writes.WRITE_OPS.fullmatch(f) for f in families)
    assert not any(writes.STATE_WRITE_OPS.fullmatch(f) for f in ["LookupTableFindV2", "TensorArrayWriteV3"])


# ---- resources that are not variables: lookup tables

K7 = tf.constant([7], tf.int64)


class CountsInATable(tf.Module):
    """The review's repro: reads key 7, then inserts the value read + 1 (the insert waits on the
    read), and returns x + the value read."""

    def __init__(self):
        self.table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, default_value=0.0)

    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        seen = self.table.lookup(K7)
        with tf.control_dependencies([seen]):
            self.table.insert(K7, seen + 1.0)
        return x + seen


class CountsInALoop(CountsInATable):
    """Key 7 set to the running sum of x in each of 3 iterations of a `tf.while_loop` body (the
    body never reads the table); returns the sum + the value read before the loop."""

    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        seen = self.table.lookup(K7)

        def body(i, acc):
            self.table.insert(K7, tf.reshape(tf.reduce_sum(acc), [1]))
            return i + 1, acc + x

        _, acc = tf.while_loop(lambda i, a: i < 3, body, [tf.constant(0), tf.zeros_like(x)])
        return acc + seen


class ReadsItsInsert(CountsInATable):
    """Inserts x's sum at key 7, then returns x + the value looked up after the insert."""

    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        self.table.insert(K7, tf.reshape(tf.reduce_sum(x), [1]))
        return x + self.table.lookup(K7)


def _contents(table) -> dict[int, float]:
    keys, values = table.export()
    return dict(zip(keys.numpy().tolist(), values.numpy().tolist()))


@pytest.mark.parametrize("make", [CountsInATable, CountsInALoop], ids=["top level", "while body"])
def test_a_table_write_nothing_reads_back_is_dropped_and_the_table_unchanged(make):
    model = make()
    model.table.insert(K7, tf.constant([5.0]))
    model.table.insert(tf.constant([2], tf.int64), tf.constant([-1.0]))
    before = _contents(model.table)
    fresh = make()  # the oracle: the model's own function on a table holding what model's holds
    fresh.table.insert(K7, tf.constant([5.0]))
    want = fresh(tf.constant(X)).numpy()
    assert _contents(fresh.table) != before, "the model's own call changes its table"
    scope = gs.trace(model, quiet=True)
    for _ in range(3):
        (got,) = scope.run(scope.outputs, X).values()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert _contents(model.table) == before


def test_a_table_read_back_after_a_write_is_refused_when_the_executor_is_built():
    model = ReadsItsInsert()
    model.table.insert(K7, tf.constant([5.0]))
    scope = gs.trace(model, quiet=True)  # tracing and inspecting it still work
    assert scope.find(op_type="LookupTableFindV2")
    with pytest.raises(gs.UnsupportedModelError, match=r"not a tf.Variable.*LookupTableInsertV2.*reads it back"):
        scope.run(scope.outputs, X)
    assert _contents(model.table) == {7: 5.0}


def test_a_table_written_and_read_in_a_loop_body_is_refused():
    class Accumulates(CountsInATable):
        @tf.function(input_signature=SPEC)
        def __call__(self, x):
            def body(i, acc):
                self.table.insert(K7, self.table.lookup(K7) + 1.0)
                return i + 1, acc + x * tf.reduce_sum(self.table.lookup(K7))

            _, acc = tf.while_loop(lambda i, a: i < 3, body, [tf.constant(0), tf.zeros_like(x)])
            return acc

    model = Accumulates()
    scope = gs.trace(model, quiet=True)
    with pytest.raises(gs.UnsupportedModelError, match=r"not a tf.Variable"):
        scope.run(scope.outputs, X)
    assert _contents(model.table) == {}


def test_a_static_table_made_in_the_function_is_initialized_and_read():
    """A `StaticHashTable` made inside the function: its initializer (an import) is not a write,
    so the executor runs it and the lookups see the table. Oracle: the function's own call."""
    @tf.function(input_signature=[tf.TensorSpec((None,), tf.int64)])
    def lookup(k):
        init = tf.lookup.KeyValueTensorInitializer(tf.constant([1, 2], tf.int64), tf.constant([3.0, 4.0]))
        return tf.lookup.StaticHashTable(init, -1.0).lookup(k) * 2.0

    k = np.array([2, 5, 1], np.int64)
    scope = gs.trace(lookup, quiet=True)
    (got,) = scope.run(scope.outputs, k).values()
    np.testing.assert_array_equal(got, lookup(tf.constant(k)).numpy())


class Enqueues(tf.Module):
    """Puts x's sum on its own queue and returns x * 2."""

    def __init__(self):
        self.queue = tf.queue.FIFOQueue(10, tf.float32, shapes=[[]])

    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        self.queue.enqueue(tf.reduce_sum(x))
        return x * 2.0


class Dequeues(Enqueues):
    """Takes an element off its own queue: the write's result is what the call uses."""

    @tf.function(input_signature=SPEC)
    def __call__(self, x):
        return x * self.queue.dequeue()


def test_a_queue_keeps_its_elements_an_enqueue_is_dropped_and_a_dequeue_refused():
    model = Enqueues()
    model.queue.enqueue(3.0)
    scope = gs.trace(model, quiet=True)
    for _ in range(2):
        (got,) = scope.run(scope.outputs, X).values()
        np.testing.assert_array_equal(got, X * 2.0)
        assert model.queue.size().numpy() == 1
    model = Dequeues()
    model.queue.enqueue(3.0)
    scope = gs.trace(model, quiet=True)
    with pytest.raises(gs.UnsupportedModelError, match=r"QueueDequeueV2.*from what the write returns"):
        scope.run(scope.outputs, X)
    assert model.queue.size().numpy() == 1
