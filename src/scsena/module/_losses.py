"""Loss terms of SENA-discrepancy-VAE (SPEC section 4)."""

from __future__ import annotations

import torch

#: Number of Gaussian kernels in the MMD kernel sum.
MMD_KERNEL_NUM = 10


def mmd_bandwidths(sigma: float = 200.0, kernel_num: int = MMD_KERNEL_NUM) -> list[float]:
    """Fixed MMD bandwidths ``sigma / 2**5 * 2**i`` for ``i = 0 .. kernel_num - 1``."""
    base = sigma / 2.0 ** (kernel_num // 2)
    return [base * 2.0**i for i in range(kernel_num)]


def _kernel_sum(d2: torch.Tensor, bandwidths: list[float]) -> torch.Tensor:
    out = torch.exp(-d2 / bandwidths[0])
    for bw in bandwidths[1:]:
        out = out + torch.exp(-d2 / bw)
    return out


def mmd(
    y_hat: torch.Tensor,
    y: torch.Tensor,
    sigma: float = 200.0,
    kernel_num: int = MMD_KERNEL_NUM,
) -> torch.Tensor:
    """Biased MMD with a sum of Gaussian kernels on squared Euclidean distance.

    ``mean(K_xx + K_yy - K_xy - K_yx)`` over all pairs including the diagonal, with
    ``k(p, q) = sum_i exp(-||p - q||^2 / bw_i)``. Pairwise distances come from
    :func:`torch.cdist`, so no ``B x B x G`` intermediate is formed.

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

    Returns
    -------
    Scalar tensor.
    """
    bws = mmd_bandwidths(sigma, kernel_num)
    d_xx = torch.cdist(y_hat, y_hat).square()
    d_yy = torch.cdist(y, y).square()
    d_xy = torch.cdist(y_hat, y).square()
    return (
        _kernel_sum(d_xx, bws).mean()
        + _kernel_sum(d_yy, bws).mean()
        - 2.0 * _kernel_sum(d_xy, bws).mean()
    )


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
