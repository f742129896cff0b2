"""Plots of a trained :class:`~scsena.SENAVAE`: pathways, the latent DAG, predictions, training.

Every function draws with matplotlib, takes ``ax`` (draw into an existing Axes),
``save`` (a path: the figure is written with ``bbox_inches="tight"``) and ``show``
(call :func:`matplotlib.pyplot.show`), and returns the Axes it drew (the Figure for
multi-panel plots), so the plot can be refined further.

Examples
--------
>>> from scsena import pl
>>> pl.pathway_activity(model)  # mean BP activity per perturbation
>>> pl.top_bps(model, "CBL")  # BPs most changed by one perturbation
>>> pl.differential_activity(model)  # top BPs of every perturbation vs control
>>> pl.causal_graph(model)  # latent DAG with the targets mapped to each factor
>>> pl.predicted_vs_real(model, perturbations=["CBL,PTPN12"])
>>> pl.training_curves(model)
"""

from ._activity import differential_activity, pathway_activity, top_bps
from ._expression import predicted_vs_real
from ._graph import causal_graph
from ._training import training_curves

__all__ = [
    "causal_graph",
    "differential_activity",
    "pathway_activity",
    "predicted_vs_real",
    "top_bps",
    "training_curves",
]


def __dir__() -> list[str]:
    """Only the plotting functions (not the private modules that hold them)."""
    return sorted(__all__)
