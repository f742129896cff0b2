"""A straightforward SENA-discrepancy-VAE, written from the method description, for benchmarks.

This is the baseline that ``train_throughput.py`` compares scsena with. It does
everything the way the published reference implementation does it, on purpose:

- float64 everywhere;
- the gene-set layer keeps a dense float64 ``G x T`` mask and forms ``W * M^T`` in
  every forward pass;
- the causal layer inverts ``I - triu(G, 1)`` explicitly with :func:`torch.inverse`;
- the MMD concatenates both samples and expands them to a ``2B x 2B x G`` tensor of
  differences;
- a perturbation is a one-hot ``P``-dimensional vector fed through ``Linear(P, 128)``,
  and its strength is ``c @ shift``;
- a batch is built by a Python loop over cells (``__getitem__`` per cell, one
  ``.toarray()`` per row) and stacked by the default collate function.

It is not part of the package: it only exists to measure scsena against it at equal
maths (``load_from_scsena`` copies an scsena module's weights into it).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

DTYPE = torch.float64


class ReferenceNetActivity(nn.Module):
    """Gene-set layer ``a = x (W * M^T)^T + b`` with a dense float64 mask."""

    def __init__(self, membership, lambda_: float = 0.0):
        super().__init__()
        member = membership.toarray() if sp.issparse(membership) else np.asarray(membership)
        mask = torch.as_tensor(member != 0, dtype=DTYPE)
        mask[mask == 0] = lambda_
        self.register_buffer("mask", mask)  # G x T
        n_genes, n_terms = member.shape
        self.weight = nn.Parameter(torch.empty(n_terms, n_genes, dtype=DTYPE))
        self.bias = nn.Parameter(torch.empty(n_terms, dtype=DTYPE))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(n_genes)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight * self.mask.T).T + self.bias


class ReferenceSENA(nn.Module):
    """The SENA-discrepancy-VAE network (encoder, intervention encoder, DAG, decoder), float64."""

    def __init__(self, membership, n_targets: int, n_latent: int, n_hidden: int = 128):
        super().__init__()
        n_genes, n_terms = membership.shape
        self.fc1 = ReferenceNetActivity(membership)
        self.fc_mean = nn.Linear(n_terms, n_latent, dtype=DTYPE)
        self.fc_var = nn.Linear(n_terms, n_latent, dtype=DTYPE)
        self.c1 = nn.Linear(n_targets, n_hidden, dtype=DTYPE)
        self.c2 = nn.Linear(n_hidden, n_latent, dtype=DTYPE)
        self.c_shift = nn.Parameter(torch.ones(n_targets, dtype=DTYPE))
        self.d1 = nn.Linear(n_latent, n_hidden, dtype=DTYPE)
        self.d2 = nn.Linear(n_hidden, n_genes, dtype=DTYPE)
        self.G = nn.Parameter(torch.randn(n_latent, n_latent, dtype=DTYPE) * 0.1)
        self.register_buffer("I", torch.eye(n_latent, dtype=DTYPE))

    def encode(self, x):
        h = F.leaky_relu(self.fc1(x), 0.2)
        return self.fc_mean(h), F.softplus(self.fc_var(h))

    def c_encode(self, c, temp: float = 1.0):
        h = F.leaky_relu(self.c1(c), 0.2)
        return F.softmax(self.c2(h) * temp, dim=-1)

    def dag(self, z, bc=None, csz=None):
        z_int = z if bc is None else z + bc * csz.reshape(-1, 1)
        return z_int @ torch.inverse(self.I - torch.triu(self.G, diagonal=1))

    def decode(self, u):
        return F.leaky_relu(self.d2(F.leaky_relu(self.d1(u), 0.2)), 0.2)

    def forward(self, x, c, temp: float = 1.0, eps: torch.Tensor | None = None):
        """One target per cell (``num_interv=1``): ``(y_hat, x_recon, mu, var)``."""
        mu, var = self.encode(x)
        std = var.sqrt()
        if eps is None:
            eps = torch.randn_like(std)
        z = eps * std + mu
        bc, csz = self.c_encode(c, temp), c @ self.c_shift
        y_hat = self.decode(self.dag(z, bc, csz))
        x_recon = self.decode(self.dag(z))
        return y_hat, x_recon, mu, var


def reference_mmd(source, target, sigma: float = 200.0, kernel_num: int = 10, kernel_mul=2.0):
    """Biased multi-kernel MMD through the expanded ``2B x 2B x G`` differences."""
    b = source.shape[0]
    total = torch.cat([source, target], dim=0)
    n = total.shape[0]
    total0 = total.unsqueeze(0).expand(n, n, total.shape[1])
    total1 = total.unsqueeze(1).expand(n, n, total.shape[1])
    l2 = ((total0 - total1) ** 2).sum(2)
    bandwidth = sigma / kernel_mul ** (kernel_num // 2)
    kernels = sum(torch.exp(-l2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num))
    xx, yy = kernels[:b, :b], kernels[b:, b:]
    xy, yx = kernels[:b, b:], kernels[b:, :b]
    return torch.mean(xx + yy - xy - yx)


def reference_loss(
    model: ReferenceSENA,
    y_hat,
    y,
    x_recon,
    x,
    mu,
    var,
    alpha: float = 1.0,
    beta: float = 1.0,
    lambda_l1: float = 0.1,
    sigma: float = 200.0,
):
    """``alpha MMD + MSE + beta KL + lambda_G L1`` with the reference's scalings."""
    term_mmd = reference_mmd(y_hat, y, sigma)
    term_mse = F.mse_loss(x_recon, x, reduction="mean")
    term_kl = -0.5 * torch.mean(1 + torch.log(var) - mu.pow(2) - var) / mu.shape[0]
    z = model.G.shape[0]
    term_l1 = torch.norm(torch.triu(model.G, diagonal=1), p=1) / (z * (z - 1) / 2)
    return alpha * term_mmd + term_mse + beta * term_kl + lambda_l1 * term_l1


