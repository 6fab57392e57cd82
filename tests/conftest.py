import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests import models  # noqa: E402

# hypothesis: `ci` (default) replays a fixed set of examples, so CI cannot flake on a new draw;
# `long` draws 250 new models each run (a hand run: HYPOTHESIS_PROFILE=long)
_SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_SLOW_DRAWS)
settings.register_profile("long", max_examples=250, deadline=None, suppress_health_check=_SLOW_DRAWS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
