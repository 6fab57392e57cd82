"""Extraction on Apache Beam: `ExtractToZarr`, `ReadNpy` and `GraphscopeModelHandler` (see
`graphscope.data.beam`). Needs `pip install "tf-graphscope[beam]"`."""

from graphscope.data.beam import ExtractToZarr, GraphscopeModelHandler, ReadNpy

__all__ = ["ExtractToZarr", "GraphscopeModelHandler", "ReadNpy"]
