"""find / ancestors / descendants / layers / cut points: a mirrored graph in, records out.

Plain functions over any `networkx.DiGraph` shaped like the one `backend.mirror` builds (its
views and copies too), usable without a `Scope`, the way `networkx.ancestors(G, n)` is. Like
networkx's functions they never write into the graph they are handed: the lookups they need are
built for the call, except for the frozen graph of a `ModelGraph`, which built its index once
(`graphscope.ir.graph`). Results come in the graph's topological order (the order ops were
mirrored in), so the same query prints the same thing every time.
"""

from __future__ import annotations

import bisect
import itertools
import re
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import networkx as nx

try:  # the regex parser, to find literals a pattern requires (Python 3.11+ names)
    from re import _constants as sre_constants, _parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants, sre_parse  # type: ignore[no-redef]

from graphscope.errors import (
    AmbiguousMatchError,
    ArgumentError,
    LayerNotFoundError,
    PatternError,
    TensorNotFoundError,
    suggestion,
)
from graphscope.ir.names import split_tensor_name
from graphscope.ir.records import Layer, Op, Selection, Tensor

__all__ = ["DRAWS", "Index", "ancestors", "as_layer", "computed", "cut_points", "descendants", "drawn", "find", "layer",
           "narrow", "op", "output", "output_keys", "outputs", "resolve", "resolve_pairs", "tensor", "unused"]

# op types whose numbers each run draws anew: stateless ones too, since Keras seeds them from a
# generator's state, which every run advances (Keras 3's Dropout in training mode)
DRAWS = re.compile(r"\w*(Random|Multinomial|Shuffle)\w*|RngReadAndSkip|RngSkip")

TensorLike = str | Tensor
Fetchable = TensorLike | Selection | Layer | Iterable[TensorLike | Layer]


def drawn(G: nx.DiGraph) -> dict[str, str]:
    """Each op whose values depend on random numbers drawn anew each run (`DRAWS`), the drawing
    ops included, mapped to the first such op it depends on in the graph's topological order.
    Empty for a model that draws none."""
    out: dict[str, str] = {}
    for n in G:  # the graph's topological order: a draw is seen before what it feeds
        if n not in out and DRAWS.fullmatch(G.nodes[n]["op"].type):
            out[n] = n
            for d in nx.descendants(G, n):
                out.setdefault(d, n)
    return out


def tensor(G: nx.DiGraph, name: str | Tensor) -> Tensor:
    """The one tensor `name` names, by the rules of `resolve_pairs`: a canonical or raw tensor
    name, an output key, an input name, an op name meaning the op's only output, or the name of
    a layer call with one output.

    Raises:
        TensorNotFoundError: nothing in `G` has that name (the message lists the closest names).
        AmbiguousMatchError: an op or layer with several outputs.
    """
    if isinstance(name, Tensor):
        return _present(G, name.name)
    if not isinstance(name, str):
        raise ArgumentError(f"a tensor is named by a str or a Tensor, not {type(name).__name__} ({name!r})")
    found = _by_name(G, name)
    if len(found) != 1:
        raise AmbiguousMatchError(
            f"{name!r} names {len(found)} tensors; name one: {', '.join(t.name for t in found)}"
        )
    return found[0]


def op(G: nx.DiGraph, name: str) -> Op:
    """The op of the tensor `name` names (see `tensor`: a key means the op computing the output),
    or the op called `name` (canonical or raw) when it has no single output."""
    try:
        return G.nodes[tensor(G, name).op]["op"]
    except (TensorNotFoundError, AmbiguousMatchError):
        resolved = G.graph["names"].get(name, name) if isinstance(name, str) else None
        if resolved in G:
            return G.nodes[resolved]["op"]
        raise


