"""Latent factors and predicted cells of a trained SENAVAE."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import torch

from scsena.data import (
    KIND_CONTROL,
    SHOWN_CONTROL,
    display_labels,
    encode_labels,
)
from scsena.dataloaders import PerturbationDataSplitter

from ._calibration import CALIBRATION_CELLS, DEFAULT_SHRINKAGE, check_shrinkage, observed_shifts
from ._confidence import change_table


def _positive_int(value, name: str) -> int:
    """``value`` as an ``int`` when it is a positive integer; otherwise a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def inference_batch_size(batch_size: int | None) -> int:
    """Cells per forward pass: ``batch_size``, or ``scvi.settings.batch_size`` for ``None``."""
    if batch_size is None:
        import scvi

        return int(scvi.settings.batch_size)
    return _positive_int(batch_size, "batch_size")


def _check_temperature(temperature) -> None:
    ok = isinstance(temperature, (int, float, np.number)) and not isinstance(temperature, bool)
    if not ok or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"`temperature` must be a positive number (reference inference: 1000), got "
            f"{temperature!r}."
        )


def _control_positions(control_indices, parsed) -> np.ndarray:
    """Integer positions of control cells, checked: in range and labelled control."""
    idx = np.asarray(control_indices)
    n_obs = len(parsed.kind)
    if idx.ndim != 1 or len(idx) == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            "`control_indices` must be a non-empty list of integer positions of control "
            f"cells, got {np.asarray(control_indices).dtype} values of shape {idx.shape}; "
            "e.g. `np.flatnonzero(adata.obs[perturbation_key] == control_value)`."
        )
    out = idx[(idx < 0) | (idx >= n_obs)]
    if len(out):
        raise ValueError(
            f"`control_indices` out of range: {out[:5].tolist()}; the data has {n_obs} "
            f"cells (positions 0 to {n_obs - 1})."
        )
    not_control = idx[parsed.kind[idx] != KIND_CONTROL]
    if len(not_control):
        first = int(not_control[0])
        raise ValueError(
            f"`control_indices` must point at control cells; {len(not_control)} do not "
            f"(e.g. position {first}, labelled {parsed.labels.iloc[first]!r}). Pick them "
            "with `np.flatnonzero(adata.obs[perturbation_key] == control_value)`."
        )
    return idx.astype(np.int64)


