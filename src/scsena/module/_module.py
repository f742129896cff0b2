"""The SENA-discrepancy-VAE network as an scvi-tools module."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from scsena._constants import TENSORS

from ._layers import CausalLayer, InterventionEncoder, MaskedLinear, init_linear_reference
from ._losses import dag_l1, kl_divergence, mmd, mmd_bandwidths


class SENAModule(BaseModuleClass):
    """SENA-discrepancy-VAE network (SPEC section 3).

    Encoder: pathway activities ``a`` (masked layer, or a dense layer for the
    ``"original"`` discrepancy-VAE ablation), ``h = LeakyReLU_0.2(a)``, mean and
    softplus variance heads. Intervention encoder and causal layer on the latent
    factors; a two-layer decoder that keeps the reference's final LeakyReLU.

    Parameters
    ----------
    n_genes
        Number of genes ``G``.
    n_targets
        Number of single perturbation targets ``P``.
    membership
        ``(G, T)`` gene-set membership (0/1), sparse or dense.
    n_latent
        Number of latent factors ``Z``.
    encoder
        ``"sena"`` (gene-set masked first layer) or ``"original"`` (dense).
    sena_lambda
        Mask value outside gene sets (``"sena"`` only).
    n_hidden
        Width of the decoder and intervention-encoder hidden layers.
    mmd_sigma
        Kernel scale of the MMD.
    lambda_l1
        Weight of the L1 penalty on the DAG.
    kl_reference_scaling
        Divide the KL by the batch size once more, as the reference does.
    """

    def __init__(
        self,
        n_genes: int,
        n_targets: int,
        membership: sp.spmatrix | np.ndarray,
        n_latent: int,
        encoder: Literal["sena", "original"] = "sena",
        sena_lambda: float = 0.0,
        n_hidden: int = 128,
        mmd_sigma: float = 200.0,
        lambda_l1: float = 0.1,
        kl_reference_scaling: bool = True,
    ):
        super().__init__()
        n_terms = membership.shape[1]
        if membership.shape[0] != n_genes:
            raise ValueError(
                f"The gene-set mask has {membership.shape[0]} genes but the data has {n_genes}."
            )
        self.encoder_kind = encoder
        self.n_latent = n_latent
        self.mmd_sigma = mmd_sigma
        self.lambda_l1 = lambda_l1
        self.kl_reference_scaling = kl_reference_scaling
        if encoder == "sena":
            self.fc1 = MaskedLinear(membership, sena_lambda)
        elif encoder == "original":
            self.fc1 = nn.Linear(n_genes, n_terms)
        else:
            raise ValueError(f"encoder must be 'sena' or 'original', got {encoder!r}.")
        self.fc_mean = nn.Linear(n_terms, n_latent)
        self.fc_var = nn.Linear(n_terms, n_latent)
        self.intervention = InterventionEncoder(n_targets, n_latent, n_hidden)
        self.causal = CausalLayer(n_latent)
        # not saved: derived from mmd_sigma; a buffer so it follows the module's device
        self.register_buffer(
            "mmd_bandwidths", torch.tensor(mmd_bandwidths(mmd_sigma)), persistent=False
        )
        self.d1 = nn.Linear(n_latent, n_hidden)
        self.d2 = nn.Linear(n_hidden, n_genes)
        # as the reference: the dense encoder/decoder linears N(0, 0.02), bias 0; the
        # intervention encoder keeps PyTorch's default initialisation, which gives each
        # target a distinct starting assignment
        for layer in (self.fc_mean, self.fc_var, self.d1, self.d2):
            init_linear_reference(layer)
        if encoder == "original":
            init_linear_reference(self.fc1)

    # -- building blocks -------------------------------------------------------
    def pathway_activity(self, x: torch.Tensor) -> torch.Tensor:
        """First-layer output ``a`` (pathway activities for ``"sena"``)."""
        return self.fc1(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(a, mu, var)``."""
        a = self.pathway_activity(x)
        h = F.leaky_relu(a, 0.2)
        return a, self.fc_mean(h), F.softplus(self.fc_var(h))

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Decoder ``LeakyReLU(Linear(LeakyReLU(Linear(u))))``."""
        return F.leaky_relu(self.d2(F.leaky_relu(self.d1(u), 0.2)), 0.2)

    def intervene(
        self, z: torch.Tensor, codes: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_int = z + sum_k bc_k s_k`` for the targets in ``codes``; returns ``(z_int, bc)``."""
        bc, s = self.intervention(codes, temperature)
        return z + (bc * s.unsqueeze(-1)).sum(dim=1), bc

    # -- scvi-tools interface -----------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {"x": tensors[TENSORS.X_CONTROL]}

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        use_mean: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode control cells; ``z = mu + sigma * eps`` (or ``mu`` with ``use_mean``).

        ``eps`` is drawn from ``generator`` when given (else the global generator).
        """
        a, mu, var = self.encode(x)
        if use_mean:
            z = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + var.sqrt() * eps
        return {"activity": a, "mu": mu, "var": var, "z": z}

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs
    ) -> dict:
        return {"z": inference_outputs["z"], "codes": tensors[TENSORS.CODES]}

    @auto_move_data
    def generative(
        self, z: torch.Tensor, codes: torch.Tensor, temperature: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """Interventional prediction ``y_hat`` and observational reconstruction ``x_hat``."""
        z_int, bc = self.intervene(z, codes, temperature)
        y_hat = self.decode(self.causal(z_int))
        x_hat = self.decode(self.causal(z))
        return {"y_hat": y_hat, "x_hat": x_hat, "bc": bc}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        alpha: float = 1.0,
        beta: float = 1.0,
    ) -> LossOutput:
        """Loss ``alpha * MMD(y_hat, y) + MSE(x_hat, x) + beta * KL + lambda_G * L1``."""
        x = tensors[TENSORS.X_CONTROL]
        y = tensors[TENSORS.Y]
        term_mmd = mmd(generative_outputs["y_hat"], y, bandwidths=self.mmd_bandwidths)
        term_mse = F.mse_loss(generative_outputs["x_hat"], x)
        term_kl = kl_divergence(
            inference_outputs["mu"], inference_outputs["var"], self.kl_reference_scaling
        )
        term_l1 = dag_l1(self.causal.G)
        total = alpha * term_mmd + term_mse + beta * term_kl + self.lambda_l1 * term_l1
        extra = {"mmd": term_mmd, "mse": term_mse, "kl": term_kl, "l1": term_l1}
        return LossOutput(loss=total, n_obs_minibatch=x.shape[0], extra_metrics=extra)
