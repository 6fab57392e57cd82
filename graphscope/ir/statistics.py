"""Statistics of tensors over a dataset (`Scope.statistics`), pure data: the mergeable partial
figures (`Moments`), each tensor's final figures (`TensorStats`) and the mapping of them
(`Statistics`).

`graphscope.runtime.statistics` reduces each batch to a `Moments` inside the graph;
`graphscope.data.statistics` (one process) and `graphscope.data.beam` (Beam's `CombineFn`) merge
them with `Moments.merge`, the same code in both; `graphscope.display` registers the table and the
picture.

The merge is Chan, Golub and LeVeque's pairwise update of count, mean and sum of squared
deviations, in float64: merging the partial figures of any split of the values, in any order,
gives the figures of all of them (up to float64 rounding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from graphscope.errors import ArgumentError, OptionError, TensorNotFoundError, key_suggestion
from graphscope.ir.views import Shown, plot

__all__ = ["Moments", "Statistics", "TensorStats", "histogram_edges"]


@dataclasses.dataclass(frozen=True, eq=False)
class Moments:
    """Partial statistics of one tensor over some of the data: one entry per channel (one entry
    for `axis=None`), float64 arrays of shape `[entries]` (`histogram`: `[entries, bins]`).

    `count` counts the finite values, `nonfinite` the NaN and Inf ones; `mean` and `m2` (the sum
    of squared deviations from the mean), `min`, `max` and `zeros` are over the finite values
    only (`min` +inf and `max` -inf where there are none). `histogram` counts finite values per
    bin of fixed edges (None when no histogram is taken)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    zeros: np.ndarray
    nonfinite: np.ndarray
    histogram: np.ndarray | None = None

    @classmethod
    def from_sums(cls, packed: np.ndarray, histogram: np.ndarray | None = None) -> Moments:
        """From the rows a batch is reduced to in the graph (`[entries, 8]`: finite count, sum and
        sum of squares of the finite values' differences from a shift, the shift, min, max, zero
        count, value count), in float64."""
        p = np.asarray(packed, np.float64)
        n, s1, s2, shift, lo, hi, zeros, total = (p[:, k] for k in range(8))
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(n > 0, s1 / np.maximum(n, 1), 0.0)
            mean = np.where(n > 0, shift + d, 0.0)
            m2 = np.where(n > 0, np.maximum(s2 - s1 * d, 0.0), 0.0)
        return cls(n, mean, m2, lo, hi, zeros, total - n, histogram)

    @classmethod
    def empty(cls, entries: int, bins: int | None = None) -> Moments:
        """The figures of no values (the identity of `merge`)."""
        z = np.zeros(entries)
        hist = None if bins is None else np.zeros((entries, bins))
        return cls(z, z, z, np.full(entries, np.inf), np.full(entries, -np.inf), z, z, hist)

    @property
    def entries(self) -> int:
        return len(self.count)

    def merge(self, other: Moments, *, name: str | None = None) -> Moments:
        """The figures of both parts' values together (Chan et al.'s parallel update); `name`:
        the tensor's, for the error where their entries differ."""
        if other.entries != self.entries:
            raise OptionError(
                f"cannot merge the statistics of {name or 'a tensor'!r}: it has {self.entries} entries in one value "
                f"and {other.entries} in another (its channel axis changes size from one loop iteration or batch to "
                "the next); pass axis=None for one figure per tensor"
            )
        na, nb = self.count, other.count
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other.mean - self.mean
            wb = np.where(n > 0, nb / np.maximum(n, 1), 0.0)
            mean = self.mean + delta * wb
            m2 = self.m2 + other.m2 + delta * delta * na * wb
        if (self.histogram is None) != (other.histogram is None):
            raise ArgumentError("cannot merge statistics with a histogram and statistics without one")
        hist = None if self.histogram is None else self.histogram + other.histogram
        return Moments(n, np.where(n > 0, mean, 0.0), np.where(n > 0, m2, 0.0), np.minimum(self.min, other.min),
                       np.maximum(self.max, other.max), self.zeros + other.zeros, self.nonfinite + other.nonfinite,
                       hist)

    def whole(self) -> Moments:
        """The figures of all entries' values together (one entry)."""
        n = self.count.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self.count * self.mean).sum() / n if n else 0.0
            m2 = (self.m2 + self.count * (self.mean - mean) ** 2).sum() if n else 0.0
        hist = None if self.histogram is None else self.histogram.sum(0, keepdims=True)
        one = lambda v: np.asarray([v], np.float64)  # noqa: E731
        return Moments(one(n), one(mean), one(m2), one(self.min.min(initial=np.inf)), one(self.max.max(initial=-np.inf)),
                       one(self.zeros.sum()), one(self.nonfinite.sum()), hist)

    def with_histogram(self, histogram: np.ndarray) -> Moments:
        return dataclasses.replace(self, histogram=np.asarray(histogram, np.float64))


