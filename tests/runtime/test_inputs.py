"""inputs: what a caller passes to an executor, bound to the fed tensors."""

import numpy as np
import tensorflow as tf

import graphscope as gs


def test_a_dict_argument_is_fed_by_its_name_when_that_is_also_its_placeholders_raw_name(tmp_path):
    """`f(batch, scale)` with `batch` a dict, a tf.function's own signature: TensorFlow names
    the dict's placeholders `batch`, `batch_1`, so `batch` is also a raw name of one of its
    inputs. A nest given as `{"batch": {...}}` is the argument (it was read as that one input
    and refused), an array by that raw name is still the input; live and restored from a
    SavedModel alike. The oracle: the function called eagerly."""
    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    module.u = tf.Variable(np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32))

    @tf.function(input_signature=[{"img": tf.TensorSpec((None, 4)), "aux": tf.TensorSpec((None, 2))},
                                  tf.TensorSpec(())])
    def f(batch, scale):
        return tf.nn.relu(tf.matmul(batch["img"], module.w) * scale + tf.matmul(batch["aux"], module.u))

    module.f = f
    tf.saved_model.save(module, str(tmp_path / "nested"))
    loaded = tf.saved_model.load(str(tmp_path / "nested"))  # kept: its function reads its variables
    rng = np.random.default_rng(2)
    batch = {"img": rng.normal(size=(3, 4)).astype(np.float32), "aux": rng.normal(size=(3, 2)).astype(np.float32)}
    want = f(batch, tf.constant(1.5)).numpy()
    for scope in (gs.trace(f, quiet=True), gs.trace(loaded.f, quiet=True)):
        assert scope.inputs == ["aux", "img", "scale"]
        (out,) = scope.outputs.names
        for given in ({"batch": batch, "scale": 1.5}, [batch, 1.5], {**batch, "scale": 1.5}):
            np.testing.assert_allclose(scope.run(out, given)[out], want, rtol=1e-6)
        raw = {t.raw_name.rpartition(":")[0]: name for name, t in zip(scope.inputs, scope.model_graph.inputs)}
        key = raw["batch"]  # the input whose placeholder TensorFlow named `batch`, given by that name
        other = "img" if key == "aux" else "aux"
        np.testing.assert_allclose(scope.run(out, {"batch": batch[key], other: batch[other], "scale": 1.5})[out],
                                   want, rtol=1e-6)
