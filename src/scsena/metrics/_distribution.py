"""Distribution distances between predicted and observed cells of one perturbation.

Both take two ``cells x genes`` samples (dense :class:`numpy.ndarray` or any
:mod:`scipy.sparse` matrix, densified per call) and return a Python float. Neither
needs the two samples to have the same number of cells.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from scipy.spatial.distance import cdist

from scsena.module import mmd as _torch_mmd

__all__ = ["energy_distance", "mmd"]


def _as_dense_2d(x, name: str = "x") -> np.ndarray:
    """Convert a ``cells x genes`` sample to a dense 2-D float64 array.

    Parameters
    ----------
    x
        Dense array-like or :mod:`scipy.sparse` matrix.
    name
        Name used in error messages.

    Returns
    -------
    ``cells x genes`` float64 array.
    """
    if sparse.issparse(x):
        x = x.toarray()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D cells x genes array, got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no cells.")
    return arr


def _check_pair(pred, real) -> tuple[np.ndarray, np.ndarray]:
    p = _as_dense_2d(pred, "pred")
    r = _as_dense_2d(real, "real")
    if p.shape[1] != r.shape[1]:
        raise ValueError(
            f"pred and real have different numbers of genes ({p.shape[1]} vs {r.shape[1]})."
        )
    return p, r


def mmd(pred, real, sigma: float = 200.0, kernel_num: int = 10) -> float:
    """Maximum mean discrepancy of the SENA reference (the training loss's MMD).

    Biased (V-statistic) estimator ``mean(K_xx) + mean(K_yy) - 2 mean(K_xy)`` over
    all pairs, diagonal included, with the kernel
    ``k(p, q) = sum_i exp(-||p - q||^2 / bw_i)`` and fixed bandwidths
    ``bw_i = sigma / 2**(kernel_num // 2) * 2**i``, ``i = 0 .. kernel_num - 1``
    (``sigma / 2**5 * 2**i`` for the default 10 kernels). The formula lives in
    :func:`scsena.module.mmd`; this wrapper evaluates it in float64 on numpy or
    sparse input.

    Parameters
    ----------
    pred
        ``n x genes`` predicted cells.
    real
        ``m x genes`` observed cells.
    sigma
        Kernel scale ``sigma_MMD`` (SENA: 200, discrepancy-VAE: 1000). Values
        computed with different ``sigma`` are not comparable.
    kernel_num
        Number of Gaussian kernels.

    Returns
    -------
    The MMD (0 for identical samples).
    """
    p, r = _check_pair(pred, real)
    with torch.no_grad():
        value = _torch_mmd(
            torch.from_numpy(p), torch.from_numpy(r), sigma=sigma, kernel_num=kernel_num
        )
    return float(value)


def energy_distance(pred, real) -> float:
    """Energy distance (E-statistic) between two samples.

    ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` with Euclidean norms, estimated by
    the V-statistic: every expectation is the mean over *all* pairs, so the
    within-sample means include the zero diagonal (``n`` zero distances out of
    ``n**2``). This estimator is non-negative and is 0 for identical samples; it is
    the squared energy distance of the two empirical distributions (no square root
    is taken, unlike :func:`scipy.stats.energy_distance`).

    Parameters
    ----------
    pred
        ``n x genes`` predicted cells.
    real
        ``m x genes`` observed cells.

    Returns
    -------
    The energy distance.
    """
    p, r = _check_pair(pred, real)
    d_xy = cdist(p, r).mean()
    d_xx = cdist(p, p).mean()
    d_yy = cdist(r, r).mean()
    return float(2.0 * d_xy - d_xx - d_yy)
