"""The shape of a DNT while it trains: a fixed number of node slots, some of them in use.

The model server's arrays are shaped once, before the first job (``max_nodes`` columns), so the
tree grows and shrinks inside them: a birth takes a free slot, a merge frees one. Slot numbers
are what the tasks' memos and the server's statistics are indexed by; the fitted model renumbers
the nodes breadth first (:meth:`Tree.breadth_first`).

Children keep the order they were born in: the stick-breaking weights of siblings depend on it
(the first child breaks its stick first).

Example::

    >>> tree = Tree(capacity=4)
    >>> a = tree.add_child(0); b = tree.add_child(0); c = tree.add_child(a)
    >>> tree.breadth_first(), tree.depth(c)
    ([0, 1, 2, 3], 2)
    >>> tree.merge(keep=b, gone=a); tree.children[b], tree.free_slots()
    ([3], [1])
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError

__all__ = ["Tree", "FREE"]

#: ``parent`` of a slot no node holds
FREE = -2


class Tree:
    """Parent links and ordered children over ``capacity`` slots; slot 0 is always the root."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ConfigurationError(f"a tree needs at least one slot, got capacity={capacity}")
        self.capacity = int(capacity)
        self.parent = np.full(self.capacity, FREE, np.int64)
        self.parent[0] = -1
        self.children: dict[int, list[int]] = {0: []}

    def copy(self) -> "Tree":
        other = Tree.__new__(Tree)
        other.capacity = self.capacity
        other.parent = self.parent.copy()
        other.children = {k: list(v) for k, v in self.children.items()}
        return other

    # -- reading ----------------------------------------------------------------------------
    def active(self) -> np.ndarray:
        """The slots in use, in increasing order."""
        return np.flatnonzero(self.parent != FREE)

    def free_slots(self) -> list:
        return np.flatnonzero(self.parent == FREE).tolist()

    def __len__(self) -> int:
        return len(self.children)

    def breadth_first(self) -> list:
        """The nodes, root first, each level in birth order: a parent precedes its children."""
        order, head = [0], 0
        while head < len(order):
            order.extend(self.children[order[head]])
            head += 1
        return order

    def depth(self, node: int) -> int:
        d = 0
        while self.parent[node] >= 0:
            node = int(self.parent[node])
            d += 1
        return d

    def depths(self) -> dict:
        out = {0: 0}
        for node in self.breadth_first()[1:]:
            out[node] = out[int(self.parent[node])] + 1
        return out

    def ancestors(self, node: int) -> list:
        path = []
        while self.parent[node] >= 0:
            node = int(self.parent[node])
            path.append(node)
        return path

    def edges(self) -> list:
        """``(parent, child)`` for every non-root node."""
        return [(int(self.parent[c]), c) for c in self.breadth_first()[1:]]

    def sibling_pairs(self) -> list:
        """``(older, younger)`` for every two children of one parent."""
        pairs = []
        for kids in self.children.values():
            for i, a in enumerate(kids):
                pairs.extend((a, b) for b in kids[i + 1:])
        return pairs

    # -- changing ---------------------------------------------------------------------------
    def add_child(self, parent: int) -> int:
        """A new node under ``parent``, in the lowest free slot; its slot number."""
        if parent not in self.children:
            raise ConfigurationError(f"node {parent} is not in the tree")
        free = self.free_slots()
        if not free:
            raise ConfigurationError(f"the tree holds its {self.capacity} nodes already (max_nodes)")
        slot = free[0]
        self.parent[slot] = parent
        self.children[slot] = []
        self.children[parent].append(slot)
        return slot

    def subtree(self, node: int) -> list:
        """``node`` and all its descendants."""
        out, head = [node], 0
        while head < len(out):
            out.extend(self.children[out[head]])
            head += 1
        return out

    def move(self, node: int, parent: int) -> None:
        """Make ``node`` (with its subtree) the last child of ``parent``."""
        if node == 0 or node not in self.children or parent not in self.children or parent in self.subtree(node):
            raise ConfigurationError(f"cannot move node {node} under {parent}")
        self.children[int(self.parent[node])].remove(node)
        self.parent[node] = parent
        self.children[parent].append(node)

    def swap(self, parent: int, child: int) -> None:
        """Exchange a node and one of its children: ``child`` takes ``parent``'s place (and
        position among its siblings) and ``parent`` becomes ``child``'s last child; both keep
        their other children."""
        if parent == 0 or child not in self.children.get(parent, ()):
            raise ConfigurationError(f"cannot swap node {parent} with {child}")
        grand = int(self.parent[parent])
        siblings = self.children[grand]
        siblings[siblings.index(parent)] = child
        self.children[parent].remove(child)
        self.parent[child] = grand
        self.parent[parent] = child
        self.children[child].append(parent)

    def merge(self, keep: int, gone: int) -> None:
        """Fold node ``gone`` into ``keep``: ``gone``'s children become ``keep``'s last children and
        its slot is freed. ``keep`` is ``gone``'s parent or sibling (so the tree stays a tree)."""
        if gone == 0 or keep == gone or gone not in self.children or keep not in self.children:
            raise ConfigurationError(f"cannot merge node {gone} into {keep}")
        if self.parent[gone] != keep and self.parent[gone] != self.parent[keep]:
            raise ConfigurationError(f"node {gone} is neither a child nor a sibling of {keep}")
        self.children[int(self.parent[gone])].remove(gone)
        for child in self.children[gone]:
            self.parent[child] = keep
            self.children[keep].append(child)
        del self.children[gone]
        self.parent[gone] = FREE
