"""Where a mirrored tensor is computed in the executable (inlined) graph.

The inliner renames the ops of inlined calls (`<call>/<op>`), keeps loops, branches and XLA calls
functional, and may drop an op whose value another tensor also holds (a call's argument is the
call's input; the body reads it through an `Identity` the inliner makes, which is where the
argument is). `Locator.locate` follows a tensor's `Site` through that graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from graphscope.backend import tf_internals as _tf
from graphscope.backend.mirror import Site
from graphscope.errors import UnsupportedFetchError
from graphscope.ir.records import Tensor
from graphscope.runtime import expose
from graphscope.runtime.prune import normal

__all__ = ["Locator"]

class Locator:
    """Finds tensors in an executable GraphDef's nodes and function library."""

    def __init__(
        self,
        nodes: Mapping[str, Any],
        library: dict[str, Any],
        tensors: Mapping[str, Tensor],
        sites: Mapping[str, Site],
        graph: tf.Graph | None = None,
    ) -> None:
        self.nodes = nodes
        self.library = library
        self.tensors = tensors
        self.sites = sites
        self.graph = graph  # the traced graph, whose bodies' arguments TensorFlow may reorder
        self._functions: dict[str, dict[str, Any]] = {}
        self._copies: dict[str, list[str]] | None = None

    def locate(self, t: Tensor) -> str | expose.Target:
        """Where `t` is computed at run time: a top-level tensor name, or an `expose.Target`
        inside a loop, branch or call the inliner kept.

        Raises:
            UnsupportedFetchError: TensorFlow's optimizer removed it.
        """
        seen = {t.name}
        while True:
            where = self._direct(t)
            if where is None and len(seen) == 1:
                where = self._inlined_argument(t)
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
            steps.append((node.name, attr))  # a specialised branch's copy of it is renamed
            nodes = self._function_nodes(function)
            prefix = ""
        dtype = tf.as_dtype(t.dtype).as_datatype_enum
        if site.arg is not None and steps and not prefix:
            arg = self._argument(function, site)
            return None if arg is None else expose.Target(tuple(steps), None, arg, t.index, dtype)
        local = prefix + site.local
        node = nodes.get(local)
        if node is None:
            return None
        if not steps:
            return f"{local}:{t.index}"
        return expose.Target(tuple(steps), node.name, None, t.index, dtype)

    def _argument(self, function: str, site: Site) -> int | None:
        """Which argument of the executable `function` is argument `site.arg` of the body it
        was made from. The same, except in a body TensorFlow specialised after inlining the
        call around it, which may take its arguments in another order (its handles first): there
        it is the argument the specialised copies of the body's readers of it read. None where
        none of them is left to tell."""
        if not _tf.specialised_function(function):
            return site.arg
        body = self._body(site.path)
        if body is None or site.arg >= len(body.inputs):
            return None
        return self._mapped(function, body, site.arg)

    def _mapped(self, function: str, body: tf.Graph, position: int) -> int | None:
        """Which argument of the executable `function`, made from the traced `body`, is the
        body's argument at `position`: the one the copies of its readers read there. A reader
        that runs functions (a cond, a loop, a call) may have its inputs reordered with its
        functions' arguments: where it reads the argument is where its function does."""
        if not _tf.specialised_function(function):
            return position
        placeholder = body.inputs[position]
        names = [a.name for a in self.library[function].signature.input_arg]
        nodes = self._function_nodes(function)
        found = set()
        for reader in placeholder.consumers():
            node = nodes.get(reader.name)
            if node is None:
                continue
            data = [i for i in node.input if not i.startswith("^")]
            for k, t in enumerate(reader.inputs):
                if t is not placeholder:
                    continue
                j = self._passed(reader, node, k)
                if j is not None and j < len(data) and data[j] in names:
                    found.add(names.index(data[j]))
        return found.pop() if len(found) == 1 else None

    def _passed(self, reader: tf.Operation, node: Any, k: int) -> int | None:
        """Where `node`, the executable copy of the traced op `reader`, takes `reader`'s input
        `k`: the same place, except for an op running functions TensorFlow specialised (their
        arguments, and the op's inputs with them, reordered); None where its functions disagree
        or none of them tells."""
        runs = _tf.function_inputs(reader.node_def)
        if runs is None or k < runs[1]:
            return k
        attrs, offset = runs
        places = set()
        for attr in attrs:
            try:
                inner = _tf.function_graph(reader.graph, expose.function_attr(reader.node_def, attr).name)
                function = expose.function_attr(node, attr).name
            except (KeyError, ValueError, LookupError, IndexError):
                continue
            if function not in self.library or k - offset >= len(inner.inputs):
                continue
            place = self._mapped(function, inner, k - offset)
            if place is not None:
                places.add(place + offset)
        return places.pop() if len(places) == 1 else None

    def _body(self, path: tuple[tuple[str, str], ...]) -> tf.Graph | None:
        """The traced body `path` leads to (calls and control flow from the traced graph down)."""
        graph = self.graph
        if graph is None:
            return None
        for local, attr in path:
            try:
                op = graph.get_operation_by_name(local)
                graph = _tf.function_graph(graph, expose.function_attr(op.node_def, attr).name)
            except (KeyError, ValueError, LookupError):
                return None
        return graph

    def _inlined_argument(self, t: Tensor) -> str | None:
        """Where an argument of a top-level call the inliner inlined is: the `Identity` it made
        for the argument (`Func/<call>/input/_<n>`, one per argument in order; `n` counts on
        over the graph), which only the body's ops read. Not the call's input (the alias): a feed
        or an edit there would reach the caller's other readers of that value too. None when
        the inliner made no such copy, or when its copy reads something else than the input."""
        site = self.sites[t.name]
        if site.arg is None or site.alias is None or not site.path or any(a != "f" for _, a in site.path):
            return None
        call = "/".join(local for local, _ in site.path)
        if call in self.nodes:  # the call was kept (an XLA helper): its body is not inlined
            return None
        copies = self._argument_copies().get(call, [])
        source = self.locate(self.tensors[site.alias]) if site.alias in self.tensors else None
        if site.arg >= len(copies) or not isinstance(source, str):
            return None
        copy = self.nodes[copies[site.arg]]
        data = [i for i in copy.input if not i.startswith("^")]
        if len(data) != 1 or normal(data[0]) != normal(source):
            return None
        return f"{copy.name}:0"

    def _argument_copies(self) -> dict[str, list[str]]:
        """The inliner's argument copies of each inlined top-level call, in argument order."""
        if self._copies is None:
            found: dict[str, list[tuple[int, str]]] = {}
            for name, node in self.nodes.items():
                match = _tf.INLINED_ARGUMENT.fullmatch(name)
                if match and node.op == "Identity":
                    found.setdefault(match["call"], []).append((int(match["n"]), name))
            self._copies = {call: [name for _, name in sorted(copies)] for call, copies in found.items()}
        return self._copies

    def _function_nodes(self, function: str) -> dict[str, Any]:
        """A function's nodes by name; a branch TensorFlow specialised after inlining the call
        around it names its ops `<op>_tfg_inlined_<call>_<k>`: they are also known as `<op>`."""
        nodes = self._functions.get(function)
        if nodes is None:
            nodes = {n.name: n for n in self.library[function].node_def}
            for name, node in list(nodes.items()):
                op = _tf.specialised_op_name(name)
                if op is not None:
                    nodes.setdefault(op, node)
            self._functions[function] = nodes
        return nodes