def histogram_edges(lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """Each entry's `bins + 1` edges between its min and max, as `numpy.histogram(values,
    bins)` chooses them (float64 `linspace`; a range of one value widened by 0.5 each side;
    `[0, 1]` where there are no finite values)."""
    lo, hi = np.asarray(lo, np.float64).copy(), np.asarray(hi, np.float64).copy()
    none = ~np.isfinite(lo) | ~np.isfinite(hi)
    lo[none], hi[none] = 0.0, 1.0
    same = lo == hi
    lo[same] -= 0.5
    hi[same] += 0.5
    return np.stack([np.linspace(a, b, bins + 1) for a, b in zip(lo, hi)]) if len(lo) else np.zeros((0, bins + 1))


@dataclasses.dataclass(frozen=True, eq=False)
class TensorStats(Shown):
    """One tensor's statistics over the data: arrays with one entry per channel (`axis` an
    int), or numbers (`axis=None`).

    - `count`: how many finite values went into each entry;
    - `mean`, `std` (population: divided by `count`), `min`, `max`, `zero_fraction` (of the
      finite values): over the finite values (NaN where `count` is 0);
    - `nonfinite`: how many values were NaN or +-Inf (left out of every other figure);
    - `histogram`: `(counts, edges)` when `bins` was given (per entry: `counts[c]`, `edges[c]`),
      counting finite values exactly as `numpy.histogram` does with those edges.
    """

    name: str
    axis: int | None
    dtype: str
    count: Any
    mean: Any
    std: Any
    min: Any
    max: Any
    zero_fraction: Any
    nonfinite: Any
    histogram: tuple[Any, Any] | None = None

    @classmethod
    def of(cls, name: str, moments: Moments, *, axis: int | None, dtype: str,
           edges: np.ndarray | None = None) -> TensorStats:
        """The final figures from merged `moments` (`edges`: the histogram's, when taken)."""
        m = moments
        some = m.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(some, m.mean, np.nan)
            std = np.where(some, np.sqrt(m.m2 / np.where(some, m.count, 1)), np.nan)
            lo = np.where(some, m.min, np.nan)
            hi = np.where(some, m.max, np.nan)
            zero = np.where(some, m.zeros / np.where(some, m.count, 1), np.nan)
        counts = m.count.astype(np.int64)
        nonfinite = m.nonfinite.astype(np.int64)
        hist = None
        if m.histogram is not None and edges is not None:
            hist = (m.histogram.astype(np.int64), np.asarray(edges, np.float64))
        if axis is None:
            one = lambda a: a[0].item()  # noqa: E731
            if hist is not None:
                hist = (hist[0][0], hist[1][0])
            return cls(name, None, dtype, one(counts), one(mean), one(std), one(lo), one(hi), one(zero),
                       one(nonfinite), hist)
        return cls(name, axis, dtype, counts, mean, std, lo, hi, zero, nonfinite, hist)

    @property
    def entries(self) -> int:
        """How many entries (channels) there are: 1 for `axis=None`."""
        return 1 if self.axis is None else len(self.count)

    def whole(self) -> TensorStats:
        """The figures of every entry's values together (`axis=None`, no histogram unless it is
        one already: the entries' bins differ), merged as `Moments.whole` merges them."""
        if self.axis is None:
            return self
        count = np.asarray(self.count, np.float64)
        some = count > 0
        keep = lambda a, fill: np.where(some, np.asarray(a, np.float64), fill)  # noqa: E731
        std = keep(self.std, 0.0)
        moments = Moments(count, keep(self.mean, 0.0), std * std * count, keep(self.min, np.inf),
                          keep(self.max, -np.inf), keep(self.zero_fraction, 0.0) * count,
                          np.asarray(self.nonfinite, np.float64))
        return TensorStats.of(self.name, moments.whole(), axis=None, dtype=self.dtype)

    def dead(self, threshold: float = 0.0) -> np.ndarray:
        """The indices of the entries whose finite values never exceed `threshold` (dead ReLU
        filters with the default 0); entries with no finite value are not counted as dead."""
        hi = np.atleast_1d(np.asarray(self.max, np.float64))
        return np.flatnonzero(~np.isnan(hi) & (hi <= threshold))

    def __repr__(self) -> str:
        per = "per tensor" if self.axis is None else f"{self.entries} entries on axis {self.axis}"
        return f"<TensorStats {self.name}: {per}>"


class Statistics(Mapping[str, TensorStats], Shown):
    """What `Scope.statistics` returns: each fetch's `TensorStats`, keyed as the fetches were
    given (canonical names for a Selection or a Layer), in the order given; `samples` and
    `batches` say how much data went in."""

    def __init__(self, stats: Mapping[str, TensorStats], *, samples: int, batches: int) -> None:
        self._stats = dict(stats)
        self.samples = samples
        self.batches = batches

    def __getitem__(self, key: str) -> TensorStats:
        try:
            return self._stats[key]
        except KeyError:
            by_name = {s.name: s for s in self._stats.values()}
            name = key if key in by_name else f"{key}:0"
            if isinstance(key, str) and name in by_name:
                return by_name[name]
            raise TensorNotFoundError(f"no statistics of {key!r}." + (key_suggestion(str(key), self._stats) or
                                      f" It holds {', '.join(repr(k) for k in list(self._stats)[:5])}.")) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def dead(self, threshold: float = 0.0) -> dict[str, np.ndarray]:
        """Per fetch, the indices of the channels whose values never exceed `threshold` over the
        data (every fetch, with an empty array where none is dead)."""
        return {k: s.dead(threshold) for k, s in self._stats.items()}

    def plot(self, name: str, *, max_channels: int = 256) -> Any:
        """Per channel of `name`: its mean with ±std bars and min/max whiskers (and the
        histogram, when taken); a matplotlib Figure."""
        return plot(self[name], max_channels=max_channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON-ready; NaN where an entry has no finite value)."""
        out: dict[str, Any] = {"samples": self.samples, "batches": self.batches, "tensors": {}}
        for key, s in self._stats.items():
            entry = {f: _plain(getattr(s, f)) for f in ("name", "axis", "dtype", "count", "mean", "std", "min",
                                                          "max", "zero_fraction", "nonfinite")}
            if s.histogram is not None:
                entry["histogram"] = {"counts": _plain(s.histogram[0]), "edges": _plain(s.histogram[1])}
            out["tensors"][key] = entry
        return out

    def __repr__(self) -> str:
        return f"<Statistics of {len(self)} tensor{'s' if len(self) != 1 else ''} over {self.samples} samples>"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
