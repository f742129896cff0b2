"""PerturbationDataSplitter: the one place that reads a registered AnnData for SENAVAE."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scvi.data import AnnDataManager

from scsena._constants import ADATA_KEYS, FOLD_CONTROL, FOLD_TEST, FOLD_TRAIN, REGISTRY_KEYS
from scsena.data import ParsedPerturbations, parse_perturbations, rna_modality
from scsena.train import (
    PairedPerturbationDataset,
    PerturbationDataModule,
    dense_rows,
    draw_control_partners,
)

from ._folds import assign_folds


class PerturbationDataSplitter:
    """Folds, control partners, datasets and loaders of one registered AnnData.

    The role of scvi-tools' ``DataSplitter`` for SENA's paired batches: every cell's
    perturbation label is parsed once, every cell gets a fold (``train``, ``test``,
    ``double``, ``control`` or ``excluded``), the cells of a fold are paired with
    control cells drawn with a seed, and the training data module serves
    perturbation-pure batches of those pairs. :class:`~scsena.SENAVAE` reads its data
    only through it (:meth:`~scsena.SENAVAE.data_splitter`).

    Parameters
    ----------
    adata_manager
        The :class:`~scvi.data.AnnDataManager` of a registered AnnData.
    targets
        The model's single targets (codes index into it).
    control_value, delimiter
        Label conventions given at setup.
    heldout
        Held-out single targets (``test_fraction`` of each one's cells are tested).
    test_fraction
        Share of each held-out target's cells in the test fold, used when the data
        has no fold column (``obs["scsena_fold"]``, written when the model is built).
    seed
        Seed of the folds.
    dtype
        Floating-point type of the tensors served.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        targets: Sequence[str],
        control_value: str = "",
        delimiter: str = ",",
        heldout: Sequence[str] = (),
        test_fraction: float = 0.2,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        self.adata_manager = adata_manager
        #: the AnnData read (the RNA modality of a MuData registered with setup_mudata)
        self.adata = rna_modality(
            adata_manager.adata, adata_manager.registry["setup_args"].get("rna_mod")
        )
        self.targets = list(targets)
        self.control_value = control_value
        self.delimiter = delimiter
        self.heldout = list(heldout)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.dtype = dtype

    @cached_property
    def perturbations(self) -> ParsedPerturbations:
        """Every cell's parsed label: canonical ``labels``, ``kind`` and target ``codes``."""
        labels = self.adata_manager.get_from_registry(REGISTRY_KEYS.PERTURBATION_KEY)
        return parse_perturbations(
            pd.Series(np.asarray(labels).ravel(), index=self.adata.obs_names),
            self.control_value,
            self.delimiter,
            targets=self.targets,
        )

    @property
    def expression(self):
        """The registered expression matrix (``adata.X`` or the layer given at setup)."""
        return self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)

    @cached_property
    def folds(self) -> np.ndarray:
        """Every cell's fold: ``obs["scsena_fold"]``, else assigned with ``test_fraction``."""
        obs = self.adata.obs
        if ADATA_KEYS.FOLD in obs:
            return np.asarray(obs[ADATA_KEYS.FOLD].astype(str))
        folds = assign_folds(self.perturbations, self.heldout, self.test_fraction, self.seed)
        return np.asarray(folds.astype(str))

    def control_indices(self) -> np.ndarray:
        """Positions of the control cells (the starting states)."""
        return np.flatnonzero(self.folds == FOLD_CONTROL)

    def _registered(self, key: str) -> bool:
        return key in self.adata_manager.data_registry

    @cached_property
    def batches(self) -> np.ndarray | None:
        """Every cell's batch code (``setup_anndata(batch_key=...)``); ``None`` without."""
        if not self._registered(REGISTRY_KEYS.BATCH_KEY):
            return None
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
        return np.asarray(codes).ravel().astype(np.int64)

    @property
    def batch_categories(self) -> list[str] | None:
        """The batch names, in code order; ``None`` without a registered batch."""
        if not self._registered(REGISTRY_KEYS.BATCH_KEY):
            return None
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
        return [str(c) for c in state.categorical_mapping]

    @cached_property
    def covariates(self) -> np.ndarray | None:
        """Every cell's categorical covariate codes, batch first: ``(n_cells, k)``.

        ``None`` when neither a batch nor categorical covariates were registered.
        """
        parts = []
        if self.batches is not None:
            parts.append(self.batches[:, None])
        if self._registered(REGISTRY_KEYS.CAT_COVS_KEY):
            codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.CAT_COVS_KEY)
            parts.append(np.asarray(codes).astype(np.int64).reshape(self.adata.n_obs, -1))
        return np.concatenate(parts, axis=1) if parts else None

    def _partners(self, cells: np.ndarray, control: np.ndarray, seed: int) -> np.ndarray:
        """One control partner per cell; with a batch, from the cell's own batch."""
        if self.batches is None:
            return draw_control_partners(len(cells), control, seed)
        batches, names = self.batches, self.batch_categories
        missing = np.setdiff1d(batches[cells], batches[control])
        if len(missing):
            name = names[int(missing[0])]
            n = int((batches[cells] == missing[0]).sum())
            raise ValueError(
                f"Batch {name!r} has {n} perturbed cells but no control cell: each perturbed "
                "cell is paired with a control cell of its own batch. Remove that batch's "
                "cells, or merge it with another batch in the batch column, then set up again."
            )
        return draw_control_partners(
            len(cells), control, seed, groups=batches[cells], control_groups=batches[control]
        )

    def fold_dataset(self, folds: Sequence[str], seed: int) -> PairedPerturbationDataset:
        """The cells of ``folds``, each paired with a control cell drawn with ``seed``.

        With a registered batch, the partner comes from the cell's own batch, and the
        dataset serves the partner's covariate codes (its batch, then the categorical
        covariates) for the decoder.
        """
        return self.cells_dataset(np.flatnonzero(np.isin(self.folds, list(folds))), seed)

    def cells_dataset(self, cells: np.ndarray, seed: int) -> PairedPerturbationDataset:
        """The given cells, each paired with a control cell drawn with ``seed``."""
        control = self.control_indices()
        if len(control) == 0:
            raise ValueError("No control cells in the data: they are the starting states.")
        partners = self._partners(cells, control, seed)
        codes = self.perturbations.codes[cells]
        covariates = None if self.covariates is None else self.covariates[partners]
        return PairedPerturbationDataset(
            self.expression, cells, partners, codes, self.dtype, covariates=covariates
        )

    def validation_cells(self, validation_size: float, seed: int) -> np.ndarray:
        """Training-fold cells held out for validation.

        ``validation_size`` of each perturbation's cells (rounded; a perturbation keeps
        at least one training cell), drawn with ``seed``.
        """
        train = np.flatnonzero(self.folds == FOLD_TRAIN)
        labels = self.perturbations.labels.to_numpy(dtype=object)[train]
        rng = np.random.default_rng([int(seed), 1])
        out = []
        for label in sorted(set(labels)):
            cells = train[labels == label]
            n = min(int(round(validation_size * len(cells))), len(cells) - 1)
            if n > 0:
                out.append(rng.choice(cells, n, replace=False))
        return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)

    def data_module(
        self,
        batch_size: int,
        seed: int,
        validate_on_test: bool = False,
        num_workers: int = 0,
        data_on_device: bool | Literal["auto"] = "auto",
        validation_size: float | None = None,
    ) -> PerturbationDataModule:
        """Training data module: train-fold pairs, and pairs to validate on.

        Validation: the test fold (``validate_on_test``), or ``validation_size`` of the
        training fold's cells of each perturbation, held out of training
        (:meth:`validation_cells`). Training pairs are drawn with ``seed``, validation
        pairs with ``seed + 1``.
        """
        train = np.flatnonzero(self.folds == FOLD_TRAIN)
        val_ds = None
        if validation_size:
            held = self.validation_cells(validation_size, seed)
            train = np.setdiff1d(train, held)
            val_ds = self.cells_dataset(held, seed + 1) if len(held) else None
        elif validate_on_test:
            val_ds = self.fold_dataset([FOLD_TEST], seed + 1)
        train_ds = self.cells_dataset(train, seed)
        if len(train_ds) == 0:
            raise ValueError("No training cells: the data has no single-perturbation cells.")
        return PerturbationDataModule(
            train_ds,
            batch_size=batch_size,
            seed=seed,
            val_dataset=val_ds,
            num_workers=num_workers,
            data_on_device=data_on_device,
        )

    def group_means(
        self,
        indices: np.ndarray,
        labels: Sequence[str],
        groups: Sequence[str],
        batch_size: int = 4096,
    ) -> np.ndarray:
        """``groups x genes`` mean expression of the cells ``indices`` labelled by group.

        Rows are read in batches (dense, sparse or backed data alike), never all at once.

        Parameters
        ----------
        indices
            Cell positions.
        labels
            Label of each of those cells.
        groups
            The labels to average; each needs at least one cell.
        batch_size
            Cells read at once.
        """
        counts, sums, _ = self._group_sums(indices, labels, groups, batch_size, squares=False)
        return sums / counts[:, None]

    def group_moments(
        self,
        indices: np.ndarray,
        labels: Sequence[str],
        groups: Sequence[str],
        batch_size: int = 4096,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per group: cell counts, ``groups x genes`` means and unbiased variances.

        Read as :meth:`group_means` reads (in batches); a group of one cell has
        variance 0.
        """
        counts, sums, squares = self._group_sums(indices, labels, groups, batch_size, squares=True)
        n = counts[:, None].astype(np.float64)
        means = sums / n
        var = np.maximum(squares / n - means * means, 0.0) * n / np.maximum(n - 1, 1)
        return counts, means, var

    def _group_sums(self, indices, labels, groups, batch_size: int, squares: bool):
        """Counts, sums (and sums of squares) of the cells ``indices`` per group."""
        labels = np.asarray(labels, dtype=object)
        code = pd.Index(list(groups)).get_indexer(labels)
        counts = np.bincount(code[code >= 0], minlength=len(groups))
        empty = [g for g, n in zip(groups, counts) if n == 0]
        if empty:
            raise ValueError(f"No cells with label(s) {empty}.")
        sums = np.zeros((len(groups), self.adata.n_vars))
        sq = np.zeros_like(sums) if squares else None
        indices = np.asarray(indices)
        for start in range(0, len(indices), batch_size):
            rows = dense_rows(self.expression, indices[start : start + batch_size])
            part = code[start : start + batch_size]
            keep = part >= 0
            rows = rows[keep].astype(np.float64)
            np.add.at(sums, part[keep], rows)
            if sq is not None:
                np.add.at(sq, part[keep], rows * rows)
        return counts, sums, sq

    def iter_rows(
        self, indices: np.ndarray, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[torch.Tensor]:
        """Expression rows of ``indices`` in batches, as tensors on ``device``."""
        matrix = self.expression
        for start in range(0, len(indices), batch_size):
            rows = dense_rows(matrix, indices[start : start + batch_size])
            yield torch.as_tensor(rows, dtype=self.dtype, device=device)