def resolve_pairs(G: nx.DiGraph, of: Any, *, feeding: bool = False) -> list[tuple[str, Tensor]]:
    """`(key, Tensor)` for everything `of` names, in order: the one resolver behind every method
    that takes "a tensor or a layer".

    `of` is a name, a Tensor, a Layer (its outputs), a Selection or an iterable of them. A name
    is tried, in this order, as
      1. a canonical tensor name (`dense/BiasAdd:0`, `token_ids:0`), or a raw one with its index;
      2. the key of an output in the structure the model returns (`detection_boxes`): the
         tensor the model computes there (what the terminal `Identity` copies; see `output`);
      3. a tensor or op name, canonical or raw (an op name means the op's only output);
      4. a model input's name (`input_image`);
      5. a layer's name or path (`ROI`, `shared@2`): its outputs.
    With `feeding` (names of what is fed, or varied: a gradient's `wrt`), a key that is also an
    input's name comes after it: a name that is both an input's and an output's (keras-hub's
    `token_ids`) means the output when fetched, the input when fed or differentiated with
    respect to. Any other key means the output either way, before an op of the same name (a
    SavedModel signature's copy of the output, named after its key). The key is the name as given, except for a layer (its outputs' canonical
    names).

    Raises:
        TensorNotFoundError: a name that names nothing in `G` (with the closest names), or an op
            without outputs.
        AmbiguousMatchError: an op name whose op has several outputs.
        ArgumentError: something that is not a name, Tensor, Layer or Selection.
    """
    if isinstance(of, (str, Tensor, Layer)):
        of = [of]
    elif not isinstance(of, Iterable):
        raise ArgumentError(
            f"expected tensor or layer names, Tensors, a Selection or a Layer, got {type(of).__name__} ({of!r})"
        )
    pairs: list[tuple[str, Tensor]] = []
    for item in of:
        if isinstance(item, Layer):
            pairs.extend((t.name, _present(G, t.name)) for t in item.outputs)
        elif isinstance(item, Tensor):
            pairs.append((item.name, _present(G, item.name)))
        elif isinstance(item, str) and as_layer(G, item) is not None:  # keyed by its tensors' names
            pairs.extend((t.name, t) for t in _by_name(G, item, feeding=feeding))
        elif isinstance(item, str):
            pairs.extend((item, t) for t in _by_name(G, item, feeding=feeding))
        else:
            raise ArgumentError(f"a tensor is named by a str or a Tensor, not {type(item).__name__} ({item!r})")
    return pairs


def resolve(G: nx.DiGraph, of: Any, *, feeding: bool = False) -> list[Tensor]:
    """The Tensors `of` names (see `resolve_pairs`), in order."""
    return [t for _, t in resolve_pairs(G, of, feeding=feeding)]


def output_keys(G: nx.DiGraph) -> list[str]:
    """The key or path of each output in the structure the traced function returns, in the
    order of its outputs; positions (`"0"`, `"1"`) for a graph saved before keys were kept."""
    return list(G.graph.get("output_keys") or [str(k) for k in range(len(G.graph["outputs"]))])


def outputs(G: nx.DiGraph) -> list[Tensor]:
    """The tensors the traced function returns, one per output key: each the tensor the model
    computes, not the copy TensorFlow makes of it for the function's results (`Identity:0`)."""
    return [computed(G, _present(G, n)) for n in G.graph["outputs"]]


def output(G: nx.DiGraph, key: str | int = 0) -> Tensor:
    """The output tensor at `key`: a key or path of the structure the traced function returns
    (`"detection_boxes"`, `"features/p3"`), or a position among its outputs (`0`). It is the
    tensor the model computes there, found through the `Identity` copies TensorFlow makes of a
    function's results, so an output that also feeds another one (an encoder's output) can be
    edited and differentiated with respect to.

    Raises:
        TensorNotFoundError: no output has that key or position (the message lists the keys).
        AmbiguousMatchError: a path to several outputs (`"features"` holding p3...p7).
    """
    names: list[str] = G.graph["outputs"]
    keys = output_keys(G)
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ArgumentError(f"an output is named by its key or path (str) or position (int), not {type(key).__name__}")
    if isinstance(key, int):
        if -len(names) <= key < len(names):
            return computed(G, _present(G, names[key]))
        raise TensorNotFoundError(f"no output at position {key}: {G.name!r} has {len(names)} (0..{len(names) - 1})")
    if key in keys:
        return computed(G, _present(G, names[keys.index(key)]))
    under = [k for k in keys if k.startswith(key.rstrip("/") + "/")]
    if under:
        raise AmbiguousMatchError(f"{key!r} holds {len(under)} outputs; name one: {', '.join(under)}")
    raise TensorNotFoundError(
        f"no output {key!r} in {G.name!r}: its outputs are {', '.join(map(repr, keys))}.{suggestion(key, keys)}"
    )


