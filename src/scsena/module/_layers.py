"""Layers of SENA-discrepancy-VAE (SPEC sections 2 and 3).

The gene-set masked layer, the intervention encoder and the causal (DAG) layer.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn


def init_linear_reference(module: nn.Module, std: float = 0.02) -> None:
    """Initialise every :class:`torch.nn.Linear` in ``module`` as N(0, std), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MaskedLinear(nn.Module):
    """Gene-set masked linear layer ``a = x (W * M^T)^T + b`` (the SENA-delta layer).

    ``M[g, t] = 1`` when gene ``g`` belongs to term ``t`` and ``lambda_`` otherwise.
    Initialisation as :class:`torch.nn.Linear` (Kaiming-uniform with ``a = sqrt(5)``,
    bias uniform in ``+-1/sqrt(G)``).

    With ``lambda_ = 0`` the layer never forms ``W * M``: the weights of non-member
    pairs are set to zero once and their gradients are masked, so the forward pass is
    a plain matrix product with exactly the reference's effective weights (the
    reference's non-member weights receive zero gradient and never influence the
    output). With ``lambda_ > 0`` the effective weight ``W * M`` is formed in the
    forward pass, as no cheaper exact form exists.

    Parameters
    ----------
    membership
        ``(n_genes, n_terms)`` sparse or dense 0/1 gene-set membership.
    lambda_
        Value of the mask outside the gene sets, in ``[0, 1]``.
    """

    def __init__(self, membership: sp.spmatrix | np.ndarray, lambda_: float = 0.0):
        super().__init__()
        if not 0.0 <= float(lambda_) <= 1.0:
            raise ValueError(f"sena_lambda must lie in [0, 1], got {lambda_}.")
        member = membership.toarray() if sp.issparse(membership) else np.asarray(membership)
        n_genes, n_terms = member.shape
        self.in_features = n_genes
        self.out_features = n_terms
        self.lambda_ = float(lambda_)
        self.weight = nn.Parameter(torch.empty(n_terms, n_genes))
        self.bias = nn.Parameter(torch.empty(n_terms))
        self.register_buffer("member", torch.as_tensor(member.T != 0))
        self._grad_hook = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as :class:`torch.nn.Linear` does."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.bias, -bound, bound)
        if self.lambda_ == 0.0:
            with torch.no_grad():
                self.weight.mul_(self.member)

    def _mask_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.member

    def _ensure_grad_mask(self) -> None:
        # registered lazily: tensor hooks are not pickled (spawned DDP workers, copies)
        if self.lambda_ == 0.0 and self._grad_hook is None and self.weight.requires_grad:
            self._grad_hook = self.weight.register_hook(self._mask_grad)

    def __getstate__(self):
        state = super().__getstate__()
        state["_grad_hook"] = None
        return state

    def effective_weight(self) -> torch.Tensor:
        """The weight actually applied, ``W * M^T`` (``(n_terms, n_genes)``)."""
        if self.lambda_ == 0.0:
            return self.weight
        return torch.where(self.member, self.weight, self.weight * self.lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pathway activities ``(batch, n_terms)``."""
        self._ensure_grad_mask()
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"lambda_={self.lambda_}"
        )


class InterventionEncoder(nn.Module):
    """Soft assignment of perturbation targets to latent factors, and their strength.

    ``h_c = LeakyReLU_0.2(Linear(P, hidden)(c))``, ``bc = softmax(tau * Linear(hidden, Z)(h_c))``,
    ``s = c . shift`` with a learnable ``shift`` initialised to ones. Each target is a
    one-hot vector; it is given as an index (``-1`` for "no target"), so the first
    linear layer reduces to a column look-up and no ``P``-wide vector is formed.

    Parameters
    ----------
    n_targets
        Number of single targets ``P``.
    n_latent
        Number of latent factors ``Z``.
    n_hidden
        Width of the hidden layer.
    """

    def __init__(self, n_targets: int, n_latent: int, n_hidden: int = 128):
        super().__init__()
        self.c1 = nn.Linear(n_targets, n_hidden)
        self.c2 = nn.Linear(n_hidden, n_latent)
        self.shift = nn.Parameter(torch.ones(n_targets))

    def assignment(self, index: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``bc`` for target indices ``index`` (``(B,)`` long, ``>= 0``)."""
        h = F.embedding(index, self.c1.weight.T) + self.c1.bias
        h = F.leaky_relu(h, 0.2)
        return torch.softmax(temperature * self.c2(h), dim=-1)

    def forward(
        self, codes: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Assignments and strengths for each target slot.

        Parameters
        ----------
        codes
            ``(B, K)`` target indices, ``-1`` where a slot holds no target.
        temperature
            Softmax temperature ``tau``.

        Returns
        -------
        ``bc`` of shape ``(B, K, Z)`` and ``s`` of shape ``(B, K)`` (zero for empty slots).
        """
        present = codes >= 0
        safe = codes.clamp_min(0)
        bc = self.assignment(safe.reshape(-1), temperature).reshape(*codes.shape, -1)
        s = self.shift[safe] * present.to(self.shift.dtype)
        return bc, s


class CausalLayer(nn.Module):
    """Linear structural causal model over the latent factors.

    ``u = z_int (I - A)^{-1}`` with ``A = triu(G, 1)`` (a DAG in a fixed order),
    solved with a triangular solve, which is exact because ``I - A`` is unit
    upper-triangular.

    Parameters
    ----------
    n_latent
        Number of latent factors.
    init_std
        Standard deviation of the normal initialisation of ``G``.
    """

    def __init__(self, n_latent: int, init_std: float = 0.1):
        super().__init__()
        self.G = nn.Parameter(torch.randn(n_latent, n_latent) * init_std)

    @property
    def adjacency(self) -> torch.Tensor:
        """``A = triu(G, 1)``."""
        return torch.triu(self.G, diagonal=1)

    def forward(self, z_int: torch.Tensor) -> torch.Tensor:
        """Apply ``(I - A)^{-1}`` on the right of ``z_int`` (``(B, Z)``)."""
        eye = torch.eye(self.G.shape[0], dtype=self.G.dtype, device=self.G.device)
        return torch.linalg.solve_triangular(
            eye - self.adjacency, z_int, upper=True, left=False, unitriangular=True
        )
