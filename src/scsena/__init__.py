"""scsena: SENA-discrepancy-VAE for single-cell perturbation responses, as an scvi-tools model."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, gene_sets, metrics, pl
from .model import SENAVAE

try:
    __version__ = version("scsena")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["SENAVAE", "datasets", "gene_sets", "metrics", "pl", "__version__"]
