"""The latent DAG with the perturbation targets acting on each factor."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import networkx as nx
import numpy as np
from matplotlib.lines import Line2D

from ._common import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from scsena.model import SENAVAE

#: Fill colours of factors with and without perturbation targets.
_PERTURBED_FILL, _PLAIN_FILL = "#fdd49e", "#d9d9d9"
#: Isolated factors side by side in one row of the layered layout (at least).
_ISOLATED_PER_ROW = 8
#: Inches per layout unit of the layered layout; space around it, in layout units.
_INCHES_PER_UNIT, _PAD = 1.1, 0.5
#: Least distance, in layout units, from an edge to a factor it does not join.
_CLEARANCE = 0.3


def _columns(graph: nx.DiGraph, isolated: list) -> list[list]:
    """Factors with edges grouped by the length of the longest path ending at them."""
    depth: dict = {}
    for v in nx.topological_sort(graph):
        if v not in isolated:
            depth[v] = max((depth[u] + 1 for u in graph.predecessors(v)), default=0)
            graph.nodes[v]["layer"] = depth[v]
    columns: list[list] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for v in graph:  # as in the graph: z2 before z10
        if v in depth:
            columns[depth[v]].append(v)
    return columns


def _heights(column: list) -> dict:
    """Height of each factor of a column, centred on 0, the first on top."""
    return {v: (len(column) - 1) / 2 - i for i, v in enumerate(column)}


def _order_columns(graph: nx.DiGraph, columns: list[list], sweeps: int = 4) -> None:
    """Order each column by the mean height of its neighbours (barycentre sweeps).

    Sweeps alternate left to right (by parents) and right to left (by children), which
    shortens edges and removes most crossings; ties keep the current order.
    """
    height = {v: h for column in columns for v, h in _heights(column).items()}

    def sort(column: list, neighbours) -> None:
        def key(v):
            near = [height[u] for u in neighbours(v)]
            return -(np.mean(near) if near else height[v])

        column.sort(key=key)
        height.update(_heights(column))

    for _ in range(sweeps):
        for column in columns[1:]:
            sort(column, graph.predecessors)
        for column in reversed(columns[:-1]):
            sort(column, graph.successors)


def _layered_layout(graph: nx.DiGraph) -> dict:
    """Columns by longest-path depth (edges flow left to right); isolated factors in rows below.

    A factor's column is the length of the longest directed path ending at it, so
    every edge goes to a column further right; within a column, factors are ordered
    to keep edges short and uncrossed (by the mean height of their neighbours).
    Factors without edges get rows of their own under the graph, side by side (at
    least 8 per row, or as many as there are columns).
    """
    if not nx.is_directed_acyclic_graph(graph):
        raise ValueError("The graph has a cycle: use layout='spring' to draw it.")
    isolated = [v for v in graph if graph.degree(v) == 0]
    columns = _columns(graph, isolated)
    _order_columns(graph, columns)
    pos = {
        v: np.array([float(x), h])
        for x, column in enumerate(columns)
        for v, h in _heights(column).items()
    }
    bottom = min((p[1] for p in pos.values()), default=0.0) - (1.2 if pos else 0.0)
    per_row = max(_ISOLATED_PER_ROW, len(columns))
    for i, v in enumerate(isolated):
        graph.nodes[v]["layer"] = None
        row, col = divmod(i, per_row)
        pos[v] = np.array([float(col), bottom - row])
    return pos


def _arc(p0: np.ndarray, p2: np.ndarray, rad: float, t: np.ndarray) -> np.ndarray:
    """Points at ``t`` of the quadratic Bezier curve matplotlib's ``arc3,rad=rad`` draws."""
    d = p2 - p0
    ctrl = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p2


def _edge_rad(pos: dict, u, v, clearance: float) -> float:
    """Curvature (matplotlib ``arc3`` rad) of the edge ``u -> v`` that passes no other node.

    Tries a straight line, then arcs bending more and more to either side (the
    widest gap when none clears ``clearance``); the path is the quadratic Bezier
    curve ``arc3`` draws (exact with equal axis scales).
    """
    p0, p2 = np.asarray(pos[u], float), np.asarray(pos[v], float)
    others = np.array([p for w, p in pos.items() if w not in (u, v)], dtype=float)
    if not len(others):
        return 0.0
    t = np.linspace(0.05, 0.95, 60)[:, None]
    gaps = {}
    for rad in (0.0, 0.2, -0.2, 0.35, -0.35, 0.5, -0.5, 0.7, -0.7, 0.9, -0.9):
        curve = _arc(p0, p2, rad, t)
        gaps[rad] = np.linalg.norm(curve[:, None, :] - others[None, :, :], axis=2).min()
        if gaps[rad] > clearance:
            return rad
    return max(gaps, key=gaps.get)  # no clear path: the one passing farthest from factors