_PASS_THROUGH = frozenset({"Identity", "IdentityN"})
_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def computed(G: nx.DiGraph, t: Tensor, *, stop: Callable[[Tensor], bool] | None = None) -> Tensor:
    """`t`, or the tensor it copies unchanged when it is a top-level `Identity` or `IdentityN`
    (as TensorFlow copies a function's results), followed through top-level `Identity` ops and
    through a function call's output to the tensor its body computes (the body's own result
    copies included): what an output key means. A SavedModel's serving function returns
    `StatefulPartitionedCall:0`; the model computed `probs/Softmax:0` in the call's body, the
    name a live trace gives it. An `IdentityN` further up is no copy but a custom gradient's
    result (`tf.custom_gradient`: SiLU), and is kept. `stop`: a tensor it holds true of is not
    followed further (cut points stop at a layer's own output, which may be an `Identity`: a
    `tf.cond`'s)."""
    seen = set()
    kinds = _PASS_THROUGH
    function: tuple[str, ...] = ()
    tensors = G.graph["tensors"]
    while t.function == function and t.name not in seen and (t.op_type in kinds or t.op_type in _CALLS):
        if stop is not None and seen and stop(t):
            break
        seen.add(t.name)
        inputs = G.nodes[t.op]["op"].inputs
        if t.op_type in _CALLS:  # the mirror lists the body's results as the call's last inputs
            n_outputs = len(G.nodes[t.op]["op"].outputs)
            index = len(inputs) - n_outputs + t.index
            inner = (*function, t.op)
            source = tensors.get(inputs[index]) if n_outputs <= len(inputs) else None
            if source is None or source.function != inner or source.op not in G:
                break
            t, kinds, function = source, _PASS_THROUGH, inner
            continue
        index = t.index if t.op_type == "IdentityN" else 0
        source = tensors.get(inputs[index]) if index < len(inputs) else None
        if source is None or source.function != function or source.op not in G:
            break
        t, kinds = source, frozenset({"Identity"})
    return t


def as_layer(G: nx.DiGraph, item: Any) -> Layer | None:
    """The Layer `item` stands for: a Layer, or the name of a layer call that names no tensor,
    op, output or input (`"ROI"`; `"conv1/Relu"` is the op); else None."""
    if isinstance(item, Layer):
        return item
    if not isinstance(item, str) or _names_a_tensor(G, item) or item in G.graph.get("input_names", ()) \
            or item in _recorded_keys(G):
        return None
    return next((lay for lay in G.graph["layers"] if lay.name == item), None)


def _names_a_tensor(G: nx.DiGraph, name: str) -> bool:
    return name in G.graph["tensors"] or name in G.graph["names"] or name in G


def _recorded_keys(G: nx.DiGraph) -> list[str]:
    """Output keys as recorded (positions of a graph saved before keys were kept are no names);
    `""` is the key of a single tensor returned as it is, and names it as `output_keys` lists it."""
    return list(G.graph.get("output_keys", ()))


def _present(G: nx.DiGraph, name: str) -> Tensor:
    """The tensor with canonical name `name`, if its op is a node of `G` (a copy or view of a
    graph shares the graph-level table of tensors, including those of nodes it left out)."""
    t = G.graph["tensors"].get(name)
    if t is None or t.op not in G:
        op_name, _ = split_tensor_name(name)
        names = [n for n in G.graph["tensors"] if split_tensor_name(n)[0] in G]
        hint = suggestion(name, names) or suggestion(op_name, names)
        raise TensorNotFoundError(f"no tensor named {name!r} in graph {G.name!r}.{hint}")
    return t


