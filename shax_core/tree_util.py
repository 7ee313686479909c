"""Pytrees: nested containers of arrays, flattened at the API boundary (the IR stays flat).

A pytree is a leaf (an array, a scalar, a tracer, anything unregistered) or a registered
container of pytrees: tuple, list, dict (keys in sorted order, as JAX), None (no children),
namedtuples, dataclasses, and classes given to ``register_pytree_node``. Flattening gives the
leaves in order and a hashable ``PyTreeDef`` that rebuilds the structure:

>>> leaves, tree = tree_flatten({"b": (1.0, 2.0), "a": [3.0, None]})
>>> leaves
[3.0, 1.0, 2.0]
>>> tree_unflatten(tree, [10.0, 20.0, 30.0])
{'a': [10.0, None], 'b': (20.0, 30.0)}
>>> tree_map(lambda x: x * 2, {"w": 1.0, "b": (2.0,)})
{'b': (4.0,), 'w': 2.0}

Leaf paths name IR parameters (``params.w1``; a sequence index is ``.0``):

>>> leaf_names({"w1": 1.0, "b": [2.0, 3.0]}, "params")
['params.b.0', 'params.b.1', 'params.w1']
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple


class _Node(NamedTuple):
    flatten: Callable[[Any], tuple[list, Hashable]]  # x -> (children, aux data)
    unflatten: Callable[[Hashable, list], Any]  # (aux data, children) -> x
    keys: Callable[[Any, Hashable], list[str]]  # (x, aux data) -> a path key per child


_REGISTRY: dict[type, _Node] = {}
_BY_TYPE: dict[type, _Node | None] = {}  # what each type is (a node or a leaf), found once


def register_pytree_node(
    cls: type,
    flatten: Callable[[Any], tuple],
    unflatten: Callable[[Hashable, list], Any],
    keys: Callable[[Any, Hashable], list[str]] | None = None,
) -> None:
    """Make ``cls`` a container: ``flatten(x) -> (children, aux)`` with ``aux`` hashable,
    ``unflatten(aux, children) -> x``; ``keys`` names the children in paths (default: index)."""
    if cls in _REGISTRY:
        raise ValueError(f"{cls.__name__} is already registered as a pytree node")

    def flat(x):
        children, aux = flatten(x)
        return list(children), aux

    default_keys = lambda x, aux: [str(i) for i in range(len(flat(x)[0]))]  # noqa: E731
    _REGISTRY[cls] = _Node(flat, unflatten, keys or default_keys)
    _BY_TYPE.clear()


def _index_keys(x, aux):
    return [str(i) for i in range(len(x))]


register_pytree_node(tuple, lambda x: (x, None), lambda aux, c: tuple(c), _index_keys)
register_pytree_node(list, lambda x: (x, None), lambda aux, c: list(c), _index_keys)
register_pytree_node(
    dict,
    lambda x: ([x[k] for k in sorted(x)], tuple(sorted(x))),
    lambda keys, c: dict(zip(keys, c, strict=True)),
    lambda x, keys: [str(k) for k in keys],
)
register_pytree_node(type(None), lambda x: ((), None), lambda aux, c: None, lambda x, aux: [])


def _node_of(x) -> tuple[type, _Node] | None:
    cls = type(x)
    try:
        node = _BY_TYPE[cls]
    except KeyError:
        node = _BY_TYPE[cls] = _classify(cls)
    return None if node is None else (cls, node)


def _classify(cls: type) -> _Node | None:
    node = _REGISTRY.get(cls)
    if node is not None:
        return node
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a namedtuple
        return _Node(
            lambda x: (list(x), None), lambda aux, c: cls(*c), lambda x, aux: list(cls._fields)
        )
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        return _Node(
            lambda x: ([getattr(x, n) for n in names], names),
            lambda names, c: cls(**dict(zip(names, c, strict=True))),
            lambda x, names: list(names),
        )
    return None


@dataclasses.dataclass(frozen=True)
class PyTreeDef:
    """The structure of a pytree: a node type, its aux data and the children's structures
    (``cls is None`` marks a leaf)."""

    cls: type | None
    aux: Hashable
    children: tuple[PyTreeDef, ...]
    num_leaves: int

    def __repr__(self) -> str:
        if self.cls is None:
            return "*"
        inner = ", ".join(map(repr, self.children))
        return f"{self.cls.__name__}({inner})"

    def unflatten(self, leaves):
        return tree_unflatten(self, leaves)


LEAF = PyTreeDef(None, None, (), 1)


def tree_flatten(tree, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list, PyTreeDef]:
    """``(leaves, treedef)``: the leaves in order (dict keys sorted) and the structure."""
    leaves: list = []
    return leaves, _flatten(tree, leaves, is_leaf)


def _flatten(x, leaves: list, is_leaf) -> PyTreeDef:
    found = None if is_leaf is not None and is_leaf(x) else _node_of(x)
    if found is None:
        leaves.append(x)
        return LEAF
    cls, node = found
    children, aux = node.flatten(x)
    defs = tuple(_flatten(c, leaves, is_leaf) for c in children)
    return PyTreeDef(cls, aux, defs, sum(d.num_leaves for d in defs))


def tree_unflatten(treedef: PyTreeDef, leaves) -> Any:
    """The inverse of ``tree_flatten``: ``treedef``'s structure with ``leaves`` in order."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"{treedef} has {treedef.num_leaves} leaves, got {len(leaves)}")
    it = iter(leaves)
    return _build(treedef, it)