class ReferenceDataset(Dataset):
    """Examples read one cell at a time, as the reference's ``Dataset`` does.

    The control partners are drawn once, when the dataset is built (rows copied into
    their own CSR matrix), then ``__getitem__`` densifies one row of each matrix.
    """

    def __init__(self, matrix, perturbed, partners, target_index, n_targets: int):
        matrix = sp.csr_matrix(matrix)
        self.ctrl_samples = matrix[np.asarray(partners)]
        self.ptb_samples = matrix[np.asarray(perturbed)]
        onehot = np.zeros((len(perturbed), n_targets))
        onehot[np.arange(len(perturbed)), np.asarray(target_index)] = 1.0
        self.ptb_ids = onehot

    def __len__(self) -> int:
        return self.ptb_samples.shape[0]

    def __getitem__(self, item):
        x = torch.from_numpy(self.ctrl_samples[item].toarray().flatten()).double()
        y = torch.from_numpy(self.ptb_samples[item].toarray().flatten()).double()
        c = torch.from_numpy(self.ptb_ids[item]).double()
        return x, y, c


def reference_loader(dataset: ReferenceDataset, batches) -> DataLoader:
    """A loader over given lists of example indices (default collate stacks the cells)."""
    return DataLoader(dataset, batch_sampler=[list(map(int, b)) for b in batches])


@torch.no_grad()
def load_from_scsena(ref: ReferenceSENA, module) -> None:
    """Copy an scsena ``SENAModule``'s weights into ``ref`` (cast to float64)."""

    def put(dst, src):
        dst.copy_(src.detach().to(DTYPE))

    put(ref.fc1.weight, module.fc1.effective_weight())
    put(ref.fc1.bias, module.fc1.bias)
    for name in ("fc_mean", "fc_var", "d1", "d2"):
        put(getattr(ref, name).weight, getattr(module, name).weight)
        put(getattr(ref, name).bias, getattr(module, name).bias)
    put(ref.c1.weight, module.intervention.c1.weight)
    put(ref.c1.bias, module.intervention.c1.bias)
    put(ref.c2.weight, module.intervention.c2.weight)
    put(ref.c2.bias, module.intervention.c2.bias)
    put(ref.c_shift, module.intervention.shift)
    put(ref.G, module.causal.G)