def _by_name(G: nx.DiGraph, name: str, *, feeding: bool = False) -> list[Tensor]:
    """The tensors `name` names, by the rules of `resolve_pairs`."""
    tensors_: dict[str, Tensor] = G.graph["tensors"]
    names: dict[str, str] = G.graph["names"]
    keys = _recorded_keys(G)
    if name in tensors_ or (split_tensor_name(name)[1] is not None and names.get(name) in tensors_):
        return [_present(G, names.get(name, name) if name not in tensors_ else name)]
    input_names = G.graph.get("input_names", [])
    if name in keys and (not feeding or name not in input_names):
        return [output(G, name)]
    if _names_a_tensor(G, name):
        resolved = names.get(name, name)
        if resolved in tensors_:
            return [_present(G, resolved)]
        if resolved in G:
            outs = G.nodes[resolved]["op"].outputs
            if len(outs) == 1:
                return [_present(G, outs[0])]
            if not outs:
                raise TensorNotFoundError(
                    f"op {resolved!r} has no outputs (it only orders other ops); "
                    "name one of the tensors it depends on instead"
                )
            raise AmbiguousMatchError(f"op {resolved!r} has {len(outs)} outputs; name one: {', '.join(outs)}")
    if name in input_names:
        return [_present(G, G.graph["inputs"][input_names.index(name)])]
    lay = as_layer(G, name)
    if lay is not None:
        return [_present(G, t.name) for t in lay.outputs]
    op_name, _ = split_tensor_name(name)
    candidates = [*tensors_, *(lay.name for lay in G.graph["layers"]), *keys]
    hint = suggestion(name, candidates) or suggestion(op_name, candidates)
    raise TensorNotFoundError(
        f"no tensor named {name!r} in graph {G.name!r} (nor an input or layer or output key).{hint}"
    )


def find(
    G: nx.DiGraph,
    pattern: str | None = None,
    *,
    op_type: str | None = None,
    layer: str | None = None,
    include_unused: bool = False,
) -> Selection:
    """Tensors whose canonical name matches `re.search(pattern)`.

    Args:
        pattern: a regular expression searched in canonical tensor names (None: every tensor).
        op_type: keep only tensors of ops whose type fully matches this regex (`Conv2D|MatMul`).
        layer: keep only tensors created inside this layer (or a layer nested in it).
        include_unused: also list the tensors of ops no output depends on (see `unused`), which
            are left out by default.
    """
    index = _index(G)
    if pattern is None:
        items = list(index.tensors)
    else:
        tensors_ = G.graph["tensors"]
        items = [tensors_[n] for n in index.search(compile_pattern(pattern, "pattern"))]
    return narrow(_used(G, items, include_unused), None, op_type=op_type, layer=layer)


def unused(G: nx.DiGraph) -> frozenset[str]:
    """The ops no output of the traced function depends on, by canonical name: computed in the
    graph but never run for its results, like the call Keras makes of an RNN's cell outside its
    loop only to learn shapes (`lstm/lstm_cell@2/Sigmoid`). An op a graph must run for its side
    effects (a variable write, an assert, a print: a function's control outputs) and what it
    reads are used; so are the arguments of a body that runs. Queries leave unused ops out
    unless asked (`include_unused=True`); editing one is refused, as it changes nothing."""
    return frozenset(G.graph.get("unused", ()))


def _used(G: nx.DiGraph, items: list[Tensor], include_unused: bool) -> list[Tensor]:
    """`items` without the tensors of unused ops, unless `include_unused`."""
    dead = G.graph.get("unused")
    if include_unused or not dead:
        return items
    return [t for t in items if t.op not in dead]