def _targets_table(graph: nx.DiGraph, width: int) -> str:
    """One line (wrapped at ``width``) per perturbed factor: ``z3: A, B, C``."""
    rows = []
    for v in graph:
        ts = graph.nodes[v]["targets"]
        if ts:
            rows.append(
                textwrap.fill(
                    ", ".join(ts), width=width, initial_indent=f"{v}: ", subsequent_indent="    "
                )
            )
    return "\n".join(rows)


def _factor_graph(
    model: SENAVAE, threshold: float, temperature: float, hide_isolated: bool
) -> nx.DiGraph:
    """Factors ``z0 ...`` (with their ``targets``) and the DAG's edges (with their ``weight``)."""
    edges = model.get_causal_graph(threshold=threshold)
    targets = model.get_intervention_targets(temperature=temperature)
    by_factor: dict[str, list[str]] = {}
    for target, latent in targets["latent"].items():
        by_factor.setdefault(str(latent), []).append(str(target))
    graph = nx.DiGraph()
    for i in range(model.n_latent):
        name = f"z{i}"
        graph.add_node(name, targets=sorted(by_factor.get(name, [])))
    for src, dst, w in edges[["source", "target", "weight"]].itertuples(index=False):
        graph.add_edge(str(src), str(dst), weight=float(w))
    if hide_isolated:
        graph.remove_nodes_from(
            [v for v in list(graph) if graph.degree(v) == 0 and not graph.nodes[v]["targets"]]
        )
    return graph


def _node_positions(graph: nx.DiGraph, layout: str, seed: int) -> dict:
    """Factor positions of the ``"layered"`` or ``"spring"`` layout."""
    if layout == "layered":
        return _layered_layout(graph) if len(graph) else {}
    if layout == "spring":
        return nx.spring_layout(graph, seed=seed) if len(graph) else {}
    raise ValueError(f"layout must be 'layered' or 'spring', got {layout!r}.")


def _edge_rads(graph: nx.DiGraph, pos: dict, layout: str) -> dict[tuple, float]:
    """Curvature of every edge: bent around other factors (layered) or slightly (spring)."""
    if layout == "layered":
        return {(u, v): _edge_rad(pos, u, v, _CLEARANCE) for u, v in graph.edges}
    return {(u, v): 0.1 for u, v in graph.edges}


