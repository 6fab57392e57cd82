import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import models  # noqa: E402


@pytest.fixture(params=sorted(models.ZOO))
def zoo_model(request):
    return request.param, models.ZOO[request.param]()


def weights_snapshot(model):
    """A copy of every weight, to check a model was left untouched."""
    return [np.array(w) for w in model.weights]


def assert_weights_unchanged(model, before):
    after = weights_snapshot(model)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
