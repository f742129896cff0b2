"""scsena: SENA-discrepancy-VAE for single-cell perturbation responses, as an scvi-tools model.

Sub-packages and :class:`SENAVAE` are imported on first use, so ``import scsena`` (and
the ``scsena`` command's ``--help``) does not load torch, scvi-tools, scanpy or
matplotlib.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import datasets, gene_sets, metrics, pl
    from .model import SENAVAE

try:
    __version__ = version("scsena")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def _import_tqdm_auto_quietly() -> None:
    """In a Jupyter kernel, import ``tqdm.auto`` without its ipywidgets advice.

    scvi-tools imports ``tqdm.auto`` when scsena loads it, and in a notebook without
    ipywidgets that prints "TqdmWarning: IProgress not found". scsena reports training
    progress in a notebook as one line per epoch, never as a widget, so the advice
    does not concern it.
    """
    if "ipykernel.zmqshell" not in sys.modules or "tqdm.auto" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import tqdm.auto  # noqa: F401


_import_tqdm_auto_quietly()

__all__ = ["SENAVAE", "datasets", "gene_sets", "metrics", "pl", "__version__"]

#: Public names imported on first access: name -> (module, attribute or None for the module).
_LAZY = {
    "SENAVAE": (".model", "SENAVAE"),
    "datasets": (".datasets", None),
    "gene_sets": (".gene_sets", None),
    "metrics": (".metrics", None),
    "pl": (".pl", None),
    # sub-packages that earlier versions made available on ``import scsena``
    "evaluate": (".evaluate", None),
    "readouts": (".readouts", None),
    "model": (".model", None),
    "module": (".module", None),
    "train": (".train", None),
    "tracking": (".tracking", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
