"""The SENA-discrepancy-VAE network as an scvi-tools module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from scsena._constants import TENSORS
from scsena._presets import REFERENCE_MODULE

from ._layers import (
    CausalLayer,
    InterventionEncoder,
    InterventionTable,
    MaskedLinear,
    MemberMeanLayer,
    init_linear_reference,
)
from ._losses import (
    assignment_imbalance,
    dag_l1,
    kl_divergence,
    mean_shift_error,
    mmd,
    mmd_bandwidths,
)

#: Factor applied to weighted-mean activities before the encoder's heads.
MEMBER_MEAN_SCALE = 0.1


def _first_layer(
    membership: sp.spmatrix | np.ndarray, encoder: str, sena_lambda: float, member_weights: str
) -> tuple[nn.Module, float]:
    """The encoder's first layer and the factor its activities are multiplied by."""
    if member_weights not in ("free", "nonnegative"):
        raise ValueError(f"member_weights must be 'free' or 'nonnegative', got {member_weights!r}.")
    if encoder == "original":
        n_genes, n_terms = membership.shape
        return nn.Linear(n_genes, n_terms), 1.0
    if encoder != "sena":
        raise ValueError(f"encoder must be 'sena' or 'original', got {encoder!r}.")
    if member_weights == "free":
        return MaskedLinear(membership, sena_lambda), 1.0
    if sena_lambda != 0:
        raise ValueError(
            f"sena_lambda={sena_lambda} gives every gene a weight in every term, which a "
            "weighted mean of the members cannot hold: pass member_weights='free' with "
            "sena_lambda > 0 (or sena_lambda=0)."
        )
    # Weighted means vary across cells far more than the reference's first layer (small
    # weights of both signs) and make the latent factors, hence each cell's predicted
    # shift, vary from cell to cell. Measured on unseen doubles (4 seeds with ~70 cells
    # per perturbation, 3 of the standard simulator): at full scale, worse than free
    # weights with few cells (MMD 0.95 vs 0.76); at 0.1, better there (0.67) and on par
    # on the standard simulator.
    return MemberMeanLayer(membership), MEMBER_MEAN_SCALE


