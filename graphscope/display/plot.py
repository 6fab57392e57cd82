"""Pictures of values: feature maps, attention heads, heatmaps, lines, iterations, overlays.

Figures are `matplotlib.figure.Figure` objects made without pyplot (no global state, no GUI
backend): a notebook shows them inline, `fig.savefig(path)` writes them. matplotlib is an extra
(`pip install "tf-graphscope[plot]"`), imported only here, on the first picture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphscope.errors import InputError, MissingDependencyError, OptionError

__all__ = ["KINDS", "kind_of", "overlay", "plot_value"]

KINDS = ("feature_maps", "attention", "heatmap", "line", "iterations")
_PANEL = 1.6  # inches per small panel


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
        return _iterations(value, name)
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise InputError(f"cannot draw {name!r}: its values are {a.dtype}, not numbers")
    if kind in ("feature_maps", "attention"):
        if a.ndim != 4:
            raise InputError(f"{kind} pictures take 4-D values ([batch, ...]); {name!r} has shape {list(a.shape)}")
        if not 0 <= sample < a.shape[0]:
            raise InputError(f"sample {sample} is out of range: {name!r} holds {a.shape[0]} (0..{a.shape[0] - 1})")
        if kind == "feature_maps":
            maps = np.moveaxis(a[sample], -1, 0)[:max_channels]  # [channels, h, w]
            return _grid(maps, [f"channel {k}" for k in range(len(maps))], f"{name} (sample {sample})", "viridis")
        heads = a[sample]  # [heads, queries, keys]
        return _grid(heads, [f"head {h}" for h in range(len(heads))], f"{name} (sample {sample})", "magma",
                     labels=("key", "query"), vmin=0.0, vmax=1.0)
    if kind == "heatmap":
        grid = a[sample] if a.ndim == 3 else a
        return _grid(grid[None], [name], "", "viridis")
    return _line(a.reshape(-1), name)


def _grid(images: np.ndarray, titles: list[str], title: str, cmap: str, *, labels: tuple[str, str] | None = None,
          vmin: float | None = None, vmax: float | None = None) -> Any:
    n = len(images)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig = _figure(_PANEL * cols + 0.6, _PANEL * rows + 0.5)
    if title:
        fig.suptitle(title, fontsize=9)
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(images[k], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
        ax.set_title(titles[k], fontsize=7)
        if labels:
            ax.set_xlabel(labels[0], fontsize=6)
            ax.set_ylabel(labels[1], fontsize=6)
        ax.tick_params(labelsize=5)
        if not labels:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def _line(values: np.ndarray, name: str, fig: Any = None, ax: Any = None) -> Any:
    if fig is None:
        fig = _figure(6, 2.4)
        ax = fig.add_subplot(1, 1, 1)
        ax.set_title(name, fontsize=8)
    if len(values) <= 64:
        ax.bar(np.arange(len(values)), values.astype(np.float64))
    else:
        ax.plot(np.arange(len(values)), values.astype(np.float64), linewidth=0.8)
    ax.tick_params(labelsize=6)
    return fig


def _iterations(value: Any, name: str) -> Any:
    """One row per iteration: each iteration's value as a line (or bars), or a heatmap when 2-D."""
    items = list(value) if isinstance(value, list) else list(np.asarray(value))
    n = max(len(items), 1)
    fig = _figure(6, 1.2 * n + 0.5)
    fig.suptitle(f"{name}: {len(items)} iteration{'s' if len(items) != 1 else ''}", fontsize=9)
    for k, item in enumerate(items):
        ax = fig.add_subplot(n, 1, k + 1)
        ax.set_ylabel(f"{k}", fontsize=7, rotation=0, labelpad=10)
        if item is None:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        a = np.asarray(item)
        if a.ndim == 2:
            ax.imshow(a, cmap="viridis", interpolation="nearest", aspect="auto")
        else:
            _line(a.reshape(-1), name, fig, ax)
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
