"""Data sets: a Perturb-seq simulator with known ground truth and readers for real screens."""

from ._download import CPA_BINARIES_URL, default_cache_dir
from ._loaders import WESSEL_HELDOUT, norman2019, wessel2023_hek293
from ._simulate import SIMULATION_UNS_KEY, simulate_perturbseq

__all__ = [
    "CPA_BINARIES_URL",
    "SIMULATION_UNS_KEY",
    "WESSEL_HELDOUT",
    "default_cache_dir",
    "norman2019",
    "simulate_perturbseq",
    "wessel2023_hek293",
]
