"""Where a mirrored tensor is computed in the executable (inlined) graph.

The inliner renames the ops of inlined calls (`<call>/<op>`), keeps loops, branches and XLA calls
functional, and may drop an op whose value another tensor also holds (a call's argument is the
call's input). `Locator.locate` follows a tensor's `Site` through that graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from graphscope.backend.mirror import Site
from graphscope.errors import UnsupportedFetchError
from graphscope.ir.records import Tensor
from graphscope.runtime import expose

__all__ = ["Locator"]


class Locator:
    """Finds tensors in an executable GraphDef's nodes and function library."""

    def __init__(
        self,
        nodes: Mapping[str, Any],
        library: dict[str, Any],
        tensors: Mapping[str, Tensor],
        sites: Mapping[str, Site],
    ) -> None:
        self.nodes = nodes
        self.library = library
        self.tensors = tensors
        self.sites = sites
        self._functions: dict[str, dict[str, Any]] = {}

    def locate(self, t: Tensor) -> str | expose.Target:
        """Where `t` is computed at run time: a top-level tensor name, or an `expose.Target`
        inside a loop, branch or call the inliner kept.

        Raises:
            UnsupportedFetchError: TensorFlow's optimizer removed it.
        """
        seen = {t.name}
        while True:
            where = self._direct(t)
            if where is not None:
                return where
            alias = self.sites[t.name].alias
            if alias is None or alias in seen:
                raise UnsupportedFetchError(
                    f"cannot run {t.name!r}: TensorFlow's function inliner did not keep its op "
                    f"({t.raw_name.rpartition(':')[0]!r}) in the executable graph; fetch a tensor "
                    "that consumes it instead"
                )
            seen.add(alias)
            t = self.tensors[alias]

    def _direct(self, t: Tensor) -> str | expose.Target | None:
        """Follow `t`'s site through the executable graph: inlined calls add a name prefix, kept
        calls and control-flow ops become steps of a Target. None when `t`'s op is not there."""
        site = self.sites[t.name]
        nodes: Mapping[str, Any] = self.nodes
        prefix = ""
        steps: list[tuple[str, str]] = []
        for local, attr in site.path:
            name = prefix + local
            node = nodes.get(name)
            if attr == "f" and (node is None or node.op not in expose.CALLS):
                prefix = f"{name}/"  # the call was inlined: its ops are named under it
                continue
            if node is None:
                return None
            function = expose.function_attr(node, attr).name
            if function not in self.library:
                return None
            steps.append((name, attr))
            nodes = self._function_nodes(function)
            prefix = ""
        dtype = tf.as_dtype(t.dtype).as_datatype_enum
        if site.arg is not None and steps and not prefix:
            return expose.Target(tuple(steps), None, site.arg, t.index, dtype)
        local = prefix + site.local
        if local not in nodes:
            return None
        if not steps:
            return f"{local}:{t.index}"
        return expose.Target(tuple(steps), local, None, t.index, dtype)

    def _function_nodes(self, function: str) -> dict[str, Any]:
        nodes = self._functions.get(function)
        if nodes is None:
            nodes = {n.name: n for n in self.library[function].node_def}
            self._functions[function] = nodes
        return nodes
