"""SENAVAE: SENA-discrepancy-VAE as an scvi-tools model."""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.train import TrainRunner

from scsena import gene_sets as gs
from scsena._constants import (
    ADATA_KEYS,
    FOLD_DOUBLE,
    FOLD_TEST,
    FOLD_TRAIN,
    REGISTRY_KEYS,
    TENSORS,
)
from scsena._mudata import rna_modality
from scsena._perturbations import (
    KIND_CONTROL,
    encode_labels,
)
from scsena._runtime import training_run
from scsena._validation import check_expression, warn_constant_genes
from scsena.dataloaders import PerturbationDataSplitter, assign_folds, resolve_heldout
from scsena.module import SENAModule
from scsena.train import (
    EpochCheckpoint,
    SENATrainingPlan,
    check_resume,
    make_loader,
    progress_callbacks,
)

from ._fields import GeneSetMaskField, PerturbationField, mask_from_state, targets_from_state
from ._interpretation import InterpretationMixin
from ._presets import MODULE_PRESETS, TRAIN_PRESETS, check_preset, resolve
from ._save_load import (
    ADATA_FILE,
    MDATA_FILE,
    MODEL_FILE,
    MODEL_FORMAT,
    build_model,
    read_model_file,
    recover_saves,
    staged_save,
    write_model_file,
)

logger = logging.getLogger(__name__)

_META_FILE = "scsena.json"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "scsena": version("scsena"),
        "scvi-tools": version("scvi-tools"),
        "torch": torch.__version__,
        "anndata": version("anndata"),
    }


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _read_meta(path: Path) -> dict:
    """The versions file written by ``save``; a clear error naming it when invalid."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        meta = err
    if not isinstance(meta, dict):
        reason = (
            f"{type(meta).__name__}: {meta}" if isinstance(meta, Exception) else "not a JSON object"
        )
        raise ValueError(
            f"{str(path)!r} is not a valid scsena model file ({reason}). Save the model "
            "again with model.save(), or point to the directory that model.save() wrote."
        )
    return meta


def _positive_int(value, name: str) -> int:
    """``value`` as an ``int`` when it is a positive integer; otherwise a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


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


def _check_gene_order(data_genes: pd.Index, model_genes: Sequence[str]) -> None:
    """Refuse data whose genes are not the model's genes in the model's order."""
    data = np.asarray(data_genes).astype(str)
    model = np.asarray(model_genes).astype(str)
    if len(data) == len(model) and np.array_equal(data, model):
        return
    if len(data) == len(model) and set(data) == set(model):
        raise ValueError(
            "The data's genes are the model's genes in another order; the model would read "
            "each gene as another. Order them as the model: "
            "`adata = adata[:, model.var_names].copy()`, then set it up again."
        )
    shared = len(set(data) & set(model))
    raise ValueError(
        f"The data's genes differ from the model's: the model has {len(model)} genes, the "
        f"data {len(data)} ({shared} shared). Subset and order the data as the model: "
        "`adata = adata[:, model.var_names].copy()`, then set it up again."
    )


class _InterruptWatch(pl.Callback):
    """Remember the exception that stopped training (Lightning hides Ctrl-C)."""

    def __init__(self):
        self.exception: BaseException | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception


def _restore_sigint(handler) -> None:
    """Lightning ignores Ctrl-C once it caught one; give the handler back."""
    if signal.getsignal(signal.SIGINT) is handler or handler is None:
        return
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        pass


def _drop_scvi_checkpoint(trainer, ours: Sequence) -> None:
    """Remove the ``SaveCheckpoint`` scvi-tools' trainer adds when checkpointing is on.

    It monitors ``validation_loss`` (a metric scsena does not log) and writes full
    model copies under ``./scvi_log``; scsena's own checkpoints go to
    ``checkpoint_dir``. Callbacks the user passed are kept.
    """
    from scvi.train import SaveCheckpoint

    trainer.callbacks = [
        c for c in trainer.callbacks if not isinstance(c, SaveCheckpoint) or c in ours
    ]


def _mlflow_logger(checkpoint_dir: str | Path | None):
    """An MLflow logger that writes where the user said, never to the current directory.

    The store goes to the checkpoint directory, else to a new temporary directory
    (with a warning).
    """
    from scsena.tracking import mlflow_logger

    if checkpoint_dir is not None:
        return mlflow_logger(directory=checkpoint_dir)
    directory = tempfile.mkdtemp(prefix="scsena-mlflow-")
    warnings.warn(
        f"log_to='mlflow' without checkpoint_dir: the MLflow store is written to the "
        f"temporary directory {directory!r}. Pass `checkpoint_dir=` to keep it with the "
        "run, or `logger=scsena.tracking.mlflow_logger(directory=...)` (or "
        "`tracking_uri=...` for a server).",
        UserWarning,
        stacklevel=3,
    )
    return mlflow_logger(directory=directory)

#: The reference (SENA paper) settings of ``SENAVAE.train``.
REFERENCE_TRAIN_KWARGS = dict(TRAIN_PRESETS["reference"])