def _build(treedef: PyTreeDef, it) -> Any:
    if treedef.cls is None:
        return next(it)
    children = [_build(c, it) for c in treedef.children]
    node = _BY_TYPE.get(treedef.cls) or _classify(treedef.cls)
    return node.unflatten(treedef.aux, children)


def tree_leaves(tree, is_leaf=None) -> list:
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree, is_leaf=None) -> PyTreeDef:
    return tree_flatten(tree, is_leaf)[1]


def tree_map(f: Callable, tree, *rest, is_leaf=None):
    """``f`` applied leaf by leaf; ``rest`` are trees with ``tree``'s structure."""
    leaves, treedef = tree_flatten(tree, is_leaf)
    others = [_leaves_like(treedef, r) for r in rest]
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *others, strict=True)])


def _leaves_like(treedef: PyTreeDef, tree) -> list:
    leaves, other = tree_flatten(tree)
    if other != treedef:
        raise ValueError(f"tree structures differ: {treedef} vs {other}")
    return leaves


def tree_paths(tree, is_leaf=None) -> list[tuple[str, ...]]:
    """The path of keys from the root to each leaf, in leaf order."""
    paths: list[tuple[str, ...]] = []
    _paths(tree, (), paths, is_leaf)
    return paths


def _paths(x, prefix: tuple[str, ...], out: list, is_leaf) -> None:
    found = None if is_leaf is not None and is_leaf(x) else _node_of(x)
    if found is None:
        out.append(prefix)
        return
    _, node = found
    children, aux = node.flatten(x)
    for key, child in zip(node.keys(x, aux), children, strict=True):
        _paths(child, (*prefix, key), out, is_leaf)


_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def _part(key: str) -> str:
    return _NOT_NAME.sub("_", key) or "_"


def leaf_names(tree, root: str) -> list[str]:
    """An IR name per leaf: ``root`` then the path's keys joined by dots (``params.w1``);
    characters outside ``[A-Za-z0-9_]`` in a key become ``_``."""
    root = _part(root)
    if root[0].isdigit():
        root = "_" + root
    return [".".join((root, *(_part(k) for k in path))) for path in tree_paths(tree)]


__all__ = [
    "PyTreeDef",
    "leaf_names",
    "register_pytree_node",
    "tree_flatten",
    "tree_leaves",
    "tree_map",
    "tree_paths",
    "tree_structure",
    "tree_unflatten",
]