def _layered_limits(pos: dict, rads: dict[tuple, float]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper data limits holding every factor and every bent edge, padded."""
    if not pos:
        return np.array([-_PAD, -_PAD]), np.array([_PAD, _PAD])
    points = [np.asarray(p, float)[None, :] for p in pos.values()]
    t = np.linspace(0.0, 1.0, 21)[:, None]
    for (u, v), rad in rads.items():
        points.append(_arc(np.asarray(pos[u], float), np.asarray(pos[v], float), rad, t))
    xy = np.concatenate(points)
    return xy.min(axis=0) - _PAD, xy.max(axis=0) + _PAD


def _graph_figsize(
    layout: str, limits: tuple[np.ndarray, np.ndarray], table: str
) -> tuple[float, float]:
    """Figure size fitting the layout's extent and, beside it, the legend and target table."""
    n_lines = table.count("\n") + 2 if table else 0
    side_h = 0.6 + 0.13 * n_lines  # legend, then the table in 7-point type
    side_w = 0.075 * max((len(x) for x in table.split("\n")), default=0) if table else 0.0
    if layout == "layered":
        span_x, span_y = _INCHES_PER_UNIT * (limits[1] - limits[0])
        return (max(3.0, span_x) + max(side_w, 1.3), max(2.5, span_y + 0.6, side_h))
    return (5.0 + max(side_w, 1.3), max(4.2, side_h))


def _draw_factors(ax: Axes, graph: nx.DiGraph, pos: dict, node_size: float) -> None:
    """Factors as circles (perturbed ones highlighted), named ``z0 ...``."""
    nodes = list(graph)
    nx.draw_networkx_nodes(
        graph,
        pos,
        nodelist=nodes,
        node_color=[_PERTURBED_FILL if graph.nodes[v]["targets"] else _PLAIN_FILL for v in nodes],
        edgecolors="black",
        linewidths=0.5,
        node_size=node_size,
        ax=ax,
    )
    nx.draw_networkx_labels(graph, pos, labels={v: v for v in nodes}, font_size=8, ax=ax)


def _draw_edges(
    ax: Axes,
    graph: nx.DiGraph,
    pos: dict,
    rads: dict[tuple, float],
    colors: tuple[str, str],
    node_size: float,
) -> None:
    """Edges as arrows coloured by sign, as wide as ``|weight|``, bent as ``rads`` says."""
    edge_list = list(graph.edges(data="weight"))
    if not edge_list:
        return
    wmax = max(abs(w) for *_, w in edge_list)
    by_rad: dict[float, list] = {}
    for u, v, w in edge_list:
        by_rad.setdefault(rads[(u, v)], []).append((u, v, w))
    for rad, group in by_rad.items():
        nx.draw_networkx_edges(
            graph,
            pos,
            edgelist=[(u, v) for u, v, _ in group],
            edge_color=[colors[0] if w > 0 else colors[1] for *_, w in group],
            width=[0.5 + 3.0 * abs(w) / wmax for *_, w in group],
            arrows=True,
            arrowstyle="-|>",
            arrowsize=12,
            node_size=node_size,
            connectionstyle=f"arc3,rad={rad}",
            ax=ax,
        )


def _graph_legend(ax: Axes, colors: tuple[str, str], table: str) -> None:
    """Legend of the edge signs and of perturbed factors beside the graph, the targets below it."""
    perturbed = Line2D(
        [], [], marker="o", ls="", mfc=_PERTURBED_FILL, mec="black", label="perturbed factor"
    )
    legend = ax.legend(
        handles=[
            Line2D([], [], color=colors[0], label="positive edge"),
            Line2D([], [], color=colors[1], label="negative edge"),
            perturbed,
        ],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
        fontsize=8,
    )
    if table:
        ax.annotate(
            "targets acting on each factor\n" + table,
            xy=(0.0, 0.0),
            xycoords=legend,
            xytext=(4, -6),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=7,
            family="monospace",
            color="#7f2704",
        )


def _frame_graph(ax: Axes, layout: str, limits: tuple[np.ndarray, np.ndarray]) -> None:
    """Axes limits around the graph (equal scales when layered, so edges bend as computed)."""
    if layout == "layered":
        ax.set_xlim(limits[0][0], limits[1][0])
        ax.set_ylim(limits[0][1], limits[1][1])
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.margins(x=0.12, y=0.15)
    ax.set_axis_off()


def causal_graph(
    model: SENAVAE,
    threshold: float = 0.1,
    ax: Axes | None = None,
    label_targets: bool = True,
    temperature: float = 1000.0,
    layout: Literal["layered", "spring"] = "layered",
    hide_isolated: bool = False,
    targets_width: int = 40,
    node_size: float = 600,
    colors: tuple[str, str] = ("tab:red", "tab:blue"),
    seed: int = 0,
    save: str | Path | None = None,
    show: bool = False,
) -> Axes:
    """The learned latent DAG, with the perturbation targets mapped to each factor.

    Edges come from :meth:`~scsena.SENAVAE.get_causal_graph` (``|weight| >=
    threshold``); their colour gives the sign, their width ``|weight|``. Factors that
    perturbations act on (:meth:`~scsena.SENAVAE.get_intervention_targets`) are
    highlighted; a table beside the graph lists every target acting on each factor.

    Parameters
    ----------
    model
        Trained model.
    threshold
        Minimum ``|weight|`` of an edge drawn.
    ax
        Axes to draw into.
    label_targets
        List the targets mapped to each factor beside the graph (all of them,
        wrapped).
    temperature
        Temperature of the perturbation -> factor assignment (reference 1000).
    layout
        ``"layered"``: factors in columns by DAG order (a factor's column is the
        length of the longest path ending at it, so edges flow left to right), edges
        bent around the factors they would cross, factors without edges in rows of
        their own below; ``"spring"``: force-directed.
    hide_isolated
        Leave out factors without edges and targets.
    targets_width
        Wrap each factor's line of the target table at this many characters.
    node_size
        Marker area of the factors.
    colors
        Colours of positive and negative edges.
    seed
        Seed of the spring layout.
    save, show
        Path to save the figure to, whether to show it.

    Returns
    -------
    The Axes; the graph itself is in ``ax.scsena_graph`` (a
    :class:`networkx.DiGraph` with ``weight`` on edges and ``targets`` on nodes) and
    the node positions in ``ax.scsena_pos``.
    """
    graph = _factor_graph(model, threshold, temperature, hide_isolated)
    pos = _node_positions(graph, layout, seed)
    rads = _edge_rads(graph, pos, layout)
    limits = _layered_limits(pos, rads)
    table = _targets_table(graph, targets_width) if label_targets else ""
    ax = new_axes(ax, _graph_figsize(layout, limits, table))
    _draw_factors(ax, graph, pos, node_size)
    _draw_edges(ax, graph, pos, rads, colors, node_size)
    _graph_legend(ax, colors, table)
    _frame_graph(ax, layout, limits)
    ax.set_title(f"Latent DAG (|weight| >= {threshold:g})")
    ax.scsena_graph = graph
    ax.scsena_pos = pos
    finish(ax.figure, save, show)
    return ax