class SENAModule(BaseModuleClass):
    """SENA-discrepancy-VAE network.

    Encoder: pathway activities ``a`` (masked layer, or a dense layer for the
    ``"original"`` discrepancy-VAE ablation), ``h = LeakyReLU_0.2(a)``, mean and
    softplus variance heads. Intervention encoder and causal layer on the latent
    factors; a two-layer decoder that keeps the reference's final LeakyReLU.

    The published model is ``assignment="mlp"``, ``prediction="direct"``,
    ``lambda_mean=0``, ``lambda_balance=0``. The other settings are scsena's remedies
    for its failure modes (targets collapsing onto one factor, mean shifts the MMD
    does not see, over-smoothed generated cells).
    The defaults are the published model's (``scsena.model.MODULE_PRESETS["reference"]``);
    :class:`~scsena.SENAVAE` passes its preset's values.

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
    assignment
        ``"mlp"``: the reference intervention encoder (:class:`InterventionEncoder`);
        ``"table"``: a free per-target logit table (:class:`InterventionTable`).
    one_to_one
        With ``assignment="table"`` and ``n_latent >= n_targets``: start target ``i``
        on factor ``i``.
    lambda_balance
        Weight of the balance penalty :func:`assignment_imbalance` on the mean
        assignment over all targets (0: off).
    lambda_mean
        Weight, relative to the MMD's, of the per-batch mean-shift term
        :func:`mean_shift_error` (0: off). Batches are perturbation-pure, so it
        matches each perturbation's mean response.
    prediction
        ``"direct"``: a perturbed cell is ``decode(u_int)`` (reference);
        ``"residual"``: the counterfactual of its control cell ``x``,
        ``max(x + decode(u_int) - decode(u), 0)`` (abduction of ``x``'s own deviation
        from the decoder, as in an additive-noise causal model), so generated cells
        keep the spread of real cells.
    member_weights
        Weights of the member genes in the gene-set layer (``"sena"`` only; the dense
        ``"original"`` layer has no members). ``"free"`` (reference): any sign, so a
        term's activity can go down when its members go up (:class:`MaskedLinear`);
        ``"nonnegative"``: a non-negative weighted mean of the members, with terms of
        identical members tied (:class:`MemberMeanLayer`; needs ``sena_lambda=0``).
    n_cats_per_covariate
        Number of categories of each categorical covariate (the batch first, as
        registered by ``setup_anndata(batch_key=..., categorical_covariate_keys=...)``).
        The decoder is conditioned on them as in scVI: their one-hot codes are
        concatenated to the input of both decoder layers. The encoder stays
        covariate-free, so pathway activities and latent factors are read the same way
        in every batch. Empty (default): no covariates, the published decoder.
    """

    def __init__(
        self,
        n_genes: int,
        n_targets: int,
        membership: sp.spmatrix | np.ndarray,
        n_latent: int,
        encoder: Literal["sena", "original"] = "sena",
        sena_lambda: float = 0.0,
        n_hidden: int = REFERENCE_MODULE["n_hidden"],
        mmd_sigma: float = REFERENCE_MODULE["mmd_sigma"],
        lambda_l1: float = REFERENCE_MODULE["lambda_l1"],
        kl_reference_scaling: bool = REFERENCE_MODULE["kl_reference_scaling"],
        assignment: Literal["mlp", "table"] = REFERENCE_MODULE["assignment"],
        one_to_one: bool = REFERENCE_MODULE["one_to_one"],
        lambda_balance: float = REFERENCE_MODULE["lambda_balance"],
        lambda_mean: float = REFERENCE_MODULE["lambda_mean"],
        prediction: Literal["direct", "residual"] = REFERENCE_MODULE["prediction"],
        member_weights: Literal["free", "nonnegative"] = REFERENCE_MODULE["member_weights"],
        n_cats_per_covariate: Sequence[int] = (),
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
        if prediction not in ("direct", "residual"):
            raise ValueError(f"prediction must be 'direct' or 'residual', got {prediction!r}.")
        for name, value in (("lambda_balance", lambda_balance), ("lambda_mean", lambda_mean)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 switches the term off), got {value}.")
        self.prediction = prediction
        self.lambda_balance = float(lambda_balance)
        self.lambda_mean = float(lambda_mean)
        self.fc1, self.activity_scale = _first_layer(
            membership, encoder, sena_lambda, member_weights
        )
        self.fc_mean = nn.Linear(n_terms, n_latent)
        self.fc_var = nn.Linear(n_terms, n_latent)
        if assignment == "mlp":
            self.intervention = InterventionEncoder(n_targets, n_latent, n_hidden)
        elif assignment == "table":
            self.intervention = InterventionTable(n_targets, n_latent, one_to_one=one_to_one)
        else:
            raise ValueError(f"assignment must be 'mlp' or 'table', got {assignment!r}.")
        self.causal = CausalLayer(n_latent)
        # not saved: derived from mmd_sigma; a buffer so it follows the module's device
        self.register_buffer(
            "mmd_bandwidths", torch.tensor(mmd_bandwidths(mmd_sigma)), persistent=False
        )
        self.n_cats_per_covariate = _category_counts(n_cats_per_covariate)
        n_cov = sum(self.n_cats_per_covariate)
        self.d1 = nn.Linear(n_latent + n_cov, n_hidden)
        self.d2 = nn.Linear(n_hidden + n_cov, n_genes)
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
        """Return ``(a, mu, var)``; the heads read ``LeakyReLU(activity_scale * a)``."""
        a = self.pathway_activity(x)
        h = F.leaky_relu(a * self.activity_scale if self.activity_scale != 1.0 else a, 0.2)
        return a, self.fc_mean(h), F.softplus(self.fc_var(h))

    def decode(self, u: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder ``LeakyReLU(Linear(LeakyReLU(Linear(u))))``.

        With covariates, their one-hot codes ``c`` are concatenated to the input of each
        layer: ``LeakyReLU(Linear([LeakyReLU(Linear([u, c])), c]))``.
        """
        c = self._one_hot(covariates, u)
        if c is None:
            return F.leaky_relu(self.d2(F.leaky_relu(self.d1(u), 0.2)), 0.2)
        h = F.leaky_relu(self.d1(torch.cat([u, c], dim=-1)), 0.2)
        return F.leaky_relu(self.d2(torch.cat([h, c], dim=-1)), 0.2)

    def _one_hot(self, covariates: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """One-hot codes of ``(n, k)`` covariate codes, concatenated; ``None`` without any."""
        if not self.n_cats_per_covariate:
            return None
        k = len(self.n_cats_per_covariate)
        if covariates is None or covariates.ndim != 2 or covariates.shape[1] != k:
            got = None if covariates is None else tuple(covariates.shape)
            raise ValueError(
                f"This model's decoder is conditioned on {k} categorical covariate(s) "
                f"(batch first); pass their codes as an (n, {k}) integer tensor, got {got}."
            )
        parts = [
            F.one_hot(covariates[:, j].long(), n).to(like.dtype)
            for j, n in enumerate(self.n_cats_per_covariate)
        ]
        return torch.cat(parts, dim=-1)

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
        z = mu if use_mean else self.sample_latent(mu, var, generator)
        return {"activity": a, "mu": mu, "var": var, "z": z}

    @staticmethod
    def sample_latent(
        mu: torch.Tensor, var: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z = mu + sqrt(var) * eps``, ``eps ~ N(0, I)`` drawn from ``generator``.

        The noise is drawn on the generator's device (else ``mu``'s) and moved to ``mu``'s.
        """
        device = mu.device if generator is None else generator.device
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=device)
        return mu + var.sqrt() * eps.to(mu.device)

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs
    ) -> dict:
        return {
            "z": inference_outputs["z"],
            "codes": tensors[TENSORS.CODES],
            "x": tensors[TENSORS.X_CONTROL],
            "covariates": tensors.get(TENSORS.COVARIATES),
        }

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        codes: torch.Tensor,
        temperature: float = 1.0,
        x: torch.Tensor | None = None,
        covariates: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Interventional prediction ``y_hat`` and observational reconstruction ``x_hat``.

        ``x`` (the control cells ``z`` was encoded from) is needed for
        ``prediction="residual"``; ``covariates`` (their categorical covariate codes)
        when the decoder is conditioned on covariates.
        """
        z_int, bc = self.intervene(z, codes, temperature)
        x_hat = self.decode(self.causal(z), covariates)
        y_hat = self._perturbed(self.decode(self.causal(z_int), covariates), x, x_hat)
        return {"y_hat": y_hat, "x_hat": x_hat, "bc": bc}

    def _perturbed(
        self, y_dec: torch.Tensor, x: torch.Tensor | None, x_hat: torch.Tensor | None
    ) -> torch.Tensor:
        """The perturbed cell from the decoded intervention (``prediction`` decides)."""
        if self.prediction == "direct":
            return y_dec
        if x is None:
            raise ValueError("prediction='residual' needs the control cells x.")
        return F.relu(x + y_dec - x_hat)

    def predict(
        self,
        z: torch.Tensor,
        codes: torch.Tensor,
        temperature: float = 1000.0,
        x: torch.Tensor | None = None,
        covariates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Perturbed cells from control cells' latents ``z``.

        ``x``: the control cells (``prediction="residual"``); ``covariates``: their
        covariate codes (a decoder conditioned on covariates).
        """
        z_int, _ = self.intervene(z, codes, temperature)
        y_dec = self.decode(self.causal(z_int), covariates)
        x_hat = self.decode(self.causal(z), covariates) if self.prediction == "residual" else None
        return self._perturbed(y_dec, x, x_hat)

    def loss_components(self) -> tuple[str, ...]:
        """Names of the loss components reported besides the total."""
        names = ("mmd", "mse", "kl", "l1")
        if self.lambda_mean > 0:
            names += ("mean_shift",)
        if self.lambda_balance > 0:
            names += ("balance",)
        return names

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        alpha: float = 1.0,
        beta: float = 1.0,
        temperature: float = 1.0,
    ) -> LossOutput:
        """Loss ``alpha * MMD(y_hat, y) + MSE(x_hat, x) + beta * KL + lambda_G * L1``.

        With ``lambda_mean > 0``, ``alpha * lambda_mean * mean_shift_error(y_hat, y)``
        is added; with ``lambda_balance > 0``, ``lambda_balance * imbalance`` of the
        assignment of all targets at ``temperature``.
        """
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
        if self.lambda_mean > 0:
            extra["mean_shift"] = mean_shift_error(generative_outputs["y_hat"], y)
            total = total + alpha * self.lambda_mean * extra["mean_shift"]
        if self.lambda_balance > 0:
            n_targets = self.intervention.shift.shape[0]
            index = torch.arange(n_targets, device=x.device)
            extra["balance"] = assignment_imbalance(
                self.intervention.assignment(index, temperature)
            )
            total = total + self.lambda_balance * extra["balance"]
        return LossOutput(loss=total, n_obs_minibatch=x.shape[0], extra_metrics=extra)


def _category_counts(n_cats_per_covariate: Sequence[int]) -> tuple[int, ...]:
    """Checked category counts of the covariates (each a positive integer)."""
    counts = tuple(int(n) for n in n_cats_per_covariate)
    if any(n < 1 for n in counts):
        raise ValueError(
            f"n_cats_per_covariate must hold positive category counts, got {list(counts)}."
        )
    return counts
