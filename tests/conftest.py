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


@pytest.fixture(scope="session")
def functional_scope():
    """The zoo's functional CNN, traced once for every test that only reads it."""
    import graphscope as gs

    return gs.trace(models.functional(), quiet=True)


@pytest.fixture(scope="session")
def demo_scope():
    """The demo (its ROI layer's NMS in a Python loop), traced once."""
    import graphscope as gs
    from graphscope import demo

    return gs.trace(demo.proposal_model(), quiet=True)


@pytest.fixture(scope="session")
def map_fn_scope():
    """The demo with its NMS inside `tf.map_fn`, traced once."""
    import graphscope as gs
    from graphscope import demo

    return gs.trace(demo.proposal_model(variant="map_fn"), quiet=True)


@pytest.fixture(params=sorted(models.ZOO))
def zoo_model(request):
    return request.param, models.ZOO[request.param]()


def text_at(renderable, width=80):
    """What a terminal `width` columns wide shows for `renderable`, without colour."""
    import io

    from rich.console import Console

    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def weights_snapshot(model):
    """A copy of every weight, to check a model was left untouched."""
    return [np.array(w) for w in model.weights]


def assert_weights_unchanged(model, before):
    after = weights_snapshot(model)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
