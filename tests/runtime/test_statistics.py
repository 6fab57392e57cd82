"""The in-graph reductions of `graphscope.runtime.statistics` against numpy: the fast path's
two forms of the sums (as one complex sum, as XLA runs them, and as two float sums) as plain
ops, so the complex form is checked also where TensorFlow has no XLA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from graphscope.ir.statistics import Moments
from graphscope.runtime import statistics as runtime_statistics


@pytest.mark.parametrize("paired", [True, False], ids=["complex-sum", "two-sums"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_figures_equal_numpy(paired, dtype):
    rng = np.random.default_rng(5)
    values = (1e3 + rng.standard_normal((40, 17, 3)) * [1.0, 1e-3, 50.0]).astype(dtype)
    values[3, 4, 0] = 0.0
    figures = Moments.from_sums(runtime_statistics._fast(tf.constant(values), paired=paired).numpy())
    flat = values.astype(np.float64).reshape(-1, 3)
    np.testing.assert_array_equal(figures.count, [len(flat)] * 3)
    np.testing.assert_allclose(figures.mean, flat.mean(0), rtol=1e-7)
    np.testing.assert_allclose(np.sqrt(figures.m2 / figures.count), flat.std(0), rtol=1e-5 if dtype == "float32" else 1e-9)
    np.testing.assert_array_equal(figures.min, flat.min(0))
    np.testing.assert_array_equal(figures.max, flat.max(0))
    np.testing.assert_array_equal(figures.zeros, (flat == 0).sum(0))
