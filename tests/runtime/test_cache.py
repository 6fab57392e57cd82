"""Resource use: memory stays bounded over many executors, and executors work from many threads."""

from __future__ import annotations

import gc
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import graphscope as gs
from graphscope import demo
from graphscope.runtime.cache import CACHE_SIZE


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def nms_demo():
    scope = gs.trace(demo.proposal_model(), quiet=True)
    # numeric tensors of the demo outside its NMS branch, each a distinct fetch set with the NMS
    plain = [t for t in scope.find() if t.dtype not in ("resource", "variant") and not t.context]
    return scope, plain, demo.synthetic_images()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_a_thousand_executors_keep_memory_bounded(nms_demo):
    """1 000 builds with distinct fetch sets, each called once. Executors and their compiled
    functions are cached per scope (the last CACHE_SIZE); older ones are dropped and TensorFlow
    unregisters their functions, so memory levels off instead of growing per executor."""
    scope, plain, images = nms_demo
    nms = scope.find(op_type="NonMaxSuppressionV3")[0]
    pairs = list(itertools.combinations(plain, 2))
    sets = [[nms, *pairs[k]] for k in range(0, len(pairs), len(pairs) // 1000)][:1000]
    assert len({frozenset(t.name for t in s) for s in sets}) > 900 > 4 * CACHE_SIZE
    samples = []
    for k, fetches in enumerate(sets):
        values = scope.executor(fetches)(images)
        assert len(values) == len({t.name for t in fetches})
        if k % 100 == 99:
            gc.collect()
            samples.append(_rss_mb())
    growth = samples[-1] - samples[1]  # after 200 builds, the caches are full
    print(f"resident memory every 100 builds (MB): {[round(s) for s in samples]}")
    # a leak of one compiled function per build would be 800 x ~1 MB here; the bound is loose
    # enough for allocator noise
    assert growth < 150, f"resident memory grew {growth:.0f} MB over 800 builds: {samples}"


def test_executors_are_safe_to_build_and_call_from_many_threads(nms_demo):
    scope, plain, images = nms_demo
    fetch_sets = [[plain[k], plain[-1 - k], *scope.find(op_type="NonMaxSuppressionV3")] for k in range(0, 40, 5)]
    batches = [images * (1.0 + 0.1 * k) for k in range(4)]
    serial = {(s, b): scope.executor(fetch_sets[s])(batches[b]) for s in range(len(fetch_sets)) for b in range(len(batches))}
    fresh = gs.trace(demo.proposal_model(), quiet=True)  # builds happen concurrently too
    start = threading.Barrier(8)

    def work(worker: int) -> list[tuple[int, int, dict]]:
        start.wait()
        out = []
        for step in range(12):
            s, b = (worker + step) % len(fetch_sets), (worker * step) % len(batches)
            names = [t.name for t in fetch_sets[s]]
            out.append((s, b, fresh.executor(names)(batches[b])))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(work, range(8)) for r in rs]
    assert len(results) == 96
    for s, b, values in results:
        want = serial[(s, b)]
        assert values.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(values[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