def ancestors(
    G: nx.DiGraph,
    of: Fetchable,
    pattern: str | None = None,
    *,
    op_type: str | None = None,
    include_unused: bool = False,
) -> Selection:
    """Every tensor upstream of `of` (a name, Tensor, Selection or Layer; see `resolve`), at any
    depth and into nested functions, filtered like `find` (unused ops left out unless
    `include_unused`): the outputs of the ops upstream that are read on the way (of a `Split`
    whose second output alone leads to `of`, not the first). Never the tensors `of` names
    themselves (one of them upstream of another included)."""
    seeds = resolve(G, of)
    index = _index(G)
    ops, read = index.upstream([(t.op, t.index) for t in seeds])
    found = _tensors_in_order(G, ops, index)
    if read:  # ops with several outputs: only those read
        found = [t for t in found if t.op not in read or t.index in read[t.op]]
    own = {t.name for t in seeds}  # a seed can be upstream of another one
    found = [t for t in found if t.name not in own]
    return narrow(_used(G, found, include_unused), pattern, op_type=op_type, layer=None)


def _call_results(G: nx.DiGraph, op: str) -> list[str] | None:
    """For a function call whose body is mirrored: the body's result each output of the call
    is (the mirror lists them as the call's last inputs; the body reads the call's inputs
    through its arguments), else None."""
    record = G.nodes[op]["op"]
    if record.type not in _CALLS or len(record.outputs) > len(record.inputs):
        return None
    results = list(record.inputs[len(record.inputs) - len(record.outputs):])
    tensors_ = G.graph["tensors"]
    inner = (*record.function, op)
    if not results or any(tensors_[n].function[: len(inner)] != inner for n in results):
        return None
    return results


def descendants(
    G: nx.DiGraph,
    of: Fetchable,
    pattern: str | None = None,
    *,
    op_type: str | None = None,
    include_unused: bool = False,
) -> Selection:
    """Every tensor downstream of `of`: produced by ops that consume it, directly or not,
    filtered like `find` (unused ops left out unless `include_unused`). Like `ancestors`, never the tensors `of` names themselves (one of
    them downstream of another included)."""
    seeds = resolve(G, of)
    tensors_ = G.graph["tensors"]
    index = _index(G)
    reached: dict[str, set[int]] = {}  # op downstream -> its outputs that depend on `of`
    seen: set[str] = set()
    stack = [t.name for t in seeds]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        t = tensors_[name]
        for consumer, edge in G.succ[t.op].items():
            if t.index not in edge["outputs"]:
                continue
            record = G.nodes[consumer]["op"]
            results = index.results.get(consumer)
            # a call's input reaches its outputs through the body's arguments; its body's result k, output k
            outs = range(len(record.outputs)) if results is None else [k for k, r in enumerate(results)
                                                                       if r == (t.op, t.index)]
            for k in outs:
                reached.setdefault(consumer, set()).add(k)
                stack.append(record.outputs[k])
    own = {t.name for t in seeds}
    found = [t for t in _tensors_in_order(G, set(reached), index) if t.index in reached[t.op] and t.name not in own]
    return narrow(_used(G, found, include_unused), pattern, op_type=op_type, layer=None)


def layer(G: nx.DiGraph, key: str | int) -> Layer:
    """A layer call by name or path (`"backbone/conv1"`, `"shared_dense@2"`) or by its index in
    the traced model's `.layers`.

    Raises:
        LayerNotFoundError: no layer has that name (with the closest names) or index.
    """
    layers: list[Layer] = G.graph["layers"]
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ArgumentError(f"a layer is named by its name/path (str) or index (int), not {type(key).__name__} ({key!r})")
    if isinstance(key, int):
        top = {lay.index: lay for lay in reversed(layers) if lay.index is not None and "/" not in lay.name}
        n = 1 + max(top, default=-1)
        k = key + n if key < 0 else key
        if k in top:
            return top[k]
        raise LayerNotFoundError(f"no layer at index {key}: the model has {n} layers (0..{n - 1})")
    for lay in layers:
        if lay.name == key:
            return lay
    names = [lay.name for lay in layers]
    raise LayerNotFoundError(f"no layer named {key!r} in {G.name!r}.{suggestion(key, names)}")


