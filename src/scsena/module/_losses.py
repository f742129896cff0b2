"""Loss terms: SENA-discrepancy-VAE's MMD, KL and DAG L1, and scsena's extra terms."""

from __future__ import annotations

import math

import torch

#: Number of Gaussian kernels in the MMD kernel sum.
MMD_KERNEL_NUM = 10
#: Largest ``pairs x kernels`` evaluated in one vectorised expression.
_VECTORISED_MAX = 2**22


def mmd_bandwidths(sigma: float = 200.0, kernel_num: int = MMD_KERNEL_NUM) -> list[float]:
    """Fixed MMD bandwidths ``sigma / 2**5 * 2**i`` for ``i = 0 .. kernel_num - 1``."""
    base = sigma / 2.0 ** (kernel_num // 2)
    return [base * 2.0**i for i in range(kernel_num)]


def mmd(
    y_hat: torch.Tensor,
    y: torch.Tensor,
    sigma: float = 200.0,
    kernel_num: int = MMD_KERNEL_NUM,
    bandwidths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Biased MMD with a sum of Gaussian kernels on squared Euclidean distance.

    ``mean(K_xx + K_yy - K_xy - K_yx)`` over all pairs including the diagonal, with
    ``k(p, q) = sum_i exp(-||p - q||^2 / bw_i)``. Pairwise distances come from one
    :func:`torch.cdist` of the stacked samples, so no ``B x B x G`` intermediate is
    formed, and all kernels are evaluated in one vectorised expression.

    Parameters
    ----------
    y_hat
        ``(B1, G)`` samples (predictions).
    y
        ``(B2, G)`` samples (observed cells).
    sigma
        Kernel scale (``sigma_MMD``; SENA uses 200, discrepancy-VAE 1000).
    kernel_num
        Number of kernels.
    bandwidths
        The bandwidths as a tensor on the samples' device (as from
        :func:`mmd_bandwidths`), to avoid building it per call; overrides ``sigma``
        and ``kernel_num``.

    Returns
    -------
    Scalar tensor.
    """
    if bandwidths is None:
        bandwidths = torch.tensor(
            mmd_bandwidths(sigma, kernel_num), dtype=y_hat.dtype, device=y_hat.device
        )
    n = y_hat.shape[0]
    z = torch.cat([y_hat, y])
    d2 = torch.cdist(z, z).square()
    bandwidths = bandwidths.to(d2.dtype)
    if d2.numel() * bandwidths.numel() <= _VECTORISED_MAX:
        k = torch.exp(-d2.unsqueeze(0) / bandwidths.view(-1, 1, 1)).sum(0)
    else:  # large samples: one kernel at a time keeps memory at a few (B1 + B2)^2
        k = torch.zeros_like(d2)
        for bw in bandwidths:
            k = k + torch.exp(-d2 / bw)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


def kl_divergence(
    mu: torch.Tensor, var: torch.Tensor, reference_scaling: bool = True
) -> torch.Tensor:
    """KL divergence of ``N(mu, var)`` from ``N(0, I)``, averaged.

    ``-0.5 * mean(1 + log var - mu^2 - var)``; with ``reference_scaling`` the mean is
    divided once more by the batch size, as the reference implementation does.
    """
    kl = -0.5 * torch.mean(1.0 + torch.log(var) - mu.square() - var)
    if reference_scaling:
        kl = kl / mu.shape[0]
    return kl


def dag_l1(adjacency: torch.Tensor) -> torch.Tensor:
    """L1 norm of the strict upper triangle, divided by the number of its entries."""
    z = adjacency.shape[0]
    n_pairs = max(z * (z - 1) / 2, 1.0)
    return torch.triu(adjacency, diagonal=1).abs().sum() / n_pairs


def mean_shift_error(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the mean predicted and the mean observed cell.

    On a perturbation-pure batch this compares the predicted and the observed mean
    response of one perturbation, gene by gene: a term that sees mean shifts which
    the MMD, dominated by the cell-to-cell spread, hardly weighs.
    """
    return (y_hat.mean(0) - y.mean(0)).square().mean()


def assignment_imbalance(bc: torch.Tensor) -> torch.Tensor:
    """``log Z - H(mean_t bc_t)``: zero when targets spread evenly over the factors.

    Parameters
    ----------
    bc
        ``(P, Z)`` soft assignment of every target.

    Returns
    -------
    Scalar tensor; ``log Z`` when every target is on the same factor.
    """
    p = bc.mean(0).clamp_min(1e-12)
    return math.log(bc.shape[1]) + (p * p.log()).sum()