class SENAVAE(InterpretationMixin, UnsupervisedTrainingMixin, BaseModelClass):
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
        ``lambda_balance=1``, ``lambda_mean=10``, ``prediction="residual"``.
        ``"reference"``: the published SENA-discrepancy-VAE exactly
        (``assignment="mlp"``, no extra terms, ``prediction="direct"``). Every
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
        dtype: Literal["float32", "float64"] = "float32",
        heldout: str | int | Sequence[str] | None = "auto",
        test_fraction: float = 0.2,
        seed: int = 0,
        registry: dict | None = None,
    ):
        adata = rna_modality(adata)
        super().__init__(adata, registry=registry)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
        fields = self.registry_["field_registries"]
        pert_state = fields[REGISTRY_KEYS.PERTURBATION_KEY]["state_registry"]
        mask_state = fields[REGISTRY_KEYS.MASK_KEY]["state_registry"]
        mask = mask_from_state(mask_state)
        self.targets_ = targets_from_state(pert_state)
        self.control_value_ = str(pert_state["control_value"])
        self.delimiter_ = str(pert_state["delimiter"])
        self.term_ids_ = list(mask.terms)
        self.term_names_ = list(mask.term_names)
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
            },
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = SENAModule(
                n_genes=mask.n_genes,
                n_targets=len(self.targets_),
                membership=mask.membership,
                n_latent=n_latent,
                encoder=encoder,
                sena_lambda=sena_lambda,
                **network,
            ).to(self._dtype)
        self.heldout_: list[str] = []
        if adata is not None:
            dataset_info = adata.uns.get("scsena_dataset", {})
            dataset_heldout = (
                list(np.asarray(dataset_info.get("heldout", [])).tolist())
                if isinstance(dataset_info, Mapping)
                else None
            )
            self.heldout_ = resolve_heldout(heldout, self.targets_, seed, dataset_heldout or None)
            splitter = self._splitter(self.adata_manager)
            folds = assign_folds(splitter.perturbations, self.heldout_, test_fraction, seed)
            if ADATA_KEYS.FOLD in adata.obs and not (
                isinstance(adata.obs[ADATA_KEYS.FOLD].dtype, pd.CategoricalDtype)
                and list(adata.obs[ADATA_KEYS.FOLD].cat.categories) == list(folds.categories)
            ):
                raise ValueError(
                    f"adata.obs[{ADATA_KEYS.FOLD!r}] exists and was not written by scsena; "
                    "rename that column first."
                )
            adata.obs[ADATA_KEYS.FOLD] = folds
        self._model_summary_string = (
            f"SENAVAE: preset={preset}, encoder={encoder}, {mask.n_genes} genes, "
            f"{mask.n_terms} gene sets"
            + (f" ({mask.n_dropped} more dropped by min_genes)" if mask.n_dropped else "")
            + f", {len(self.targets_)} targets, {n_latent} latent factors, lambda={sena_lambda}, "
            f"dtype={dtype}, held out: {', '.join(self.heldout_) or 'none'}"
        )
        self.init_params_ = self._get_init_params(locals())

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
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        args = setup_method_args["setup_args"]
        if not isinstance(gene_sets, (str, type(None))):
            # keep the registry light: the mask itself is kept by the mask field
            args["gene_sets"] = str(gene_sets) if isinstance(gene_sets, Path) else None
        if adata.var_names.has_duplicates:
            dup = adata.var_names[adata.var_names.duplicated()][:5].tolist()
            raise ValueError(
                f"adata.var_names has duplicates (e.g. {dup}); make them unique with "
                "`adata.var_names_make_unique()` or aggregate duplicated genes."
            )
        if adata.obs_names.has_duplicates:
            dup = adata.obs_names[adata.obs_names.duplicated()][:5].tolist()
            raise ValueError(
                f"adata.obs_names has duplicates (e.g. {dup}): cells, and the control cells "
                "predictions start from, would be ambiguous. Make them unique with "
                "`adata.obs_names_make_unique()`."
            )
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"Layer {layer!r} not found in adata.layers; layers present: "
                f"{list(adata.layers.keys())}. Pass one of them, or layer=None for adata.X."
            )
        matrix = adata.X if layer is None else adata.layers[layer]
        check_expression(matrix, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
        warn_constant_genes(matrix)
        source_registry = kwargs.get("source_registry")
        if mask_key in adata.uns and not (
            isinstance(adata.uns[mask_key], Mapping) and "format" in adata.uns[mask_key]
        ):
            raise ValueError(
                f"adata.uns[{mask_key!r}] exists and is not a scsena gene-set mask; pass "
                "another `mask_key`."
            )
        if gene_sets is not None and source_registry is None:
            mask = gs.build_mask(
                adata.var_names, gene_sets, min_genes=min_genes, keep_terms=keep_terms
            )
            adata.uns[mask_key] = mask.to_uns()
        elif gene_sets is None and mask_key not in adata.uns and source_registry is None:
            raise ValueError(
                f"gene_sets=None reuses adata.uns[{mask_key!r}], which is absent; pass "
                "gene sets (e.g. gene_sets='go_bp_sena')."
            )
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            PerturbationField(perturbation_key, control_value, delimiter),
            GeneSetMaskField(mask_key),
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
        **kwargs,
    ) -> None:
        """Register a :class:`~mudata.MuData`: an RNA modality and the perturbations.

        The perturbations come from a column (of the RNA modality's ``obs`` or of
        ``mdata.obs``) or from a guide modality (cells x guides counts; every guide
        with a count is assigned, non-targeting guides mark controls). The model is
        then built with ``SENAVAE(mdata)`` and works on the RNA modality.

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
        gene_sets, min_genes, mask_key, keep_terms, **kwargs
            As in :meth:`setup_anndata`.
        """
        from scsena._mudata import GUIDE_LABEL_KEY, labels_from_guides

        if rna_mod not in mdata.mod:
            raise KeyError(
                f"No modality {rna_mod!r} in the MuData; modalities: {list(mdata.mod)}. "
                "Pass the RNA modality as `rna_mod`."
            )
        rna = mdata.mod[rna_mod]
        key = perturbation_mod_or_key
        if key in mdata.mod and key != rna_mod:
            rna.obs[GUIDE_LABEL_KEY] = labels_from_guides(
                mdata.mod[key], rna.obs_names, target_key=guide_target_key
            )
            key, control_value, delimiter = GUIDE_LABEL_KEY, "", ","
        elif key not in rna.obs and key in mdata.obs:
            rna.obs[key] = mdata.obs.loc[rna.obs_names, key].to_numpy()
        elif key not in rna.obs:
            raise KeyError(
                f"{key!r} is neither a modality nor a column of mdata.obs or "
                f"mdata[{rna_mod!r}].obs. Modalities: {list(mdata.mod)}."
            )
        mdata.uns["scsena_rna_mod"] = rna_mod
        cls.setup_anndata(
            rna,
            perturbation_key=key,
            control_value=control_value,
            delimiter=delimiter,
            layer=layer,
            gene_sets=gene_sets,
            min_genes=min_genes,
            mask_key=mask_key,
            keep_terms=keep_terms,
            **kwargs,
        )

    # --------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return next(self.module.parameters()).device

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
        """scvi-tools' check, plus: the data's genes are the model's, in its order."""
        adata = super()._validate_anndata(adata, copy_if_view=copy_if_view)
        _check_gene_order(adata.var_names, self._model_var_names())
        return adata

    def _note_untrained(self, train_ds, batch_size: int) -> None:
        """Record (and warn about) targets with fewer training cells than one batch.

        Batches are perturbation-pure and incomplete ones are dropped, so such a
        target is never trained: its intervention parameters stay at initialisation.
        """
        codes = train_ds.codes.numpy()
        single = codes[codes[:, 1] < 0, 0]
        counts = np.bincount(single[single >= 0], minlength=len(self.targets_))
        self.untrained_targets_ = [t for t, n in zip(self.targets_, counts) if n < batch_size]
        if self.untrained_targets_:
            shown = ", ".join(
                f"{t} ({counts[self.targets_.index(t)]})" for t in self.untrained_targets_[:10]
            )
            warnings.warn(
                f"{len(self.untrained_targets_)} target(s) have fewer training cells than "
                f"batch_size={batch_size} and are never trained (their parameters stay at "
                f"initialisation): {shown}{' ...' if len(self.untrained_targets_) > 10 else ''}"
                ". Predictions involving them are flagged (`obs['untrained_target']`). Lower "
                "`batch_size`, or remove these targets before setup.",
                UserWarning,
                stacklevel=3,
            )

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

    @property
    def test_fraction(self) -> float:
        """Share of each held-out target's cells in the test fold (given at construction)."""
        return self._test_fraction

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

    def _encode(
        self,
        splitter: PerturbationDataSplitter,
        indices: np.ndarray,
        batch_size: int,
        sample: bool,
        seed: int,
    ) -> torch.Tensor:
        """Latent ``z`` of the given cells: the posterior mean, or a seeded sample."""
        gen = torch.Generator().manual_seed(seed)
        self.module.eval()
        out = []
        for x in splitter.iter_rows(indices, batch_size, self.device):
            _, mu, var = self.module.encode(x)
            if sample:
                eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype).to(mu.device)
                mu = mu + var.sqrt() * eps
            out.append(mu)
        return torch.cat(out)

    # ---------------------------------------------------------------- train
    @training_run
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        alpha_max: float | None = None,
        beta_max: float | None = None,
        tau_max: float | None = None,
        grad_clip: float | None = None,
        select_best_epoch: bool | None = None,
        validate_on_test: bool = False,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        seed: int | None = None,
        num_workers: int = 0,
        data_on_device: bool | Literal["auto"] = "auto",
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 1,
        ckpt_path: str | Path | None = None,
        log_to: Literal["mlflow"] | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train with SENA's schedules on control and single-perturbation cells.

        Arguments left at ``None`` take the model preset's value (both presets: 100
        epochs, batch 32, lr 1e-3, ``alpha_max=1``, ``beta_max=1``, ``tau_max=100``;
        best-epoch selection in ``"reference"``, the last epoch in ``"scsena"``,
        whose extra loss term grows with ``alpha`` and would make the reference's
        criterion pick an epoch before the MMD is switched on).

        Parameters
        ----------
        max_epochs
            Epochs ``E``; the schedules span them (reference 100).
        batch_size
            Perturbation-pure batch size (reference 32).
        lr
            Adam learning rate (reference 1e-3).
        alpha_max, beta_max, tau_max
            Final MMD weight, KL weight and temperature (SENA: 1, 1, 100;
            discrepancy-VAE: 10, 2, 5).
        grad_clip
            Clip gradient values at this magnitude (reference option: 0.5).
        select_best_epoch
            Keep the weights of the epoch with the lowest mean of the epoch-average
            loss components (total, MMD, MSE, KL, L1), as the reference does;
            ``False`` keeps the last epoch.
        validate_on_test
            Also compute the losses on the test fold each epoch (``*_validation``).
        accelerator, devices
            Lightning accelerator and devices (``"auto"``: a GPU when present).
        seed
            Seed of the batch order, control partners and sampling noise (defaults
            to the model's seed).
        num_workers
            Data-loading worker processes.
        data_on_device
            Keep the expression rows of the training cells on the training device and
            gather batches there (no expression data crosses from the host per step).
            ``"auto"``: on a CUDA GPU when the cells fit in half of its free memory as
            a dense matrix (in-memory data, ``num_workers=0``); ``True`` forces it,
            ``False`` reads every batch on the host.
        checkpoint_dir
            Write Lightning checkpoints there: ``last.ckpt`` at the end of every epoch,
            ``best.ckpt`` at each new best epoch (with best-epoch selection) and
            ``epoch=N.ckpt`` every ``checkpoint_every`` epochs, each atomically
            (written under a temporary name, then renamed). Nothing else is written
            anywhere, except the MLflow store with ``log_to="mlflow"``.
        checkpoint_every
            Epochs between the kept ``epoch=N.ckpt`` files (``last.ckpt`` is rewritten
            every epoch regardless).
        ckpt_path
            Resume from this checkpoint (e.g. ``checkpoint_dir / "last.ckpt"``); with
            the same data, seed and arguments the result equals an uninterrupted run.
            A checkpoint trained on other targets or genes is refused.
        log_to
            ``"mlflow"``: log to MLflow through Lightning's ``MLFlowLogger`` in a local
            store (see :func:`scsena.tracking.mlflow_logger`) in ``checkpoint_dir``, or
            in a new temporary directory (named in a warning) without one; or pass
            ``logger=``.
        plan_kwargs
            Extra arguments of :class:`~scsena.train.SENATrainingPlan`.
        **trainer_kwargs
            Passed to the Lightning trainer (``logger``, ``callbacks``,
            ``enable_checkpointing``, ``ckpt_path`` ...). ``enable_progress_bar``
            (default ``True``) shows scvi-tools' progress bar in a terminal and one
            line per epoch (epoch, loss, MMD, elapsed seconds) on standard error
            elsewhere (a log file, a pipe, a notebook); ``False`` trains silently.

        Notes
        -----
        Ctrl-C stops training cleanly: the model keeps the best epoch's weights so far
        (with best-epoch selection), ``training_interrupted_`` is set to ``True`` and
        ``is_trained_`` to ``False``, and a warning says how to resume. SIGTERM does the
        same, then ends the process. Targets with fewer training cells than
        ``batch_size`` are never in a batch, hence never trained: a warning names them
        and ``untrained_targets_`` lists them (their predictions are flagged).
        """
        settings = resolve(
            TRAIN_PRESETS[self.preset_],
            {
                "max_epochs": max_epochs,
                "batch_size": batch_size,
                "lr": lr,
                "alpha_max": alpha_max,
                "beta_max": beta_max,
                "tau_max": tau_max,
                "select_best_epoch": select_best_epoch,
            },
        )
        max_epochs, batch_size, lr = (settings[k] for k in ("max_epochs", "batch_size", "lr"))
        alpha_max, beta_max, tau_max = (settings[k] for k in ("alpha_max", "beta_max", "tau_max"))
        select_best_epoch = settings["select_best_epoch"]
        seed = self.seed_ if seed is None else int(seed)
        pl.seed_everything(seed, workers=True, verbose=False)
        datamodule = self.data_splitter().data_module(
            batch_size, seed, validate_on_test, num_workers, data_on_device
        )
        self._note_untrained(datamodule.train_dataset, batch_size)
        plan = self._training_plan_cls(
            self.module,
            n_epochs=max_epochs,
            alpha_max=alpha_max,
            beta_max=beta_max,
            tau_max=tau_max,
            lr=lr,
            seed=seed,
            select_best_epoch=select_best_epoch,
            **(plan_kwargs or {}),
        )
        callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
        callbacks.extend(progress_callbacks(trainer_kwargs))
        if checkpoint_dir is not None:
            callbacks.append(
                EpochCheckpoint(
                    checkpoint_dir, checkpoint_every, self.targets_, self._model_var_names()
                )
            )
            trainer_kwargs["enable_checkpointing"] = True
            trainer_kwargs.setdefault("default_root_dir", str(checkpoint_dir))
        if ckpt_path is not None:
            if not Path(ckpt_path).exists():
                raise FileNotFoundError(f"Checkpoint {str(ckpt_path)!r} does not exist.")
            check_resume(ckpt_path, self.targets_, self._model_var_names())
            trainer_kwargs["ckpt_path"] = str(ckpt_path)
        if log_to == "mlflow":
            trainer_kwargs["logger"] = _mlflow_logger(checkpoint_dir)
        elif log_to is not None:
            raise ValueError(f"log_to must be 'mlflow' or None, got {log_to!r}.")
        if grad_clip is not None:
            trainer_kwargs.setdefault("gradient_clip_val", grad_clip)
            trainer_kwargs.setdefault("gradient_clip_algorithm", "value")
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1 if validate_on_test else None)
        # our batch sampler shards perturbation-pure chunks across data-parallel workers
        trainer_kwargs.setdefault("use_distributed_sampler", False)
        if trainer_kwargs["check_val_every_n_epoch"] is None:
            trainer_kwargs["check_val_every_n_epoch"] = max_epochs + 1
        runner = self._train_runner_cls(
            self,
            training_plan=plan,
            data_splitter=datamodule,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=list(callbacks),  # scvi-tools' trainer appends to the list it gets
            **trainer_kwargs,
        )
        _drop_scvi_checkpoint(runner.trainer, callbacks)
        self.term_orientation_ = None  # new weights: orient the activities again
        self.module.train()
        result = self._run_training(runner, plan, checkpoint_dir)
        self.best_epoch_ = plan.best_epoch if select_best_epoch else None
        self.module.eval()
        return result

    def _run_training(self, runner, plan, checkpoint_dir: str | Path | None):
        """Run ``runner``; on Ctrl-C or SIGTERM keep the best weights so far and say so.

        Lightning turns Ctrl-C into ``SystemExit(1)`` and SIGTERM into
        ``SIGTERMException`` (a ``SystemExit``) after its own clean-up. The model then
        holds the best epoch's weights so far, ``training_interrupted_`` is ``True`` and
        ``is_trained_`` ``False``; after Ctrl-C ``train`` returns, after SIGTERM the
        exception is raised again so the process still ends.
        """
        self.training_interrupted_ = False
        watch = _InterruptWatch()
        runner.trainer.callbacks.append(watch)
        sigint = signal.getsignal(signal.SIGINT)
        try:
            result = runner()
        except SystemExit as err:
            sigterm = isinstance(err, SIGTERMException)
            if not (sigterm or isinstance(watch.exception, KeyboardInterrupt)):
                raise
            self._interrupted(runner.trainer, plan, checkpoint_dir, sigterm)
            if sigterm:
                raise
            return None
        finally:
            _restore_sigint(sigint)
        # a run resumed from a finished run's checkpoint never calls on_train_end
        plan.restore_best_state()
        self._warn_shared_factor()
        return result

    def _warn_shared_factor(self) -> None:
        """Warn when more than a quarter of the targets act on the same latent factor."""
        counts = self.get_intervention_targets()["latent"].value_counts()
        n_targets = len(self.targets_)
        factor, n = str(counts.index[0]), int(counts.iloc[0])
        if n >= 2 and n > n_targets / 4:
            warnings.warn(
                f"{n} of {n_targets} perturbation targets act on the same latent factor "
                f"{factor}: their predicted responses move along one direction and a double "
                "of two of them shifts that factor twice. Use the default preset "
                "(preset='scsena': assignment='table'), n_latent >= the number of targets, "
                "or lambda_balance > 0; see model.history['distinct_factors'].",
                UserWarning,
                stacklevel=3,
            )

    def _interrupted(self, trainer, plan, checkpoint_dir, sigterm: bool) -> None:
        plan.restore_best_state()
        self.module.eval()
        self.is_trained_ = False
        self.training_interrupted_ = True
        self.best_epoch_ = plan.best_epoch if plan.select_best_epoch else None
        kept = (
            f"the weights of the best epoch so far (epoch {plan.best_epoch})"
            if self.best_epoch_ is not None
            else "the weights of the interrupted epoch"
        )
        if checkpoint_dir is not None:
            resume = (
                "Resume with the same arguments plus "
                f"`ckpt_path={str(Path(checkpoint_dir) / 'last.ckpt')!r}`."
            )
        else:
            resume = "Pass `checkpoint_dir=` to make a run resumable."
        message = (
            f"Training {'stopped by SIGTERM' if sigterm else 'interrupted'} during epoch "
            f"{trainer.current_epoch} of {trainer.max_epochs}: the model is partly trained "
            f"(`training_interrupted_` is True) and holds {kept}. {resume}"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    # ------------------------------------------------------------ save/load
    def save(
        self,
        dir_path: str | Path,
        overwrite: bool = False,
        save_anndata: bool = False,
        prefix: str | None = None,
        legacy_mudata_format: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model so that loading it cannot run code and a killed save loses nothing.

        ``model.pt`` holds tensors and plain containers only, so :meth:`load` reads it
        with ``torch.load(..., weights_only=True)``. The files are written into a
        uniquely named staging directory inside ``dir_path`` and moved into place once
        all are written; files in ``dir_path`` that scsena did not write are kept.
        What a killed save left behind is completed or removed by the next save or
        :meth:`load`, with a warning.

        Parameters
        ----------
        dir_path
            Target directory.
        overwrite
            Replace the model in an existing, non-empty directory; otherwise that is an
            error. Other files in the directory are kept.
        save_anndata
            Also write the AnnData (``adata.h5ad``).
        prefix
            Prefix of the file names.
        legacy_mudata_format
            As in :meth:`scvi.model.base.BaseModelClass.save`.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write`.
        """
        prefix = prefix or ""
        with staged_save(Path(dir_path), prefix, overwrite) as staging:
            if save_anndata:
                name = ADATA_FILE if isinstance(self.adata, ad.AnnData) else MDATA_FILE
                self.adata.write(staging / f"{prefix}{name}", **anndata_write_kwargs)
            attributes = {k: v for k, v in self._get_user_attributes() if k.endswith("_")}
            write_model_file(
                staging / f"{prefix}{MODEL_FILE}",
                self.module.state_dict(),
                self.get_var_names(legacy_mudata_format=legacy_mudata_format),
                attributes,
            )
            meta_name = f"{prefix}{_META_FILE}"
            files = sorted([p.name for p in staging.iterdir()] + [meta_name])
            meta = {**_versions(), "model_format": MODEL_FORMAT, "files": files}
            (staging / meta_name).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: ad.AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        trusted: bool = False,
        allowed_classes_names_list: list[str] | None = None,
    ) -> SENAVAE:
        """Load a saved model without running code, checking the package versions and the data.

        ``model.pt`` is read with ``torch.load(..., weights_only=True)``, which rebuilds
        tensors and plain containers only; a file that needs more (written by an older
        scsena, or tampered with) is refused with :class:`ValueError` unless
        ``trusted=True``. What a killed :meth:`save` left in ``dir_path`` is completed
        or removed first, with a warning.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            AnnData with the model's genes (in the same order) and the perturbation
            column named at setup; ``None`` loads the AnnData saved with the model.
        accelerator, device
            Where to put the model, as in :meth:`scvi.model.base.BaseModelClass.load`.
        prefix
            Prefix of the file names given to :meth:`save`.
        trusted
            Also load a model file of an older scsena version, whose NumPy content
            needs Python's unrestricted unpickler. That unpickler runs any code the file
            holds: only for files from a trusted source. Save the model again to convert
            it.
        allowed_classes_names_list
            Other model class names to accept.
        """
        path = Path(dir_path)
        prefix = prefix or ""
        recover_saves(path)
        model_file = path / f"{prefix}{MODEL_FILE}"
        if not model_file.exists():
            raise FileNotFoundError(
                f"No saved model in {str(path)!r} (model.pt missing); save one with model.save()."
            )
        meta_file = path / f"{prefix}{_META_FILE}"
        if meta_file.exists():
            saved = _read_meta(meta_file)
            now = _versions()
            for pkg in ("scsena", "scvi-tools"):
                if str(saved.get(pkg, "")).split(".")[:2] != now[pkg].split(".")[:2]:
                    warnings.warn(
                        f"Model saved with {pkg} {saved.get(pkg)}; this is {now[pkg]}.",
                        UserWarning,
                        stacklevel=2,
                    )
        else:
            warnings.warn(
                f"{str(path)!r} has no {_META_FILE}: not saved by scsena's save().",
                UserWarning,
                stacklevel=2,
            )
        saved_files = read_model_file(model_file, trusted=trusted)
        if adata is not None and adata is not False:
            adata = rna_modality(adata)
            var_names = np.asarray(saved_files[1]).astype(str)
            if len(var_names) != adata.n_vars or not np.array_equal(
                var_names, np.asarray(adata.var_names).astype(str)
            ):
                shared = len(set(var_names) & set(adata.var_names))
                raise ValueError(
                    f"The data's genes differ from the model's: the model has {len(var_names)} "
                    f"genes, the data {adata.n_vars} ({shared} shared). Subset and order the "
                    "data as the model: `adata = adata[:, model_var_names].copy()` with "
                    f"`model_var_names` read by `SENAVAE.load_registry` / saved with the model."
                )
        return build_model(
            cls,
            path,
            adata,
            saved_files,
            prefix=prefix,
            accelerator=accelerator,
            device=device,
            allowed_classes_names_list=allowed_classes_names_list,
        )

    @staticmethod
    def load_registry(
        dir_path: str | Path, prefix: str | None = None, trusted: bool = False
    ) -> dict:
        """The registry saved with a model (its setup and gene-set mask), read safely.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        prefix
            Prefix of the file names given to :meth:`save`.
        trusted
            As in :meth:`load`.

        Returns
        -------
        dict
            The registry.
        """
        path = Path(dir_path)
        recover_saves(path)
        model_file = path / f"{prefix or ''}{MODEL_FILE}"
        if not model_file.exists():
            raise FileNotFoundError(
                f"No saved model in {str(path)!r} ({model_file.name} missing); save one with "
                "model.save()."
            )
        return read_model_file(model_file, trusted=trusted)[0]["registry_"]

    @staticmethod
    def view_setup_args(dir_path: str | Path, prefix: str | None = None) -> None:
        """Print the arguments a saved model was set up with (read without running code).

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        prefix
            Prefix of the file names given to :meth:`save`.
        """
        AnnDataManager.view_setup_method_args(SENAVAE.load_registry(dir_path, prefix))

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs) -> None:
        """Not supported: scsena has no scvi-tools < 0.15 files; see :meth:`load` ``trusted``."""
        raise NotImplementedError(
            "SENAVAE has no scvi-tools < 0.15 model files to convert. Load a model of an "
            "older scsena with SENAVAE.load(dir_path, trusted=True) and save it again."
        )

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int = 1024,
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
            Cells per forward pass.
        seed
            Seed of the sample when ``give_mean=False``.

        Returns
        -------
        ``(n_cells, n_latent)`` array.
        """
        splitter = self.data_splitter(adata)
        idx = np.arange(splitter.adata.n_obs) if indices is None else np.asarray(indices)
        if len(idx) == 0:
            return np.zeros((0, self.n_latent))
        z = self._encode(splitter, idx, batch_size, sample=not give_mean, seed=seed)
        return z.cpu().numpy()

    def _encode_predicted(self, labels: Sequence[str]) -> np.ndarray:
        """Codes of the labels to predict; the control label encodes as "no target"."""
        control = {"", self.control_value_}
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
        batch_size: int = 1024,
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
            Cells per forward pass.

        Returns
        -------
        AnnData of predicted log-normalised expression with the model's
        ``var_names``; ``obs["perturbation"]`` holds the canonical label (the targets
        of a double sorted: ``"B,A"`` is predicted as ``"A,B"``), ``obs["control_cell"]``
        the starting control cell and ``obs["untrained_target"]`` whether a target of
        the perturbation had too few training cells for one batch (its prediction
        rests on untrained parameters; a warning names them). Concatenate it with real
        cells for scanpy plots.

        Raises
        ------
        ValueError
            For ``n_cells`` or ``batch_size`` that are not positive integers, a
            ``temperature`` that is not a positive number, or ``control_indices`` out of
            range or not pointing at control cells; the message names the argument.
        """
        batch_size = _positive_int(batch_size, "batch_size")
        _check_temperature(temperature)
        splitter = self.data_splitter(adata)
        adata, parsed = splitter.adata, splitter.perturbations
        labels = [perturbations] if isinstance(perturbations, str) else list(perturbations)
        codes = self._encode_predicted(labels)
        rng = np.random.default_rng(seed)
        if control_indices is None:
            n_cells = _positive_int(n_cells, "n_cells")
            control = splitter.control_indices()
            if len(control) == 0:
                raise ValueError("No control cells in the data to start predictions from.")
            start = rng.choice(control, size=n_cells, replace=n_cells > len(control))
        else:
            start = _control_positions(control_indices, parsed)
            n_cells = len(start)
        untrained = self._flag_untrained(codes)
        z = self._encode(splitter, start, batch_size, sample=not use_mean, seed=seed)
        # the control cells themselves, for counterfactual (residual) predictions
        x = (
            torch.cat(list(splitter.iter_rows(start, batch_size, self.device)))
            if self.module.prediction == "residual"
            else None
        )
        # one preallocated output: no per-batch lists, concatenation or cast copies
        X = np.empty((len(codes) * n_cells, adata.n_vars), dtype=np.float32)
        for i, code in enumerate(codes):
            c = torch.as_tensor(code, device=self.device).expand(n_cells, -1)
            for s in range(0, n_cells, batch_size):
                part = slice(s, s + batch_size)
                y = self.module.predict(
                    z[part], c[part], temperature, x=None if x is None else x[part]
                )
                rows = slice(i * n_cells + s, i * n_cells + min(s + batch_size, n_cells))
                X[rows] = y.cpu().numpy()
        # canonical labels: the targets of a double in sorted order ("B,A" is "A,B")
        canon = [
            self.delimiter_.join(self.targets_[j] for j in code if j >= 0) or self.control_value_
            for code in codes
        ]
        obs = pd.DataFrame(
            {
                "perturbation": pd.Categorical(
                    np.repeat(canon, n_cells), categories=list(dict.fromkeys(canon))
                ),
                "control_cell": np.tile(np.asarray(adata.obs_names[start]), len(labels)),
                "untrained_target": np.repeat(untrained, n_cells),
            }
        )
        obs.index = [f"pred-{i}" for i in range(len(obs))]
        pred = ad.AnnData(
            X=X,
            obs=obs,
            var=pd.DataFrame(index=adata.var_names.copy()),
        )
        pred.uns["scsena_prediction"] = {
            "temperature": float(temperature),
            "use_mean": bool(use_mean),
            "seed": int(seed),
        }
        return pred

    @torch.inference_mode()
    def get_fold_losses(
        self,
        fold: Literal["train", "test", "double"] = "double",
        adata: ad.AnnData | None = None,
        temperature: float = 1000.0,
        batch_size: int = 32,
        seed: int = 0,
        protocol: Literal["per_batch", "published"] = "per_batch",
        chunk_batches: int = 10,
    ) -> pd.DataFrame:
        """The reference evaluation: losses on perturbation-pure batches of one fold.

        Each batch's cells are predicted from randomly paired control cells (doubles
        through the two-target causal layer); the losses are the MMD (training kernel)
        between predicted and real cells, the MSE of the control reconstruction, the
        KL and the DAG's L1.

        Parameters
        ----------
        fold
            ``"train"``, ``"test"`` or ``"double"``.
        adata
            Registered AnnData (default: the model's).
        temperature
            Inference temperature (reference 1000).
        batch_size
            Cells per batch (reference 32).
        seed
            Seed of the control partners, the batch order and the sampling noise.
        protocol
            ``"per_batch"``: one value per batch of 32 cells (batches in a fixed
            order, the last one of a perturbation may be smaller), averaged per
            perturbation weighted by batch size. ``"published"``: the published
            evaluation loop exactly: batches in shuffled order with each
            perturbation's incomplete last batch dropped; whenever the batch index
            ``i`` (0-based) is a multiple of ``chunk_batches``, the batches accumulated
            so far (batch 0 alone, then batches 1-10, 11-20, ...; perturbations mixed)
            are stacked and their losses computed; batches after the last multiple are
            dropped. The reported number is the mean over chunks. The per-batch MMD is
            a different, larger quantity on the same model.
        chunk_batches
            ``K`` of the published protocol (10).

        Returns
        -------
        ``"per_batch"``: one row per perturbation: ``perturbation``, ``n_cells``,
        ``mmd``, ``mse``, ``kl``, ``l1``. ``"published"``: one row per chunk:
        ``chunk``, ``n_cells``, ``mmd``, ``mse``, ``kl``, ``l1``.
        """
        if fold not in (FOLD_TRAIN, FOLD_TEST, FOLD_DOUBLE):
            raise ValueError(f"fold must be 'train', 'test' or 'double', got {fold!r}.")
        if protocol not in ("per_batch", "published"):
            raise ValueError(f"protocol must be 'per_batch' or 'published', got {protocol!r}.")
        if int(chunk_batches) < 1:
            raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}.")
        published = protocol == "published"
        key = "chunk" if published else "perturbation"
        empty = pd.DataFrame(columns=[key, "n_cells", "mmd", "mse", "kl", "l1"])
        ds = self.data_splitter(adata).fold_dataset([fold], seed)
        if len(ds) == 0:
            return empty
        loader = make_loader(ds, batch_size, shuffle=published, drop_last=published, seed=seed)
        self.module.eval()
        rows, stack = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i, batch in enumerate(loader):
                parts = self._loss_inputs(batch, temperature)
                if not published:
                    code = batch[TENSORS.CODES][0].tolist()
                    label = self.delimiter_.join(self.targets_[c] for c in code if c >= 0)
                    rows.append({"perturbation": label, **self._losses(parts, temperature)})
                    continue
                stack.append(parts)
                if i % int(chunk_batches) == 0:
                    stacked = tuple(
                        {k: torch.cat([p[j][k] for p in stack]) for k in stack[0][j]}
                        for j in range(3)
                    )
                    rows.append({"chunk": len(rows), **self._losses(stacked, temperature)})
                    stack = []
        if published:
            return pd.DataFrame(rows, columns=empty.columns)
        df = pd.DataFrame(rows)
        out = []
        for label, g in df.groupby("perturbation", sort=True):
            w = g["n_cells"].to_numpy(dtype=float)
            out.append(
                {
                    "perturbation": label,
                    "n_cells": int(w.sum()),
                    **{k: float(np.average(g[k], weights=w)) for k in ("mmd", "mse", "kl")},
                    "l1": float(g["l1"].iloc[0]),
                }
            )
        return pd.DataFrame(out)

    def _loss_inputs(self, batch: dict, temperature: float) -> tuple[dict, dict, dict]:
        """The module's loss inputs on one batch: tensors, inference and generative outputs."""
        x = batch[TENSORS.X_CONTROL].to(self.device)
        tensors = {TENSORS.X_CONTROL: x, TENSORS.Y: batch[TENSORS.Y].to(self.device)}
        inference = self.module.inference(x)
        codes = batch[TENSORS.CODES].to(self.device)
        generative = self.module.generative(inference["z"], codes, temperature, x=x)
        return (
            tensors,
            {k: inference[k] for k in ("mu", "var")},
            {k: generative[k] for k in ("y_hat", "x_hat")},
        )

    def _losses(self, parts: tuple[dict, dict, dict], temperature: float) -> dict[str, float]:
        """MMD, MSE, KL and L1 as :meth:`~scsena.module.SENAModule.loss` computes them."""
        out = self.module.loss(*parts, temperature=temperature)
        metrics = {k: float(out.extra_metrics[k]) for k in ("mmd", "mse", "kl", "l1")}
        return {"n_cells": int(out.n_obs_minibatch), **metrics}