def cut_points(G: nx.DiGraph, *, every_tensor: bool = False) -> Selection:
    """Tensors through which every path from the inputs to the outputs passes.

    Each one splits the model in two: a head from the inputs to it, and a tail fed by it alone
    (`executor(outputs, feeds=[cut])`). Inside a fork (ResNet's shortcut next to its main path)
    there are none: the first cut point after `conv2_block1_0_conv` is the join's output. Paths
    through constants and variables do not count; tensors inside loops and branches are never
    cut points (they hold one value per iteration).

    Args:
        every_tensor: list every such tensor (a chain of ops inside a layer has one per op);
            by default, only the model's inputs and the outputs of its top-level layers (of a
            model without layers, such as a `tf.function`: every tensor).

    Returns:
        The cut points in topological order, a single input included. With several inputs,
        the first is where their paths have all met (the tail is still fed by it alone). Only
        the outputs that depend on an input count; when none does, there are none.
    """
    index = _index(G)
    tensors_ = G.graph["tensors"]
    sources = [tensors_[n].op for n in G.graph["inputs"] if tensors_[n].op in G]  # G's own (a copy may lack some)
    used: dict[str, set[int]] = {}  # op -> outputs a graph output takes
    for n in G.graph["outputs"]:
        if tensors_[n].op in G:  # the tensor the model computes, not TensorFlow's copy of it
            # (`Identity:0`), which no tail from the outputs runs; a layer's own output is kept
            t = computed(G, tensors_[n], stop=lambda u: u.layer is not None)
            used.setdefault(t.op, set()).add(t.index)
    if not sources or not used:
        return Selection()
    upstream = set(used).union(*(index.ancestors(op) for op in used))
    source, sink = object(), object()  # never clash with an op name
    H = nx.DiGraph()
    H.add_node(source)  # an output that depends on no input has no path to cut
    H.add_edges_from((source, op) for op in sources if op in upstream)
    H.add_edges_from((op, sink) for op in used)
    stack, seen = [op for op in sources if op in upstream], set()
    while stack:  # only ops that depend on an input and feed an output
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        for succ, edge in G.succ[op].items():
            body = index.results.get(succ)
            if body is not None and not any(p == op for p, _ in body):
                continue  # a call reads its inputs through its body's arguments: the paths go through the body
            if succ in upstream:
                H.add_edge(op, succ)
                used.setdefault(op, set()).update(edge["outputs"])
                stack.append(succ)
    idom = nx.immediate_dominators(H, source)
    if sink not in idom:  # no output depends on an input
        return Selection()
    chain, node = [], idom[sink]
    while node is not source:
        chain.append(node)
        node = idom[node]
    wanted = None
    top = [n for lay in G.graph["layers"] if "/" not in lay.name for n in lay.outputs.names]
    if top and not every_tensor:
        wanted = set(G.graph["inputs"]) | set(top)
    found = []
    for op in chain:
        if len(used[op]) != 1:  # several outputs of one op carry the paths: no single tensor
            continue
        t = tensors_[G.nodes[op]["op"].outputs[next(iter(used[op]))]]
        if t.context is None and (wanted is None or t.name in wanted):
            found.append(t)
    found.sort(key=lambda t: index.position[t.op])
    return Selection(found)


