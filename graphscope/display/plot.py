"""Pictures of values: feature maps, attention heads, heatmaps, lines, iterations, overlays;
statistics over a dataset.

Figures are `matplotlib.figure.Figure` objects made without pyplot (no global state, no GUI
backend): a notebook shows them inline, `fig.savefig(path)` writes them. matplotlib is an extra
(`pip install "tf-graphscope[plot]"`), imported only here, on the first picture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphscope.errors import InputError, MissingDependencyError, OptionError

__all__ = ["KINDS", "kind_of", "overlay", "plot_comparison", "plot_statistics", "plot_value"]

KINDS = ("feature_maps", "attention", "heatmap", "line", "iterations")
_PANEL = 1.6  # inches per small panel
_TITLE = 9  # points: a figure's title, shrunk (down to _SMALLEST, then the figure widens) to fit whole
_SMALLEST = 5.0


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            'pictures need matplotlib, which is not installed: pip install "tf-graphscope[plot]" (or matplotlib)'
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def _is_attention(a: np.ndarray) -> bool:
    """[batch, heads, queries, keys] of probabilities: in [0, 1], each row summing to one."""
    return (a.ndim == 4 and a.shape[1] <= 64 and a.dtype.kind == "f" and a.size > 0
            and float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and np.allclose(a.sum(axis=-1), 1.0, atol=1e-3))


def kind_of(value: Any, *, per_iteration: bool = False) -> str:
    """Which picture a value gets (see `Results.plot`)."""
    if isinstance(value, list) or per_iteration:
        return "iterations"
    a = np.asarray(value)
    if a.ndim == 4:
        return "attention" if _is_attention(a) else "feature_maps"
    if a.ndim in (2, 3):
        return "heatmap"
    return "line"


def plot_value(value: Any, *, name: str = "", sample: int = 0, max_channels: int = 64, kind: str | None = None,
               per_iteration: bool = False) -> Any:
    """The picture of one value (`Results.plot` calls this)."""
    if value is None:
        raise InputError(f"{name!r} has no value: its branch did not run")
    kind = kind or kind_of(value, per_iteration=per_iteration)
    if kind not in KINDS:
        raise OptionError(f"unknown picture kind {kind!r}: choose {', '.join(KINDS)}")
    if kind == "iterations":
        return _iterations(value, name, sample)
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise InputError(f"cannot draw {name!r}: its values are {a.dtype}, not numbers")
    if kind in ("feature_maps", "attention"):
        if a.ndim != 4:
            raise InputError(f"{kind} pictures take 4-D values ([batch, ...]); {name!r} has shape {list(a.shape)}")
        _check_sample(sample, a.shape[0], name)
        if kind == "feature_maps":
            maps = np.moveaxis(a[sample], -1, 0)[:max_channels]  # [channels, h, w]
            return _grid(maps, [f"channel {k}" for k in range(len(maps))], f"{name} (sample {sample})", "viridis")
        heads = a[sample]  # [heads, queries, keys]
        return _grid(heads, [f"head {h}" for h in range(len(heads))], f"{name} (sample {sample})", "magma",
                     labels=("key", "query"), vmin=0.0, vmax=1.0)
    if kind == "heatmap":
        if a.ndim == 3:
            _check_sample(sample, a.shape[0], name)
        grid = a[sample] if a.ndim == 3 else a
        return _grid(grid[None], [""], name, "viridis")
    return _line(a.reshape(-1), name)


def _check_sample(sample: int, held: int, name: str) -> None:
    if not 0 <= sample < held:
        raise InputError(f"sample {sample} is out of range: {name!r} holds {held} (0..{held - 1})")


def _fit_title(fig: Any, text: str) -> None:
    """`text` as the figure's title, whole: its font shrinks until it fits the figure's width;
    below _SMALLEST points the figure widens instead (names are not cut, nor wrapped)."""
    from matplotlib.backends.backend_agg import RendererAgg

    title = fig.suptitle(text, fontsize=_TITLE)
    renderer = RendererAgg(int(fig.bbox.width), int(fig.bbox.height), fig.dpi)  # measures only; no canvas set
    width = title.get_window_extent(renderer).width
    room = 0.92 * fig.bbox.width
    if width > room:
        size = _TITLE * room / width
        if size < _SMALLEST:
            fig.set_figwidth(fig.get_figwidth() * _SMALLEST / size)
            size = _SMALLEST
        title.set_fontsize(size)


def _colorbar(fig: Any, mappable: Any, axes: list[Any]) -> None:
    """One colorbar for the figure (`axes` share `mappable`'s color scale), right of the top row's
    last panel. It is an inset of that panel, so `fig.axes` stays the panels alone (axis k is
    panel k)."""
    cols = axes[0].get_subplotspec().get_gridspec().ncols
    host = axes[min(cols, len(axes)) - 1]
    bar = fig.colorbar(mappable, cax=host.inset_axes((1.04, 0.0, 0.05, 1.0)))
    bar.ax.tick_params(labelsize=6)


def _grid(images: np.ndarray, titles: list[str], title: str, cmap: str, *, labels: tuple[str, str] | None = None,
          vmin: float | None = None, vmax: float | None = None) -> Any:
    """One panel per image, all on one color scale (the shown values' range unless given), so
    that a color means the same value in every panel; one colorbar for the figure."""
    n = len(images)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig = _figure(_PANEL * cols + 1.0, _PANEL * rows + 0.5)
    if title:
        _fit_title(fig, title)
    shown = np.asarray(images, dtype=np.float64)
    finite = shown[np.isfinite(shown)]
    if vmin is None:
        vmin = float(finite.min()) if finite.size else 0.0
    if vmax is None:
        vmax = float(finite.max()) if finite.size else 1.0
    axes = []
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        mappable = ax.imshow(images[k], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
        axes.append(ax)
        if titles[k]:
            ax.set_title(titles[k], fontsize=7)
        if labels:
            ax.set_xlabel(labels[0], fontsize=6)
            ax.set_ylabel(labels[1], fontsize=6)
        ax.tick_params(labelsize=5)
        if not labels:
            ax.set_xticks([])
            ax.set_yticks([])
    if n:
        _colorbar(fig, mappable, axes)
    return fig


def _line(values: np.ndarray, name: str, fig: Any = None, ax: Any = None) -> Any:
    if fig is None:
        fig = _figure(6, 2.4)
        _fit_title(fig, name)
        ax = fig.add_subplot(1, 1, 1)
    if len(values) <= 64:
        ax.bar(np.arange(len(values)), values.astype(np.float64))
    else:
        ax.plot(np.arange(len(values)), values.astype(np.float64), linewidth=0.8)
    ax.tick_params(labelsize=6)
    return fig


def _iterations(value: Any, name: str, sample: int) -> Any:
    """One row per iteration: each iteration's value as a line (or bars), or a heatmap when 2-D.
    An iteration's value of two or more axes has the batch on its first ([iterations, batch,
    ...]): row k shows `sample` of iteration k. 1-D values (a `tf.map_fn` over the batch: one
    iteration per sample, NMS indices) have no batch axis and are drawn whole. Heatmap rows share
    one color scale and one colorbar."""
    items = list(value) if isinstance(value, list) else list(np.asarray(value))
    picked: list[np.ndarray | None] = []
    for item in items:
        a = None if item is None else np.asarray(item)
        if a is not None and a.ndim >= 2:
            _check_sample(sample, a.shape[0], name)
            a = a[sample]
        picked.append(a)
    maps = [a for a in picked if a is not None and a.ndim == 2]
    finite = np.concatenate([m[np.isfinite(m)].astype(np.float64).ravel() for m in maps]) if maps else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    n = max(len(items), 1)
    fig = _figure(6.4 if maps else 6, 1.2 * n + 0.5)
    batched = any(item is not None and np.ndim(item) >= 2 for item in items)
    _fit_title(fig, f"{name}: {len(items)} iteration{'s' if len(items) != 1 else ''}"
                    + (f" (sample {sample})" if batched else ""))
    heat_axes, mappable = [], None
    for k, a in enumerate(picked):
        ax = fig.add_subplot(n, 1, k + 1)
        ax.set_ylabel(f"{k}", fontsize=7, rotation=0, labelpad=10)
        if a is None:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if a.ndim == 2:
            mappable = ax.imshow(a, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest", aspect="auto")
            heat_axes.append(ax)
        else:
            _line(a.reshape(-1), name, fig, ax)
    if mappable is not None:
        _colorbar(fig, mappable, heat_axes)
    return fig


def overlay(heatmap: Any, image: Any, *, alpha: float = 0.5, cmap: str = "jet", title: str | None = None) -> Any:
    """A Figure of `heatmap` (2-D, e.g. a Grad-CAM map) drawn over `image` (`[h, w]`,
    `[h, w, channels]` or one sample `[1, h, w, channels]`), the heatmap scaled up to the image's
    size by repeating its cells (they must divide the image's height and width), in [0, 1]."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim not in (2, 3):
        raise InputError(f"overlay takes an image [h, w] or [h, w, channels], got shape {list(img.shape)}")
    heat = np.asarray(heatmap, dtype=np.float64)
    heat = heat.reshape(heat.shape[-2:]) if heat.ndim > 2 and all(d == 1 for d in heat.shape[:-2]) else heat
    if heat.ndim != 2:
        raise InputError(f"overlay takes a 2-D heatmap, got shape {list(heat.shape)}")
    h, w = img.shape[:2]
    if h % heat.shape[0] or w % heat.shape[1]:
        raise InputError(
            f"the heatmap's shape {list(heat.shape)} does not divide the image's {h}x{w}: give a heatmap whose cells tile it"
        )
    big = np.kron(heat, np.ones((h // heat.shape[0], w // heat.shape[1])))
    span = big.max() - big.min()
    big = (big - big.min()) / span if span > 0 else np.zeros_like(big)
    lo, hi = img.min(), img.max()
    shown = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if shown.ndim == 3 and shown.shape[-1] == 1:
        shown = shown[..., 0]
    fig = _figure(3.2, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, interpolation="nearest")
    ax.imshow(big, cmap=cmap, alpha=alpha, interpolation="nearest", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return fig


def plot_comparison(comparison: Any) -> Any:
    """Two runs compared (`graphscope.comparison.Comparison.plot`): max |a-b| and max relative
    error per row along a's depth (topological order), log scale; exact zeros drawn on the
    bottom edge, rows that cannot be compared (a shape mismatch) as crosses there; the first
    row outside tolerance marked by a vertical line and its name."""
    rows = comparison.rows
    fig = _figure(7, 3.2)
    _fit_title(fig, f"{len(rows)} {'tensors' if comparison.match == 'tensors' else 'layer outputs'} compared "
                    f"(rtol={comparison.rtol:g}, atol={comparison.atol:g})")
    ax = fig.add_subplot(1, 1, 1)
    depth = np.arange(len(rows))
    positive = [v for r in rows for v in (r.max_abs, r.max_rel) if np.isfinite(v) and v > 0]
    floor = min(positive) / 10 if positive else 1e-12
    for field, label, style in (("max_abs", "max |a-b|", "o-"), ("max_rel", "max relative error", "s--")):
        values = np.array([getattr(r, field) for r in rows], dtype=np.float64)
        shown = np.where(values > 0, values, floor)  # zeros (and NaN: not comparable) on the floor
        shown = np.where(np.isfinite(values), shown, np.nan)
        ax.plot(depth, shown, style, markersize=3, linewidth=0.8, label=label)
    if any(r.max_abs == 0 or r.max_rel == 0 for r in rows):
        ax.axhline(floor, color="gray", linewidth=0.6, linestyle=":", label="exactly 0 (drawn here)")
    broken = [k for k, r in enumerate(rows) if not np.isfinite(r.max_abs)]
    if broken:
        ax.plot(broken, [floor] * len(broken), "x", color="black", label="not comparable")
    ax.set_yscale("log")
    first = comparison.first
    if first is not None:
        k = rows.index(first)
        ax.axvline(k, color="red", linewidth=1.0, label=f"first outside tolerance: {first.name}")
    ax.set_xlabel("depth (a's topological order)", fontsize=7)
    ax.set_ylabel("error", fontsize=7)
    if len(rows) <= 40:
        ax.set_xticks(depth, [r.name for r in rows], rotation=90, fontsize=5)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)
    return fig


def plot_statistics(stats: Any, *, max_channels: int = 256) -> Any:
    """One tensor's statistics over a dataset (`Statistics.plot`): per channel (the first
    `max_channels`), its mean as a point with ±std error bars and a thin whisker from its min to
    its max, dead channels (never above 0) marked; with a histogram, each channel's below it as
    a column of colors (the fraction of its values in each of its bins, from its min at the bottom
    to its max at the top). For `axis=None`, with a histogram, the histogram itself as bars
    between its edges, the mean and ±std marked."""
    if not isinstance(max_channels, (int, np.integer)) or isinstance(max_channels, bool) or max_channels < 1:
        raise OptionError(f"max_channels must be a whole number >= 1, got {max_channels!r}")
    if stats.axis is None and stats.histogram is not None:
        return _histogram(stats)
    mean, std = np.atleast_1d(np.asarray(stats.mean, np.float64)), np.atleast_1d(np.asarray(stats.std, np.float64))
    lo, hi = np.atleast_1d(np.asarray(stats.min, np.float64)), np.atleast_1d(np.asarray(stats.max, np.float64))
    shown = min(len(mean), int(max_channels))
    x = np.arange(shown)
    with_hist = stats.histogram is not None
    fig = _figure(7, 4.6 if with_hist else 3.0)
    if stats.axis is None:
        what = "one figure for the tensor"
    else:
        what = f"{len(mean)} channel{'s' if len(mean) != 1 else ''} of axis {stats.axis}"
        what += f" (the first {shown} drawn)" if shown < len(mean) else ""
    _fit_title(fig, f"{stats.name}: {what}")
    ax = fig.add_subplot(2 if with_hist else 1, 1, 1)
    ax.vlines(x, lo[:shown], hi[:shown], color="0.6", linewidth=0.8, label="min..max")
    ax.errorbar(x, mean[:shown], yerr=std[:shown], fmt="o", markersize=2.5, capsize=2, linewidth=0.8,
                label="mean ± std")
    dead = stats.dead()
    dead = dead[dead < shown]
    if len(dead):
        ax.plot(dead, hi[dead], "x", color="red", markersize=4, label=f"dead ({len(stats.dead())})")
    ax.set_ylabel("value", fontsize=7)
    ax.set_xlim(-0.5, shown - 0.5)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)
    if with_hist:
        counts = np.atleast_2d(np.asarray(stats.histogram[0], np.float64))[:shown]
        total = counts.sum(1, keepdims=True)
        share = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
        low = fig.add_subplot(2, 1, 2, sharex=ax)
        mappable = low.imshow(share.T, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                              extent=(-0.5, shown - 0.5, 0, counts.shape[1]))
        low.set_ylabel("bin (own min..max)", fontsize=7)
        low.set_yticks([])
        low.tick_params(labelsize=6)
        _colorbar(fig, mappable, [low])
    ax.set_xlabel("channel" if stats.axis is not None else "", fontsize=7)
    return fig


def _histogram(stats: Any) -> Any:
    """A tensor's histogram over the data as bars between its edges; the mean and ±std marked."""
    counts, edges = np.asarray(stats.histogram[0]), np.asarray(stats.histogram[1], np.float64)
    fig = _figure(6, 2.8)
    _fit_title(fig, f"{stats.name}: {stats.count} values in {len(counts)} bins")
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", linewidth=0)
    if np.isfinite(stats.mean):
        ax.axvline(stats.mean, color="black", linewidth=0.8, label=f"mean {stats.mean:.3g}")
        ax.axvspan(stats.mean - stats.std, stats.mean + stats.std, color="0.5", alpha=0.2,
                   label=f"± std {stats.std:.3g}")
        ax.legend(fontsize=6)
    ax.set_xlabel("value", fontsize=7)
    ax.set_ylabel("count", fontsize=7)
    ax.tick_params(labelsize=6)
    return fig
