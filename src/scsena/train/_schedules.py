"""Per-epoch annealing schedules of SENA-discrepancy-VAE."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedules:
    """The alpha (MMD weight), beta (KL weight) and tau (temperature) schedules.

    Parameters
    ----------
    n_epochs
        Number of training epochs ``E``.
    alpha_max
        Final MMD weight (SENA 1, discrepancy-VAE 10).
    beta_max
        Final KL weight (SENA 1, discrepancy-VAE 2).
    tau_max
        Final softmax temperature (SENA 100, discrepancy-VAE 5).
    """

    n_epochs: int
    alpha_max: float = 1.0
    beta_max: float = 1.0
    tau_max: float = 100.0

    def beta(self) -> np.ndarray:
        """0 for epochs 0-9, then ``linspace(0, beta_max, E - 10)``."""
        out = np.zeros(self.n_epochs)
        if self.n_epochs > 10:
            out[10:] = np.linspace(0.0, self.beta_max, self.n_epochs - 10)
        return out

    def alpha(self) -> np.ndarray:
        """0 for epochs 0-4, then ``linspace(0, alpha_max, E//2 - 5)``, then ``alpha_max``."""
        out = np.zeros(self.n_epochs)
        half = self.n_epochs // 2
        if half > 5:
            out[5:half] = np.linspace(0.0, self.alpha_max, half - 5)
        out[max(half, 5) :] = self.alpha_max
        return out

    def tau(self) -> np.ndarray:
        """1 for epochs 0-4, then ``linspace(1, tau_max, E - 5)``."""
        out = np.ones(self.n_epochs)
        if self.n_epochs > 5:
            out[5:] = np.linspace(1.0, self.tau_max, self.n_epochs - 5)
        return out

    def at(self, epoch: int) -> tuple[float, float, float]:
        """``(alpha, beta, tau)`` at ``epoch`` (clamped to the last epoch)."""
        e = min(max(int(epoch), 0), self.n_epochs - 1)
        return float(self.alpha()[e]), float(self.beta()[e]), float(self.tau()[e])