class Index:
    """A graph's lookups: ops and tensors in topological order, adjacency tuples, and every
    tensor name in one string for fast literal scans. Built per query for a graph handed in;
    once for a `ModelGraph`'s frozen graph (`own`)."""

    def __init__(self, G: nx.DiGraph) -> None:
        self.size = G.number_of_nodes()
        self.ops = list(G)  # insertion order is topological
        self.position = {name: k for k, name in enumerate(self.ops)}
        self.pred = {name: tuple(G.pred[name]) for name in self.ops}
        # calls whose bodies are mirrored: the (op, output) each output of the call is, and what
        # the call reads of each op before it; ops with several outputs; what those and the
        # calls give each consumer
        self.results: dict[str, list[tuple[str, int]]] = {}
        self.reads: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {}
        self.several: set[str] = set()
        tensors_ = G.graph["tensors"]
        nodes = G.nodes
        for name in self.ops:
            record = nodes[name]["op"]
            if len(record.outputs) > 1:
                self.several.add(name)
            if record.type in _CALLS and (results := _call_results(G, name)) is not None:
                self.results[name] = [(tensors_[r].op, tensors_[r].index) for r in results]
                self.reads[name] = tuple((p, edge["outputs"]) for p, edge in G.pred[name].items())
        self.consumers = {name: tuple((c, edge["outputs"]) for c, edge in G.succ[name].items())
                          for name in self.several | self.results.keys()}
        self.tensors = [tensors_[t] for name in self.ops for t in G.nodes[name]["op"].outputs]
        self.tensor_ops = [t.op for t in self.tensors]
        self.names = [t.name for t in self.tensors]
        self.blob = "\n".join(self.names)
        self.starts = list(itertools.accumulate((len(n) + 1 for n in self.names[:-1]), initial=0))

    def ancestors(self, op: str) -> set[str]:
        """Every op upstream of `op` (the graph is acyclic: no cycle handling needed)."""
        pred, seen, stack = self.pred, set(), [op]
        while stack:
            for p in pred[stack.pop()]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def upstream(self, starts: list[tuple[str, int]]) -> tuple[set[str], dict[str, set[int]]]:
        """The ops upstream of the tensors `starts` ((op, output) pairs), and for those with
        several outputs, the outputs read on the way: the tensors they are computed from. A
        call's output reads only its body's result (the body reads the call's inputs through its
        arguments), so an argument only another output needs is not upstream of it."""
        pred, results = self.pred, self.results
        seen: set[str] = set()
        stack: list[str] = []
        calls: dict[str, set[int]] = {}  # call -> the outputs whose body results are walked
        wanted: dict[str, set[int]] = {}  # call -> the outputs read (by a start or an op upstream)
        for op, k in starts:
            if op in results:
                wanted.setdefault(op, set()).add(k)
            else:
                stack.append(op)
        starting = {op for op, _ in starts}
        while True:
            while stack:  # op by op; a call waits until what reads it is known
                op = stack.pop()
                if op in results:
                    wanted.setdefault(op, set())
                    continue
                for p in pred[op]:
                    if p not in seen:
                        seen.add(p)
                        stack.append(p)
            changed = False
            # what reads the calls, as the round starts (a round that finds more runs another)
            inside = seen | (starting - results.keys())
            for call, outputs in wanted.items():
                outputs |= self._read_of(call, inside, calls)
                for k in outputs - calls.setdefault(call, set()):
                    calls[call].add(k)
                    changed = True
                    producer, _ = self.body_results(call, k)
                    if producer is not None and producer not in seen:
                        seen.add(producer)
                        stack.append(producer)
            if not changed:
                break
        inside = seen | starting
        return seen, {op: self._read_of(op, inside, calls) for op in seen & self.several}

    def body_results(self, call: str, k: int) -> tuple[str | None, int]:
        """The op and output of the body's result that the call's output `k` is (None when G
        has no edge from it)."""
        body = self.results[call]
        if k >= len(body):
            return None, 0
        producer, index = body[k]
        return (producer, index) if any(p == producer and index in i for p, i in self.reads[call]) else (None, 0)

    def _read_of(self, op: str, inside: set[str], calls: dict[str, set[int]]) -> set[int]:
        """The outputs of `op` that the ops `inside` read (a call among them: through the
        results of its outputs in `calls`)."""
        read: set[int] = set()
        for consumer, indices in self.consumers[op]:
            if consumer not in inside and consumer not in calls:
                continue
            if consumer in self.results:
                read.update(i for k in calls.get(consumer, ()) for p, i in [self.body_results(consumer, k)] if p == op)
            else:
                read.update(indices)
        return read

    def search(self, rx: re.Pattern[str]) -> list[str]:
        """Names where `rx.search` matches, in order. A literal every match must contain
        narrows the candidates with `str.find` over all names at once; the regex decides."""
        literal = _required_literal(rx.pattern) if not rx.flags & re.IGNORECASE else ""
        if len(literal) < 3:
            return list(filter(rx.search, self.names))
        lines, i = [], self.blob.find(literal)
        while i != -1:
            line = bisect.bisect_right(self.starts, i) - 1
            lines.append(line)
            i = self.blob.find(literal, self.starts[line + 1] if line + 1 < len(self.starts) else len(self.blob))
        return [self.names[k] for k in lines if rx.search(self.names[k])]


