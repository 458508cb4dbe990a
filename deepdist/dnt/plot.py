"""The picture of a DNT tree (:meth:`deepdist.dnt.model.DNTModel.plot_tree`), apart from the model."""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ConfigurationError

__all__ = ["plot_tree"]


def plot_tree(model, num_words: int = 3, ax=None, max_nodes: int = 200, *, colors=None, label=None, title=None):
    """See :meth:`DNTModel.plot_tree <deepdist.dnt.model.DNTModel.plot_tree>`."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    if isinstance(max_nodes, bool) or not isinstance(max_nodes, numbers.Integral) or max_nodes < 1:
        raise ConfigurationError(f"max_nodes must be an integer >= 1, got {max_nodes!r}")
    shown = np.zeros(model.n_nodes_, dtype=bool)
    if model.n_nodes_ <= max_nodes:
        shown[:] = True
    else:
        for e in np.argsort(-model.mass_, kind="stable")[:max_nodes]:
            while e >= 0 and not shown[e]:  # with its ancestors, so the picture stays a tree
                shown[e] = True
                e = model.tree_[e]
    kids = [[c for c in model._children[e] if shown[c]] for e in range(model.n_nodes_)]
    x = np.zeros(model.n_nodes_)
    leaves = 0
    # post-order: leaves take the next slot, a parent sits midway between its first and last child
    order = [e for e in model._depth_first() if shown[e]]
    for e in order:
        if not kids[e]:
            x[e] = leaves
            leaves += 1
    for e in reversed(order):
        if kids[e]:
            x[e] = 0.5 * (x[kids[e][0]] + x[kids[e][-1]])
    y = -model.depth_.astype(float)
    nodes = np.array(order)
    if ax is None:
        depth = int(model.depth_[nodes].max())
        fig = Figure(figsize=(min(40.0, max(6.0, 1.1 * leaves)), min(30.0, 1.6 * (depth + 1) + 1.0)))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    segments = [[(x[model.tree_[e]], y[model.tree_[e]]), (x[e], y[e])] for e in nodes if e != 0]
    if segments:
        ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.8, zorder=1))
    # area ∝ mass; the floor only keeps nodes of (almost) no mass visible
    area = np.maximum(600.0 * model.mass_[nodes] / max(model.mass_[nodes].max(), 1e-300), 4.0)
    ax.scatter(x[nodes], y[nodes], s=area, c=model.depth_[nodes] if colors is None else [colors[e] for e in nodes],
               cmap="viridis" if colors is None else None, zorder=2, edgecolors="k", linewidths=0.5)
    for e in nodes:
        ax.text(x[e], y[e] - 0.12, model._label(e, num_words) if label is None else label(e), ha="center", va="top", fontsize=6, zorder=3,
                gid=f"node-{e}")  # the gid names the node (an id in SVG output)
    ax.set_xlim(-0.8, max(leaves - 1, 0) + 0.8)
    ax.set_ylim(y[nodes].min() - 0.8, 0.5)
    ax.set_axis_off()
    if title is None:
        title = (f"DNT tree: {nodes.size} of {model.n_nodes_} nodes" if nodes.size < model.n_nodes_
                 else f"DNT tree: {model.n_nodes_} nodes")
    ax.set_title(title, fontsize=9)
    return fig

