"""Showing graphscope's objects: rich renderables for terminals, HTML for notebooks, text for logs.

Importing this package registers the views of the records (`graphscope.ir.views`); the package's
own `__init__` imports it first. Modules: `format` (one spelling of a shape, counts, text and
HTML export), `tables`, `tree` (layer trees), `picture` (drawings), `progress`.
"""

from __future__ import annotations

from graphscope.display import format, tables
from graphscope.ir import views
from graphscope.ir.numerics import Numerics
from graphscope.ir.records import Layer, Results, Selection
from graphscope.ir.statistics import Statistics, TensorStats

__all__ = ["format", "tables"]

def _plot(value: object, **options: object) -> object:
    from graphscope.display.plot import plot_statistics, plot_value  # matplotlib, only when a picture is asked for

    if isinstance(value, TensorStats):
        return plot_statistics(value, **options)
    return plot_value(value, **options)


views.install(text=format.to_text, html=format.to_html, plot=_plot)
views.view.register(Selection)(tables.selection_table)
views.view.register(Layer)(tables.layer_view)
views.view.register(Results)(tables.results_table)
views.view.register(Numerics)(tables.numerics_view)
views.view.register(Statistics)(tables.statistics_view)
views.view.register(TensorStats)(tables.tensor_stats_view)
