"""Extraction and statistics on Apache Beam: `ExtractToZarr`, `ComputeStatistics`, `ReadNpy` and
`GraphscopeModelHandler` (see `graphscope.data.beam`). Needs `pip install "tf-graphscope[beam]"`."""

from graphscope.data.beam import ComputeStatistics, ExtractToZarr, GraphscopeModelHandler, ReadNpy

__all__ = ["ComputeStatistics", "ExtractToZarr", "GraphscopeModelHandler", "ReadNpy"]
