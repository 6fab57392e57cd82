"""Statistics per channel of a tensor whose rank the rewritten graph loses (batch norm's
output and what follows it): the rank the graph records is used."""

from __future__ import annotations

import numpy as np

import graphscope as gs
from tests import models


def test_per_channel_statistics_after_batch_norm_equal_numpy():
    scope = gs.trace(models.functional(), quiet=True)
    x = np.random.default_rng(2).normal(size=(7, 8, 8, 3)).astype("float32")
    names = ["bn/batchnorm/add_1:0", "relu/Relu:0"]
    stats = scope.statistics(names, x, batch_size=4, quiet=True)
    for name in names:
        values = np.concatenate([scope.run(name, x[:4])[name], scope.run(name, x[4:])[name]]).astype(np.float64)
        values = values.reshape(-1, values.shape[-1])
        assert stats[name].count.tolist() == [len(values)] * 4
        np.testing.assert_allclose(stats[name].mean, values.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats[name].std, values.std(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(stats[name].max, values.max(0))
