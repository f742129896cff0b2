"""Model presets: the published SENA-discrepancy-VAE and scsena's default.

``"reference"`` reproduces the published model and training exactly: an MLP
intervention encoder, decoded predictions, the loss ``alpha MMD + MSE + beta KL +
lambda_G L1`` and best-epoch selection. ``"scsena"`` (the default) keeps the method
(gene-set encoder, causal layer, schedules) and adds the remedies measured in
``docs/results.md``: a per-target assignment table started one-to-one, a balance
penalty, a per-batch mean-shift term, counterfactual (residual) predictions,
pathway activities that are non-negative weighted means of their members (so their
direction is that of the members), the last epoch's weights, and predictions
calibrated after training to each seen target's training mean shift (shrunk where the
data do not support it).
"""

from __future__ import annotations

from typing import Any

#: The published model's network (arguments of :class:`~scsena.module.SENAModule`, whose
#: signature defaults are these values).
REFERENCE_MODULE: dict[str, Any] = {
    "n_hidden": 128,
    "mmd_sigma": 200.0,
    "lambda_l1": 0.1,
    "kl_reference_scaling": True,
    "assignment": "mlp",
    "one_to_one": False,
    "lambda_balance": 0.0,
    "lambda_mean": 0.0,
    "prediction": "direct",
    "member_weights": "free",
}
#: The published training settings (arguments of :meth:`~scsena.SENAVAE.train`; the
#: schedule, learning-rate and selection defaults of :class:`~scsena.train.SENATrainingPlan`).
REFERENCE_TRAIN: dict[str, Any] = {
    "max_epochs": 100,
    "batch_size": 32,
    "lr": 1e-3,
    "alpha_max": 1.0,
    "beta_max": 1.0,
    "tau_max": 100.0,
    "select_best_epoch": True,
    "calibrate": False,
}

#: Network settings of each preset: the default differs from the reference only in
#: the remedies.
MODULE_PRESETS: dict[str, dict[str, Any]] = {
    "reference": REFERENCE_MODULE,
    "scsena": REFERENCE_MODULE
    | {
        "assignment": "table",
        "one_to_one": True,
        "lambda_balance": 1.0,
        "lambda_mean": 10.0,
        "prediction": "residual",
        "member_weights": "nonnegative",
    },
}

#: Training settings of each preset.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "reference": REFERENCE_TRAIN,
    "scsena": REFERENCE_TRAIN | {"select_best_epoch": False, "calibrate": True},
}

PRESETS = tuple(MODULE_PRESETS)


def check_preset(preset: str) -> str:
    """Return ``preset`` or raise a clear error naming the valid ones."""
    if preset not in MODULE_PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}.")
    return preset


def resolve(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The preset's ``defaults`` with every argument that is not ``None`` in ``given``."""
    return {k: (defaults[k] if given.get(k) is None else given[k]) for k in defaults}