class PredictionMixin:
    """Latent representation and perturbation predictions of :class:`~scsena.SENAVAE`."""

    def _flag_untrained(self, codes: np.ndarray) -> np.ndarray:
        """Per perturbation to predict: does it involve an untrained target? Warns if so."""
        untrained = set(getattr(self, "untrained_targets_", None) or [])
        flags = np.array(
            [any(self.targets_[j] in untrained for j in code if j >= 0) for code in codes],
            dtype=bool,
        )
        if flags.any():
            names = sorted({self.targets_[j] for code in codes for j in code if j >= 0} & untrained)
            warnings.warn(
                f"Predictions involving {names} rest on untrained parameters: these targets "
                "had fewer training cells than one batch. They are flagged in "
                "`obs['untrained_target']`.",
                UserWarning,
                stacklevel=3,
            )
        return flags

    def _encode(
        self,
        splitter: PerturbationDataSplitter,
        indices: np.ndarray,
        batch_size: int,
        sample: bool,
        seed: int,
    ) -> torch.Tensor:
        """Latent ``z`` of the given cells: the posterior mean, or a seeded sample.

        The sample's noise is drawn for all cells at once, so it does not depend on
        ``batch_size``.
        """
        self.module.eval()
        rows = splitter.iter_rows(indices, batch_size, self.device)
        parts = [self.module.encode(x)[1:] for x in rows]
        mu = torch.cat([p[0] for p in parts])
        if not sample:
            return mu
        var = torch.cat([p[1] for p in parts])
        return self.module.sample_latent(mu, var, torch.Generator().manual_seed(seed))

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Latent factors ``z`` of each cell (posterior mean, or a sample).

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's).
        indices
            Cells to use (default: all).
        give_mean
            Return the posterior mean ``mu``; otherwise a sample.
        batch_size
            Cells per forward pass (``None``: ``scvi.settings.batch_size``).
        seed
            Seed of the sample when ``give_mean=False``.

        Returns
        -------
        ``(n_cells, n_latent)`` array.
        """
        batch_size = inference_batch_size(batch_size)
        splitter = self.data_splitter(adata)
        idx = np.arange(splitter.adata.n_obs) if indices is None else np.asarray(indices)
        if len(idx) == 0:
            return np.zeros((0, self.n_latent))
        z = self._encode(splitter, idx, batch_size, sample=not give_mean, seed=seed)
        return z.cpu().numpy()

    def _encode_predicted(self, labels: Sequence[str]) -> np.ndarray:
        """Codes of the labels to predict; the control label encodes as "no target"."""
        control = {"", self.control_value_, SHOWN_CONTROL}
        is_control = np.fromiter((str(lab) in control for lab in labels), bool, len(labels))
        codes = np.full((len(labels), 2), -1, dtype=np.int64)
        if (~is_control).any():
            rest = [lab for lab, c in zip(labels, is_control) if not c]
            codes[~is_control] = encode_labels(rest, self.targets_, self.delimiter_)
        return codes

    @torch.inference_mode()
    def predict_perturbation(
        self,
        perturbations: str | Sequence[str],
        n_cells: int = 500,
        adata: ad.AnnData | None = None,
        control_indices: Sequence[int] | None = None,
        temperature: float = 1000.0,
        use_mean: bool = False,
        seed: int = 0,
        batch_size: int | None = None,
        batch: str | None = None,
        calibrated: bool = True,
        inplace: bool = False,
        key_added: str = "scsena_prediction",
    ) -> ad.AnnData:
        """Predict cells under single or double perturbations.

        Control cells are the starting states: ``n_cells`` of them are drawn (seeded)
        and pushed through the encoder, the intervention and the causal layer. Any
        single target seen in training, and any pair of them (seen together or not),
        can be predicted.

        Parameters
        ----------
        perturbations
            Labels such as ``"CBL"`` or ``"CBL,PTPN12"`` (targets joined by the
            delimiter given at setup). The control label (``control_value`` of setup,
            or ``""``) gives the model's control cells, with no intervention: the
            decoder's reconstruction with ``prediction="direct"``, the starting
            control cells themselves with ``"residual"`` (a counterfactual without a
            perturbation changes nothing).
        n_cells
            Cells predicted per perturbation.
        adata
            Registered AnnData providing control cells (default: the model's).
        control_indices
            Use these control cells (integer positions) instead of drawing.
        temperature
            Softmax temperature of the intervention assignment (reference inference:
            1000, a near-hard assignment).
        use_mean
            Start from the posterior mean of each control cell instead of a sample.
        seed
            Seed of the control draw and of the sampling noise.
        batch_size
            Cells per forward pass (``None``: ``scvi.settings.batch_size``).
        batch
            With a ``batch_key`` registered at setup: draw the starting control cells
            from this batch only, so the cells are predicted in that batch (``None``:
            from every batch, each cell decoded in its own batch).
        calibrated
            With a calibrated model (:meth:`calibrate_predictions`; the default preset
            calibrates after training), add each target's correction, so that a seen
            target's mean shift is the one its training cells support, and clip at 0.
            ``False``: the network's own prediction.
        inplace
            Also write the predicted mean expression of every perturbation into the
            data: ``adata.varm[key_added]`` (genes x perturbations DataFrame) and the
            settings into ``adata.uns[key_added]``.
        key_added
            Key of ``varm`` and ``uns`` written with ``inplace=True``.

        Returns
        -------
        AnnData of predicted log-normalised expression with the model's
        ``var_names``; ``obs["perturbation"]`` holds the label in the data's own
        convention (its delimiter; the targets of a double sorted: ``"B+A"`` is
        predicted as ``"A+B"``; the data's control value, ``"control"`` when that is
        ``""``), which every scsena method reads back, ``obs["control_cell"]``
        the starting control cell, ``obs["batch"]`` its batch (with a registered
        batch) and ``obs["untrained_target"]`` whether a target of the perturbation
        had too few training cells for one batch (its prediction rests on untrained
        parameters; a warning names them). ``uns["scsena_change"]`` says, per
        perturbation, whether its predicted change can be told from no change:
        ``change_l2`` (L2 norm of the predicted mean minus the starting cells' mean),
        ``noise_l2`` (the norm a difference of means shows with no change at all, for
        the perturbation's ``n_reference_cells`` training cells against the control
        cells), ``change_over_noise`` and ``detectable`` (above 1.5; also per cell in
        ``obs["change_detectable"]``). A prediction that is not detectable is, at the
        data's resolution, "no change". Concatenate it with real cells for scanpy
        plots.

        Raises
        ------
        ValueError
            For ``n_cells`` or ``batch_size`` that are not positive integers, a
            ``temperature`` that is not a positive number, ``control_indices`` out of
            range or not pointing at control cells, or a ``batch`` the data does not
            have (or has no control cells in); the message names the argument.
        """
        batch_size = inference_batch_size(batch_size)
        _check_temperature(temperature)
        if not self.is_trained_:
            warnings.warn(
                "The model is not trained: these predictions come from its initial weights. "
                "Call model.train() first (or load a trained model).",
                UserWarning,
                stacklevel=3,
            )
        splitter = self.data_splitter(adata)
        labels = [perturbations] if isinstance(perturbations, str) else list(perturbations)
        codes = self._encode_predicted(labels)
        start = self._starting_cells(splitter, n_cells, control_indices, batch, seed)
        untrained = self._flag_untrained(codes)
        correction = self._correction() if calibrated else None
        X = self._predicted_expression(
            splitter, start, codes, temperature, use_mean, seed, batch_size, correction
        )
        pred = self._prediction_anndata(splitter, X, start, codes, untrained)
        change = change_table(splitter, X, start, codes, self.targets_)
        per_code = np.asarray(pred.obs["perturbation"], dtype=object)[:: max(len(start), 1)]
        change.index = pd.Index(per_code[: len(change)], name="perturbation")
        pred.obs["change_detectable"] = np.repeat(change["detectable"].to_numpy(), len(start))
        # a label asked for twice ("B,A" and "A,B") is one perturbation
        pred.uns["scsena_change"] = change[~change.index.duplicated()]
        pred.uns["scsena_prediction"] = {
            "temperature": float(temperature),
            "use_mean": bool(use_mean),
            "seed": int(seed),
            "batch": "" if batch is None else str(batch),
            "calibrated": correction is not None,
        }
        if inplace:
            _write_prediction_means(splitter.adata, pred, key_added)
        return pred

    def _starting_cells(self, splitter, n_cells, control_indices, batch, seed) -> np.ndarray:
        """The control cells predictions start from: given, or drawn (from ``batch``)."""
        if control_indices is not None:
            if batch is not None:
                raise ValueError(
                    "Pass either `control_indices` or `batch`, not both: the given control "
                    "cells already fix the batch."
                )
            return _control_positions(control_indices, splitter.perturbations)
        n_cells = _positive_int(n_cells, "n_cells")
        control = splitter.control_indices()
        if batch is not None:
            code = _batch_code(splitter, batch)
            control = control[splitter.batches[control] == code]
        if len(control) == 0:
            where = "" if batch is None else f" of batch {batch!r}"
            raise ValueError(f"No control cells{where} in the data to start predictions from.")
        rng = np.random.default_rng(seed)
        return rng.choice(control, size=n_cells, replace=n_cells > len(control))

    def _predicted_expression(
        self, splitter, start, codes, temperature, use_mean, seed, batch_size, correction=None
    ) -> np.ndarray:
        """``(len(codes) * len(start), genes)`` predictions, one block per perturbation.

        ``correction`` (``targets x genes``): added per target of each perturbation,
        then clipped at 0.
        """
        n_cells = len(start)
        z = self._encode(splitter, start, batch_size, sample=not use_mean, seed=seed)
        # the control cells themselves, for counterfactual (residual) predictions
        x = (
            torch.cat(list(splitter.iter_rows(start, batch_size, self.device)))
            if self.module.prediction == "residual"
            else None
        )
        cov = splitter.covariates
        cov = None if cov is None else torch.as_tensor(cov[start], device=self.device)
        # one preallocated output: no per-batch lists, concatenation or cast copies
        X = np.empty((len(codes) * n_cells, splitter.adata.n_vars), dtype=np.float32)
        for i, code in enumerate(codes):
            c = torch.as_tensor(code, device=self.device).expand(n_cells, -1)
            for s in range(0, n_cells, batch_size):
                part = slice(s, s + batch_size)
                y = self.module.predict(
                    z[part],
                    c[part],
                    temperature,
                    x=None if x is None else x[part],
                    covariates=None if cov is None else cov[part],
                )
                rows = slice(i * n_cells + s, i * n_cells + min(s + batch_size, n_cells))
                X[rows] = y.cpu().numpy()
            if correction is not None and (code >= 0).any():
                block = X[i * n_cells : (i + 1) * n_cells]
                block += correction[code[code >= 0]].sum(axis=0)
                np.maximum(block, 0.0, out=block)
        return X

    def _correction(self) -> np.ndarray | None:
        """The stored per-target correction (``targets x genes``), or ``None``."""
        stored = getattr(self, "shift_calibration_", None)
        return None if stored is None else np.asarray(stored["correction"], dtype=np.float32)

    @torch.inference_mode()
    def calibrate_predictions(
        self,
        shrinkage: float = DEFAULT_SHRINKAGE,
        n_cells: int = CALIBRATION_CELLS,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Set each seen target's predicted mean shift to the one its training cells support.

        The model's mean predicted shift ``m_t`` of each target is measured on
        ``n_cells`` control cells; the training fold's observed shift ``s_t`` (the
        mean of the target's single-perturbation training cells minus the control
        cells' mean) is shrunk gene by gene towards 0 where its standard error ``se``
        does not support it: ``c_t = s_t max(0, 1 - shrinkage se^2 / s_t^2)``.
        :meth:`predict_perturbation` then adds ``c_t - m_t`` per target of a
        perturbation and clips at 0. A seen single target keeps the model's
        cell-to-cell variation around the calibrated mean; a target whose training
        cells show no change is predicted as no change; an unseen double gets the
        calibrated singles' sum plus the model's own interaction
        ``m_ab - m_a - m_b``. Targets without single-perturbation training cells are
        left as the model predicts them. The default preset calls this at the end of
        :meth:`train`; calling it again replaces the calibration.

        Parameters
        ----------
        shrinkage
            Garrote strength ``k`` (0: the training means as they are).
        n_cells
            Control cells the model's mean shift is measured on (drawn with ``seed``).
        seed
            Seed of the control draw and of the sampling noise.
        batch_size
            Cells per forward pass (``None``: ``scvi.settings.batch_size``).

        Returns
        -------
        Per target: ``n_cells`` (its single-perturbation training cells),
        ``observed_l2`` (norm of the shrunk observed shift ``c_t``), ``model_l2``
        (norm of ``m_t``) and ``correction_l2`` (norm of ``c_t - m_t``). The shifts
        ``c_t`` (``"shift"``) and corrections (``"correction"``), ``targets x genes``,
        are stored in ``shift_calibration_`` (saved with the model).
        """
        shrinkage = check_shrinkage(shrinkage)
        batch_size = inference_batch_size(batch_size)
        splitter = self.data_splitter()
        start = self._starting_cells(splitter, n_cells, None, None, seed)
        observed, n_obs = observed_shifts(splitter, list(self.targets_), shrinkage)
        model = np.zeros_like(observed)
        # control first, then the targets, encoded once per chunk of about 256 MB
        seen = np.flatnonzero(n_obs > 0)
        codes = np.full((len(seen) + 1, 2), -1, dtype=np.int64)
        codes[1:, 0] = seen
        n = len(start)
        chunk = max(2, (256 << 20) // max(n * splitter.adata.n_vars * 4, 1))
        control = None
        for c in range(0, len(codes), chunk):
            part = codes[c : c + chunk]
            pred = self._predicted_expression(
                splitter, start, part, 1000.0, False, seed, batch_size
            )
            means = pred.reshape(len(part), n, -1).mean(axis=1, dtype=np.float64)
            if control is None:
                control, means, part = means[0], means[1:], part[1:]
            model[part[:, 0]] = means - control
        correction = np.where(n_obs[:, None] > 0, observed - model, 0.0).astype(np.float32)
        self.shift_calibration_ = {
            "shift": observed.astype(np.float32),
            "correction": correction,
            "shrinkage": shrinkage,
            "n_cells": n_obs,
        }
        return pd.DataFrame(
            {
                "n_cells": n_obs,
                "observed_l2": np.linalg.norm(observed, axis=1),
                "model_l2": np.linalg.norm(model, axis=1),
                "correction_l2": np.linalg.norm(correction, axis=1),
            },
            index=pd.Index(list(self.targets_), name="target"),
        )

    def _prediction_anndata(self, splitter, X, start, codes, untrained) -> ad.AnnData:
        """The predicted cells as AnnData, labelled with canonical perturbation labels."""
        n_cells = len(start)
        # canonical labels: the targets of a double in sorted order ("B,A" is "A,B")
        canon = display_labels(
            [",".join(self.targets_[j] for j in code if j >= 0) for code in codes],
            self.control_value_,
            self.delimiter_,
        ).tolist()
        obs = pd.DataFrame(
            {
                "perturbation": pd.Categorical(
                    np.repeat(canon, n_cells), categories=list(dict.fromkeys(canon))
                ),
                "control_cell": np.tile(np.asarray(splitter.adata.obs_names[start]), len(codes)),
                "untrained_target": np.repeat(untrained, n_cells),
            }
        )
        if splitter.batches is not None:
            names = np.asarray(splitter.batch_categories, dtype=object)
            obs["batch"] = pd.Categorical(
                np.tile(names[splitter.batches[start]], len(codes)), categories=names
            )
        obs.index = [f"pred-{i}" for i in range(len(obs))]
        return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=splitter.adata.var_names.copy()))


def _batch_code(splitter, batch) -> int:
    """Code of a batch name, checked against the registered batches."""
    names = splitter.batch_categories
    if names is None:
        raise ValueError(
            "`batch` needs a batch registered at setup: "
            "`SENAVAE.setup_anndata(adata, ..., batch_key='<column>')`."
        )
    if str(batch) not in names:
        raise ValueError(f"Unknown batch {batch!r}; the data's batches: {names[:20]}.")
    return names.index(str(batch))


def _write_prediction_means(adata: ad.AnnData, pred: ad.AnnData, key: str) -> None:
    """Predicted mean expression per perturbation into ``adata.varm[key]`` (and ``uns``)."""
    if key in adata.uns and not (
        isinstance(adata.uns[key], dict) and adata.uns[key].get("written_by") == "scsena"
    ):
        raise ValueError(
            f"adata.uns[{key!r}] exists and was not written by scsena; pass another `key_added`."
        )
    groups = pred.obs["perturbation"]
    means = {
        str(label): np.asarray(pred.X[(groups == label).to_numpy()].mean(axis=0)).ravel()
        for label in groups.cat.categories
    }
    adata.varm[key] = pd.DataFrame(means, index=adata.var_names)
    adata.uns[key] = {**pred.uns["scsena_prediction"], "written_by": "scsena"}