def _required_literal(pattern: str) -> str:
    """The longest run of characters that every match of `pattern` contains ('' if unsure)."""
    try:
        tokens = list(sre_parse.parse(pattern))
    except Exception:  # noqa: BLE001 - any doubt means no shortcut
        return ""
    best, run = "", []
    for op, arg in tokens:
        if op is sre_constants.LITERAL:
            run.append(chr(arg))
            continue
        best = max(best, "".join(run), key=len)
        run = []
    return max(best, "".join(run), key=len)


# graphs a ModelGraph froze itself (never views, which change with their base), and their
# indexes once a query has built them
_OWNED: weakref.WeakKeyDictionary[nx.DiGraph, Index | None] = weakref.WeakKeyDictionary()


def own(G: nx.DiGraph) -> None:
    """Keep `G`'s index, built by its first query, for every later query of `G`. Only for a
    graph that nothing can change any more: `ModelGraph` freezes the graph it built, then owns it."""
    if not nx.is_frozen(G) or hasattr(G, "_graph"):  # views keep their base graph in `_graph`
        raise ValueError("only a frozen graph that is not a view of another can keep its index")
    _OWNED.setdefault(G, None)


def _index(G: nx.DiGraph) -> Index:
    if G not in _OWNED:
        return Index(G)  # a graph handed in: built for this query
    index = _OWNED[G]
    if index is None:  # two threads may both build it; either result is the same
        index = _OWNED[G] = Index(G)
    return index


def _tensors_in_order(G: nx.DiGraph, ops: set[str], index: Index) -> list[Tensor]:
    """The outputs of `ops`, in topological order."""
    if len(ops) * 8 > index.size:  # a large share of the graph: one pass in order
        return [t for t, op in zip(index.tensors, index.tensor_ops) if op in ops]
    nodes = G.nodes
    return [t for name in sorted(ops, key=index.position.__getitem__) for t in nodes[name]["tensors"]]


def compile_pattern(pattern: str, what: str) -> re.Pattern[str]:
    """`re.compile(pattern)`, or a `PatternError` naming `what` the pattern was for."""
    try:
        return re.compile(pattern)
    except re.error as e:
        raise PatternError(f"{what} {pattern!r} is not a valid regular expression: {e}") from None


def narrow(
    items: Iterable[Tensor],
    pattern: str | None = None,
    *,
    op_type: str | None = None,
    layer: str | None = None,
) -> Selection:
    """Keep the tensors matching every filter given, the way `find` filters: `pattern`
    searched in the name, `op_type` fully matching the op type, created inside `layer`."""
    items = list(items)
    if pattern is not None:
        rx = compile_pattern(pattern, "pattern")
        items = [t for t in items if rx.search(t.name)]
    if op_type is not None:
        rt = compile_pattern(op_type, "op_type")
        items = [t for t in items if rt.fullmatch(t.op_type)]
    if layer is not None:
        prefix = layer + "/"
        items = [t for t in items if t.layer is not None and (t.layer == layer or t.layer.startswith(prefix))]
    return Selection(items)
