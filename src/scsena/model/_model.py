"""SENAVAE: SENA-discrepancy-VAE as an scvi-tools model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from scsena._constants import (
    ADATA_KEYS,
    REGISTRY_KEYS,
)
from scsena._presets import MODULE_PRESETS, TRAIN_PRESETS, check_preset, resolve
from scsena.data import (
    KIND_CONTROL,
    GeneSetMaskField,
    PerturbationField,
    check_known_categories,
    covariate_category_counts,
    covariate_fields,
    mask_from_state,
    mudata_fields,
    rna_modality,
    targets_from_state,
)
from scsena.dataloaders import PerturbationDataSplitter, assign_folds, resolve_heldout
from scsena.module import MemberMeanLayer, SENAModule
from scsena.train import (
    SENATrainingPlan,
)

from ._interpretation import InterpretationMixin
from ._persistence import SaveLoadMixin
from ._prediction import PredictionMixin
from ._setup import check_gene_order, prepare_expression
from ._training import TrainingMixin

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: The reference (SENA paper) settings of ``SENAVAE.train``.
REFERENCE_TRAIN_KWARGS = dict(TRAIN_PRESETS["reference"])


class SENAVAE(
    InterpretationMixin, PredictionMixin, TrainingMixin, SaveLoadMixin, BaseModelClass
):
    """SENA-discrepancy-VAE: causal, pathway-interpretable perturbation-response model.

    The first encoder layer maps genes to biological-process (GO BP) activities
    through a gene-set mask; latent factors are linear combinations of BP
    activities; perturbations shift latent factors through a soft assignment and
    propagate over a learned DAG; a decoder returns expression. Trained on control
    and single-perturbation cells, it predicts unseen combinations of two targets.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Number of latent factors; ``None`` uses the number of single targets (the
        reference).
    preset
        ``"scsena"`` (default): the method with scsena's remedies, in which every
        target keeps its own latent factor and predictions beat the control
        baseline (see ``docs/results.md``): ``assignment="table"``,
        ``lambda_balance=1``, ``lambda_mean=10``, ``prediction="residual"``,
        ``member_weights="nonnegative"``.
        ``"reference"``: the published SENA-discrepancy-VAE exactly
        (``assignment="mlp"``, no extra terms, ``prediction="direct"``,
        ``member_weights="free"``). Every
        argument below left at ``None`` takes the preset's value; :meth:`train`'s
        defaults follow the preset too.
    encoder
        ``"sena"`` (gene-set masked first layer) or ``"original"`` (a dense layer of
        the same width, the discrepancy-VAE ablation).
    sena_lambda
        Mask value outside gene sets (reference 0).
    n_hidden
        Width of the decoder and intervention-encoder hidden layers (128).
    mmd_sigma
        MMD kernel scale (SENA 200; discrepancy-VAE 1000).
    lambda_l1
        Weight of the DAG's L1 penalty (SENA 0.1; discrepancy-VAE 1e-3).
    kl_reference_scaling
        Divide the KL once more by the batch size, as the reference does.
    assignment
        ``"mlp"`` (the reference intervention encoder) or ``"table"`` (a free
        per-target logit table; no part shared by all targets).
    one_to_one
        With ``assignment="table"`` and ``n_latent >= n_targets``, start target ``i``
        on factor ``i``.
    lambda_balance
        Weight of the penalty on an uneven use of factors by the targets (0: off).
    lambda_mean
        Weight (relative to the MMD) of the per-batch mean-shift term (0: off).
    prediction
        ``"direct"``: a perturbed cell is the decoder's output (reference);
        ``"residual"``: the counterfactual of its control cell,
        ``x + decode(u_int) - decode(u)`` (clipped at 0), which keeps real cells'
        spread.
    member_weights
        Weights of the member genes in the gene-set layer. ``"nonnegative"`` (default
        preset): each pathway activity is a non-negative weighted mean of its member
        genes, so its direction is that of its members by construction, and terms
        with identical measured members share their weights (identical activities).
        ``"free"`` (reference): weights of any sign, oriented after training by
        :meth:`get_term_orientation`. Needs ``sena_lambda=0`` when non-negative.
    dtype
        ``"float32"`` (default) or ``"float64"`` (the reference's precision).
    heldout
        Single targets whose cells are split between training and the test fold
        (``test_fraction`` of each one's cells are tested):

        - ``"auto"``: the data set's reference list when it has one (the Norman 2019
          loader records it), else the Norman 2019 list where it overlaps the targets,
          else 10% of the targets (at least one) drawn with ``seed``, e.g. 2 random
          targets of a 25-target screen;
        - ``"all"``: every single target (test cells of every target);
        - an ``int``: that many targets drawn with ``seed``;
        - a list of target names; ``None``: no test fold.

        ``heldout_`` lists the resolved targets (sorted ``str``).
    test_fraction
        Share of each held-out perturbation's cells in the test fold (0.2).
    seed
        Seed of parameter initialisation, folds and control partners.
    registry
        Only when loading without data: the saved registry.

    Examples
    --------
    >>> adata = scsena.datasets.simulate_perturbseq()
    >>> scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    >>> model = scsena.SENAVAE(adata)
    >>> model.train(max_epochs=20)
    >>> pred = model.predict_perturbation(["A", "A,B"], n_cells=200)
    """

    _module_cls = SENAModule
    _training_plan_cls = SENATrainingPlan
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        adata: ad.AnnData | None = None,
        n_latent: int | None = None,
        preset: Literal["scsena", "reference"] = "scsena",
        encoder: Literal["sena", "original"] = "sena",
        sena_lambda: float = 0.0,
        n_hidden: int | None = None,
        mmd_sigma: float | None = None,
        lambda_l1: float | None = None,
        kl_reference_scaling: bool | None = None,
        assignment: Literal["mlp", "table"] | None = None,
        one_to_one: bool | None = None,
        lambda_balance: float | None = None,
        lambda_mean: float | None = None,
        prediction: Literal["direct", "residual"] | None = None,
        member_weights: Literal["free", "nonnegative"] | None = None,
        dtype: Literal["float32", "float64"] = "float32",
        heldout: str | int | Sequence[str] | None = "auto",
        test_fraction: float = 0.2,
        seed: int = 0,
        registry: dict | None = None,
    ):
        super().__init__(adata, registry=registry)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
        mask = self._read_registry()
        self.term_orientation_ = None  # per-term signs of the oriented activities
        self.seed_ = int(seed)
        self._test_fraction = float(test_fraction)
        self._dtype = _DTYPES[dtype]
        n_latent = len(self.targets_) if n_latent is None else int(n_latent)
        if n_latent < 1:
            raise ValueError(f"n_latent must be >= 1, got {n_latent}.")
        self.preset_ = check_preset(preset)
        network = resolve(
            MODULE_PRESETS[preset],
            {
                "n_hidden": n_hidden,
                "mmd_sigma": mmd_sigma,
                "lambda_l1": lambda_l1,
                "kl_reference_scaling": kl_reference_scaling,
                "assignment": assignment,
                "one_to_one": one_to_one,
                "lambda_balance": lambda_balance,
                "lambda_mean": lambda_mean,
                "prediction": prediction,
                "member_weights": member_weights,
            },
        )
        network.update(encoder=encoder, sena_lambda=sena_lambda, n_latent=n_latent)
        self.module = self._build_module(mask, network, seed)
        self.heldout_: list[str] = []
        if adata is not None:
            rna = rna_modality(adata, self.registry_["setup_args"].get("rna_mod"))
            self.heldout_ = self._write_folds(rna, heldout, test_fraction, seed)
            self._center_activities()
        # one short line per topic: printed in a notebook, a single long line wraps anywhere
        self._model_summary_string = "\n".join(
            [
                f"SENAVAE: preset={preset}, encoder={encoder}, lambda={sena_lambda}, "
                f"dtype={dtype}",
                f"  {mask.n_genes} genes, {mask.n_terms} gene sets"
                + (f" ({mask.n_dropped} more dropped by min_genes)" if mask.n_dropped else ""),
                f"  {len(self.targets_)} targets, {n_latent} latent factors",
                f"  held out: {', '.join(self.heldout_) or 'none'}",
            ]
        )
        self.init_params_ = self._get_init_params(locals())

    def _center_activities(self) -> None:
        """Non-negative member weights: zero activity at the control cells' mean profile.

        Only the biases move, so no difference of activities (differential activity,
        its evidence) changes; the encoder starts from activities centred on control
        (measured: better predictions of unseen doubles than uncentred activities).
        """
        layer = self.module.fc1
        if not isinstance(layer, MemberMeanLayer):
            return
        splitter = self._splitter(self.adata_manager)
        control = np.flatnonzero(splitter.perturbations.kind == KIND_CONTROL)
        if control.size == 0:
            return
        mean = splitter.group_means(control, np.full(control.size, "", dtype=object), [""])[0]
        layer.center(torch.as_tensor(mean))

    def _read_registry(self):
        """Targets, label conventions and terms from the registry; returns the mask."""
        fields = self.registry_["field_registries"]
        pert_state = fields[REGISTRY_KEYS.PERTURBATION_KEY]["state_registry"]
        mask = mask_from_state(fields[REGISTRY_KEYS.MASK_KEY]["state_registry"])
        self.targets_ = targets_from_state(pert_state)
        self.control_value_ = str(pert_state["control_value"])
        self.delimiter_ = str(pert_state["delimiter"])
        self.term_ids_ = list(mask.terms)
        self.term_names_ = list(mask.term_names)
        return mask

    def _build_module(self, mask, network: dict, seed: int) -> SENAModule:
        """The network, initialised from ``seed`` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SENAModule(
                n_genes=mask.n_genes,
                n_targets=len(self.targets_),
                membership=mask.membership,
                n_cats_per_covariate=covariate_category_counts(self.registry_),
                **network,
            ).to(self._dtype)

    def _write_folds(self, adata, heldout, test_fraction: float, seed: int) -> list[str]:
        """Resolve the held-out targets and write every cell's fold into ``obs``."""
        dataset_info = adata.uns.get(ADATA_KEYS.DATASET, {})
        dataset_heldout = (
            list(np.asarray(dataset_info.get("heldout", [])).tolist())
            if isinstance(dataset_info, Mapping)
            else None
        )
        resolved = resolve_heldout(heldout, self.targets_, seed, dataset_heldout or None)
        splitter = self._splitter(self.adata_manager)
        folds = assign_folds(splitter.perturbations, resolved, test_fraction, seed)
        # a subset of the data keeps scsena's column with unused categories dropped
        if ADATA_KEYS.FOLD in adata.obs and not (
            isinstance(adata.obs[ADATA_KEYS.FOLD].dtype, pd.CategoricalDtype)
            and set(adata.obs[ADATA_KEYS.FOLD].cat.categories) <= set(folds.categories)
        ):
            raise ValueError(
                f"adata.obs[{ADATA_KEYS.FOLD!r}] exists and was not written by scsena; "
                "rename that column first."
            )
        adata.obs[ADATA_KEYS.FOLD] = folds
        return resolved

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        perturbation_key: str = "guide_ids",
        control_value: str = "",
        delimiter: str = ",",
        layer: str | None = None,
        gene_sets: str | Path | pd.DataFrame | Mapping | None = "go_bp_sena",
        min_genes: int = 5,
        mask_key: str = ADATA_KEYS.MASK,
        keep_terms: Sequence[str] | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        allow_large_values: bool = False,
        **kwargs,
    ) -> None:
        """Register the expression, the perturbation column and the gene-set mask.

        Parameters
        ----------
        adata
            Cells x genes AnnData with log-normalised expression.
        perturbation_key
            Column of ``adata.obs`` with perturbation labels (``"guide_ids"`` in CPA's
            Norman file, ``"perturbation_name"`` in pertpy's).
        control_value
            Label of control cells (``""``, ``"control"``, ``"NT"`` ...).
        delimiter
            Separator of the two targets of a double (``","``, ``"+"``, ``"_"``).
        layer
            Layer with log-normalised expression; ``None`` uses ``adata.X``.
        gene_sets
            ``"go_bp_sena"`` (SENA's 1,424 GO BP terms, bundled), ``"go_bp"`` (all GO
            BP terms), a GMT path, a long DataFrame (``source``/``target``) or a dict
            of lists; gene identifiers must match ``var_names`` (bundled GO sets use
            Ensembl IDs: pass symbols through :func:`scsena.gene_sets.map_gene_sets`
            or ``scsena.gene_sets.go_bp(id_type="symbol")``). With gene-symbol
            ``var_names``, outdated symbols (``MARCH8``) are matched through their
            current symbol (``MARCHF8``) and ambiguous ones are named in a warning
            (see :func:`scsena.gene_sets.build_mask`). ``None`` reuses the mask
            already in ``adata.uns[mask_key]``. On a targeted panel of a few hundred
            genes, SENA's terms may be too few: ``"go_bp"`` keeps many more.
        min_genes
            Keep gene sets with at least this many genes among ``var_names``; the
            dropped ones are listed by :func:`scsena.gene_sets.dropped_terms`.
        mask_key
            Key of ``adata.uns`` where the mask is stored.
        keep_terms
            Term ids kept whatever their size among ``var_names`` (at least one gene),
            e.g. ``["GO:0060333"]``.
        batch_key
            Column of ``adata.obs`` with each cell's batch (lane, gem group, donor,
            replicate). As in scVI, the decoder is conditioned on the batch; in
            addition each perturbed cell is paired with a control cell of its own batch
            (every batch needs control cells), and predictions start from control cells
            of a batch of your choice (``predict_perturbation(batch=...)``). The
            encoder, hence pathway activities and latent factors, stays batch-free.
        categorical_covariate_keys
            Further categorical columns of ``adata.obs`` the decoder is conditioned on
            (e.g. a cell-cycle phase); predictions keep each starting control cell's
            values.
        allow_large_values
            Accept values above 50, far beyond log-normalised expression (log1p of
            counts per million stays below 14). Without it such data (counts, CPM or
            TPM never log-transformed) are refused: training on them diverges.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        mask_args = (gene_sets, min_genes, mask_key, keep_terms)
        args = setup_method_args["setup_args"]
        prepare_expression(adata, layer, where, allow_large_values, args, mask_args, kwargs)
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            PerturbationField(perturbation_key, control_value, delimiter),
            GeneSetMaskField(mask_key),
            *covariate_fields(adata, batch_key, categorical_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_mudata(
        cls,
        mdata,
        rna_mod: str = "rna",
        perturbation_mod_or_key: str = "guide_ids",
        layer: str | None = None,
        control_value: str = "",
        delimiter: str = ",",
        guide_target_key: str | None = None,
        gene_sets: str | Path | pd.DataFrame | Mapping | None = "go_bp_sena",
        min_genes: int = 5,
        mask_key: str = ADATA_KEYS.MASK,
        keep_terms: Sequence[str] | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        allow_large_values: bool = False,
        **kwargs,
    ) -> None:
        """Register a :class:`~mudata.MuData`: an RNA modality and the perturbations.

        The perturbations come from a column (of the RNA modality's ``obs`` or of
        ``mdata.obs``) or from a guide modality (cells x guides counts; every guide
        with a count is assigned, non-targeting guides mark controls). As scvi-tools'
        MuData models, the fields are registered on the MuData (each reads its
        modality); the model is then built with ``SENAVAE(mdata)``, reads the RNA
        modality and writes its results (folds, activities) there. Labels derived from
        a guide modality are kept in the RNA modality's private column
        ``obs["_scsena_guide_labels"]``.

        Parameters
        ----------
        mdata
            MuData with an RNA modality of log-normalised expression.
        rna_mod
            Name of the RNA modality.
        perturbation_mod_or_key
            A guide modality name, or a column holding perturbation labels.
        layer
            Layer of the RNA modality to use (``None``: its ``X``).
        control_value, delimiter
            Label conventions of a label column (ignored for a guide modality).
        guide_target_key
            Column of the guide modality's ``var`` with each guide's target
            (``None``: guide names are target names).
        gene_sets, min_genes, mask_key, keep_terms, batch_key, categorical_covariate_keys
            As in :meth:`setup_anndata` (columns and ``uns`` of the RNA modality).
        allow_large_values, **kwargs
            As in :meth:`setup_anndata`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if rna_mod not in mdata.mod:
            raise KeyError(
                f"No modality {rna_mod!r} in the MuData; modalities: {list(mdata.mod)}. "
                "Pass the RNA modality as `rna_mod`."
            )
        where = f"mdata[{rna_mod!r}]." + ("X" if layer is None else f"layers[{layer!r}]")
        mask_args = (gene_sets, min_genes, mask_key, keep_terms)
        args = setup_method_args["setup_args"]
        prepare_expression(
            mdata.mod[rna_mod], layer, where, allow_large_values, args, mask_args, kwargs
        )
        fields = mudata_fields(
            mdata,
            rna_mod,
            perturbation_mod_or_key,
            control_value=control_value,
            delimiter=delimiter,
            guide_target_key=guide_target_key,
            layer=layer,
            mask_key=mask_key,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
        )
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    # --------------------------------------------------------------- helpers
    @property
    def n_latent(self) -> int:
        """Number of latent factors."""
        return self.module.n_latent

    def _model_var_names(self) -> list[str]:
        """The model's genes, in the order of its input layer (kept in the registry)."""
        fields = self.registry_["field_registries"]
        mask = fields[REGISTRY_KEYS.MASK_KEY]["state_registry"]["mask"]
        return [str(g) for g in np.asarray(mask["var_names"]).tolist()]

    @property
    def var_names(self) -> pd.Index:
        """The model's genes, in the order of its input layer; data must match them."""
        return pd.Index(self._model_var_names())

    def _validate_anndata(self, adata: ad.AnnData | None = None, copy_if_view: bool = True):
        """scvi-tools' check, plus: the model's genes in its order, and known batches."""
        rna_mod = self.registry_["setup_args"].get("rna_mod")
        if adata is not None:
            check_known_categories(rna_modality(adata, rna_mod), self.registry_)
        adata = super()._validate_anndata(adata, copy_if_view=copy_if_view)
        check_gene_order(rna_modality(adata, rna_mod).var_names, self._model_var_names())
        return adata

    @property
    def test_fraction(self) -> float:
        """Share of each held-out target's cells in the test fold (given at construction)."""
        return self._test_fraction

    def view_anndata_setup(
        self, adata: ad.AnnData | None = None, hide_state_registries: bool = False
    ) -> None:
        """Print the data registration (scvi-tools' view of the registered fields).

        Parameters
        ----------
        adata
            Registered AnnData (default: the model's).
        hide_state_registries
            Leave out each field's state registry (e.g. the targets, the gene sets).
        """
        # scvi-tools calls rich.pretty without importing it; `import rich` no longer
        # loads it (rich >= 15)
        import rich.pretty  # noqa: F401

        super().view_anndata_setup(adata, hide_state_registries=hide_state_registries)

    def data_splitter(self, adata: ad.AnnData | None = None) -> PerturbationDataSplitter:
        """The :class:`~scsena.dataloaders.PerturbationDataSplitter` of registered data.

        It parses the perturbation labels once, gives the expression matrix as
        registered, every cell's fold (``obs["scsena_fold"]``, else assigned with the
        model's held-out targets, ``test_fraction`` and seed), control-paired fold
        datasets and the training data module.

        Parameters
        ----------
        adata
            Registered AnnData with the model's genes (default: the model's).
        """
        adata = self._validate_anndata(adata)
        return self._splitter(self.get_anndata_manager(adata, required=True))

    def _splitter(self, manager: AnnDataManager) -> PerturbationDataSplitter:
        return PerturbationDataSplitter(
            manager,
            self.targets_,
            self.control_value_,
            self.delimiter_,
            heldout=self.heldout_,
            test_fraction=self.test_fraction,
            seed=self.seed_,
            dtype=self._dtype,
        )


    # ---------------------------------------------------------------- train


    # ------------------------------------------------------------ save/load


