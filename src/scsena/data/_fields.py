"""AnnData fields for the perturbation column and the gene-set mask.

The perturbation field parses the labels once at registration (so bad labels fail
at setup with a clear message) and keeps the vocabulary of single targets in the
state registry. The mask field points at ``adata.uns[mask_key]`` (genes x terms,
never sliced by cell) and keeps a copy of the mask in the state registry, so a
saved model carries it and can restore it onto a new AnnData with the same genes.
"""

from __future__ import annotations

import numpy as np
import rich.table
from anndata import AnnData
from scvi.data.fields import (
    BaseAnnDataField,
    CategoricalJointObsField,
    CategoricalObsField,
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLayerField,
    MuDataWrapper,
)
from scvi.data.fields._uns_field import BaseUnsField

from scsena._constants import REGISTRY_KEYS
from scsena.gene_sets import GeneSetMask

from ._mudata import GUIDE_LABEL_KEY, check_aligned_cells, labels_from_guides
from ._perturbations import (
    KIND_CONTROL,
    KIND_DOUBLE,
    KIND_OTHER,
    KIND_SINGLE,
    parse_perturbations,
)


def _obs_column(adata: AnnData, key: str):
    if key not in adata.obs.columns:
        candidates = [
            c
            for c in adata.obs.columns
            if adata.obs[c].dtype == object or str(adata.obs[c].dtype) == "category"
        ]
        raise KeyError(
            f"Perturbation column {key!r} not found in adata.obs. Pass the column holding "
            f"the perturbation labels as `perturbation_key`; text columns present: "
            f"{candidates[:20]}."
        )
    return adata.obs[key]


class PerturbationField(BaseAnnDataField):
    """Perturbation labels in ``adata.obs[perturbation_key]``.

    Parameters
    ----------
    obs_key
        Column with the labels.
    control_value
        Label of control cells.
    delimiter
        Separator between the targets of a combination.
    """

    def __init__(self, obs_key: str, control_value: str = "", delimiter: str = ","):
        super().__init__()
        self._attr_key = obs_key
        self.control_value = control_value
        self.delimiter = delimiter

    @property
    def registry_key(self) -> str:
        return REGISTRY_KEYS.PERTURBATION_KEY

    @property
    def attr_name(self) -> str:
        return "obs"

    @property
    def attr_key(self) -> str:
        return self._attr_key

    @property
    def is_empty(self) -> bool:
        return False

    def validate_field(self, adata: AnnData) -> None:
        """Check the column exists."""
        _obs_column(adata, self.attr_key)

    def _state(self, adata: AnnData, targets=None) -> dict:
        parsed = parse_perturbations(
            _obs_column(adata, self.attr_key),
            self.control_value,
            self.delimiter,
            targets=targets,
        )
        kinds = parsed.kind
        return {
            "control_value": self.control_value,
            "delimiter": self.delimiter,
            "targets": list(parsed.targets),
            "n_control": int((kinds == KIND_CONTROL).sum()),
            "n_single": int((kinds == KIND_SINGLE).sum()),
            "n_double": int((kinds == KIND_DOUBLE).sum()),
            "n_other": int((kinds == KIND_OTHER).sum()),
        }

    def register_field(self, adata: AnnData) -> dict:
        """Parse the labels and record the single targets."""
        super().register_field(adata)
        return self._state(adata)

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        """Parse the labels of new data against the model's targets."""
        super().transfer_field(state_registry, adata_target, **kwargs)
        self.validate_field(adata_target)
        return self._state(adata_target, targets=state_registry["targets"])

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {"n_targets": len(state_registry["targets"])}

    def view_state_registry(self, state_registry: dict) -> rich.table.Table | None:
        t = rich.table.Table(title=f"Perturbations (adata.obs['{self.attr_key}'])")
        t.add_column("cells")
        t.add_column("count")
        for k in ("n_control", "n_single", "n_double", "n_other"):
            t.add_row(k[2:], str(state_registry[k]))
        t.add_row("single targets", str(len(state_registry["targets"])))
        return t


class GeneSetMaskField(BaseUnsField):
    """Gene-set mask in ``adata.uns[uns_key]``.

    Written by :meth:`scsena.gene_sets.GeneSetMask.to_uns`.
    """

    def __init__(self, uns_key: str):
        super().__init__(REGISTRY_KEYS.MASK_KEY, uns_key, required=True)

    def _read(self, adata: AnnData) -> GeneSetMask:
        mask = GeneSetMask.from_uns(adata.uns[self.attr_key])
        if mask.n_genes != adata.n_vars or list(mask.var_names) != list(adata.var_names):
            raise ValueError(
                f"adata.uns[{self.attr_key!r}] holds a mask for {mask.n_genes} genes that "
                f"do not match adata.var_names ({adata.n_vars} genes). The mask must be "
                "built for these genes: run setup_anndata again after subsetting genes."
            )
        return mask

    def validate_field(self, adata: AnnData) -> None:
        """Check the mask exists and matches the genes."""
        super().validate_field(adata)
        if self.attr_key not in adata.uns:
            raise KeyError(
                f"No gene-set mask in adata.uns[{self.attr_key!r}]. Pass `gene_sets` to "
                "setup_anndata so it can build one."
            )
        self._read(adata)

    def register_field(self, adata: AnnData) -> dict:
        """Record the mask (kept with a saved model)."""
        super().register_field(adata)
        mask = self._read(adata)
        return {"terms": list(mask.terms), "n_terms": mask.n_terms, "mask": mask.to_uns()}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        """Use the model's mask on new data with the same genes."""
        if self.attr_key not in adata_target.uns:
            saved = GeneSetMask.from_uns(state_registry["mask"])
            if list(saved.var_names) != list(adata_target.var_names):
                raise ValueError(
                    "The new data's genes differ from the model's genes; subset and order "
                    "them as the model's (`adata[:, model_var_names]`)."
                )
            adata_target.uns[self.attr_key] = state_registry["mask"]
        state = self.register_field(adata_target)
        if state["terms"] != list(state_registry["terms"]):
            raise ValueError(
                f"adata.uns[{self.attr_key!r}] holds other gene sets than the model's "
                f"({state['n_terms']} vs {len(state_registry['terms'])} terms). Delete it to "
                "use the model's mask."
            )
        return state

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {"n_terms": int(state_registry["n_terms"])}

    def view_state_registry(self, state_registry: dict) -> rich.table.Table | None:
        t = rich.table.Table(title=f"Gene-set mask (adata.uns['{self.attr_key}'])")
        t.add_column("terms")
        t.add_row(str(state_registry["n_terms"]))
        return t


def mask_from_state(state_registry: dict) -> GeneSetMask:
    """The mask kept in a state registry."""
    return GeneSetMask.from_uns(state_registry["mask"])


def targets_from_state(state_registry: dict) -> list[str]:
    """The single targets kept in a state registry."""
    return [str(t) for t in np.asarray(state_registry["targets"]).tolist()]


def _check_covariate_column(adata: AnnData, key, role: str) -> None:
    """A covariate column exists and has no missing values (else a clear error)."""
    if not isinstance(key, str) or key not in adata.obs.columns:
        raise KeyError(
            f"{role} {key!r} is not a column of adata.obs; columns present: "
            f"{list(adata.obs.columns)[:20]}."
        )
    missing = int(adata.obs[key].isna().sum())
    if missing:
        raise ValueError(
            f"adata.obs[{key!r}] ({role}) has {missing} missing values; fill them (e.g. "
            f"`adata.obs[{key!r}] = adata.obs[{key!r}].astype(str)`) or drop those cells."
        )


def covariate_fields(
    adata: AnnData,
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
) -> list[BaseAnnDataField]:
    """scvi-tools fields for the batch and the categorical covariates, checked.

    Parameters
    ----------
    adata
        The AnnData being set up.
    batch_key
        Column of ``adata.obs`` with each cell's batch (lane, donor, replicate ...).
    categorical_covariate_keys
        Further categorical columns of ``adata.obs`` the decoder is conditioned on.

    Returns
    -------
    A :class:`~scvi.data.fields.CategoricalObsField` for the batch (registered as
    ``"batch"``) and a :class:`~scvi.data.fields.CategoricalJointObsField` for the
    covariates, each only when given.
    """
    if isinstance(categorical_covariate_keys, str):
        raise TypeError(
            "categorical_covariate_keys must be a list of column names, e.g. "
            f"[{categorical_covariate_keys!r}]."
        )
    fields: list[BaseAnnDataField] = []
    if batch_key is not None:
        _check_covariate_column(adata, batch_key, "batch_key")
        fields.append(CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
    keys = list(categorical_covariate_keys or [])
    for key in keys:
        _check_covariate_column(adata, key, "categorical_covariate_keys")
    if batch_key is not None and batch_key in keys:
        raise ValueError(
            f"{batch_key!r} is both the batch_key and a categorical covariate; give it once."
        )
    if keys:
        fields.append(CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, keys))
    return fields


def covariate_category_counts(registry: dict) -> list[int]:
    """Categories of each registered covariate (the batch first) in a model registry.

    Parameters
    ----------
    registry
        A model's registry (``model.registry_``), with the fields of
        :func:`covariate_fields` when a batch or covariates were registered.

    Returns
    -------
    The number of categories of the batch, then of each categorical covariate (empty
    when none was registered): the ``n_cats_per_covariate`` of
    :class:`~scsena.module.SENAModule`.
    """
    fields = registry["field_registries"]
    counts = []
    batch = fields.get(REGISTRY_KEYS.BATCH_KEY)
    if batch:
        counts.append(len(batch["state_registry"][CategoricalObsField.CATEGORICAL_MAPPING_KEY]))
    covs = fields.get(REGISTRY_KEYS.CAT_COVS_KEY)
    if covs:
        counts += [int(n) for n in covs["state_registry"][CategoricalJointObsField.N_CATS_PER_KEY]]
    return counts


def check_known_categories(adata: AnnData, registry: dict) -> None:
    """Refuse data with a batch or covariate category the model was not trained on.

    The decoder has one input per category seen at training; a new category has none.

    Parameters
    ----------
    adata
        Data to use with the model (its ``obs`` holds the registered columns).
    registry
        The model's registry (``model.registry_``).

    Raises
    ------
    ValueError
        Naming the column, the unknown categories and the known ones.
    """
    fields = registry["field_registries"]
    known: dict[str, list] = {}
    batch = fields.get(REGISTRY_KEYS.BATCH_KEY)
    if batch:
        state = batch["state_registry"]
        known[state[CategoricalObsField.ORIGINAL_ATTR_KEY]] = list(
            state[CategoricalObsField.CATEGORICAL_MAPPING_KEY]
        )
    covs = fields.get(REGISTRY_KEYS.CAT_COVS_KEY)
    if covs:
        state = covs["state_registry"]
        for key in state[CategoricalJointObsField.FIELD_KEYS_KEY]:
            known[key] = list(state[CategoricalJointObsField.MAPPINGS_KEY][key])
    for key, categories in known.items():
        if key not in adata.obs.columns:
            continue  # scvi-tools names the missing column
        new = sorted(set(map(str, adata.obs[key].unique())) - set(map(str, categories)))
        if new:
            names = [str(c) for c in categories]
            raise ValueError(
                f"adata.obs[{key!r}] holds {new[:10]}, which the model was not trained on; "
                f"its decoder knows {names[:20]}. Keep those cells "
                f"(`adata[adata.obs[{key!r}].isin({names[:20]!r})].copy()`), or train a model "
                "that includes them."
            )


def _guide_labels(guide_mod: str, target_key: str | None):
    """Registration step: the RNA cells' labels from the guide modality, into its ``obs``."""

    def preregister(field, mdata) -> None:
        rna = field.get_modality(mdata)
        rna.obs[GUIDE_LABEL_KEY] = labels_from_guides(
            mdata.mod[guide_mod], rna.obs_names, target_key=target_key
        ).to_numpy()

    return preregister


def mudata_fields(
    mdata,
    rna_mod: str,
    perturbation_mod_or_key: str,
    control_value: str = "",
    delimiter: str = ",",
    guide_target_key: str | None = None,
    layer: str | None = None,
    mask_key: str = "scsena_mask",
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
) -> list[BaseAnnDataField]:
    """scvi-tools MuData fields of a screen: RNA expression, perturbations, mask, covariates.

    Expression, mask, batch and covariates are read from the RNA modality. The
    perturbations come from a label column of the RNA modality or of ``mdata.obs``
    (whose cells must then be the RNA modality's), or from a guide modality: at
    registration every RNA cell gets the sorted targets of its guides (see
    :func:`labels_from_guides`), kept in the private column ``_scsena_guide_labels``.

    Parameters
    ----------
    mdata
        The MuData being set up.
    rna_mod
        Name of the RNA modality.
    perturbation_mod_or_key
        A guide modality, or a label column.
    control_value, delimiter
        Label conventions of a label column (a guide modality gives ``""`` and ``","``).
    guide_target_key
        Column of the guide modality's ``var`` with each guide's target.
    layer
        Layer of the RNA modality with log-normalised expression (``None``: ``X``).
    mask_key
        Key of the RNA modality's ``uns`` holding the gene-set mask.
    batch_key, categorical_covariate_keys
        Columns of the RNA modality's ``obs`` (see :func:`covariate_fields`).
    """
    rna = mdata.mod[rna_mod]
    key = perturbation_mod_or_key
    if key in mdata.mod and key != rna_mod:
        wrapper = MuDataWrapper(PerturbationField, _guide_labels(key, guide_target_key))
        perturbations = wrapper(GUIDE_LABEL_KEY, "", ",", mod_key=rna_mod, mod_required=True)
    elif key in rna.obs:
        wrapper = MuDataWrapper(PerturbationField)
        perturbations = wrapper(key, control_value, delimiter, mod_key=rna_mod, mod_required=True)
    elif key in mdata.obs:
        check_aligned_cells(mdata, rna_mod)
        perturbations = MuDataWrapper(PerturbationField)(key, control_value, delimiter)
    else:
        raise KeyError(
            f"{key!r} is neither a modality nor a column of mdata.obs or "
            f"mdata[{rna_mod!r}].obs. Modalities: {list(mdata.mod)}."
        )
    fields = [
        MuDataLayerField(
            REGISTRY_KEYS.X_KEY, layer, mod_key=rna_mod, is_count_data=False, mod_required=True
        ),
        perturbations,
        MuDataWrapper(GeneSetMaskField)(mask_key, mod_key=rna_mod, mod_required=True),
    ]
    for field in covariate_fields(rna, batch_key, categorical_covariate_keys):
        if isinstance(field, CategoricalObsField):
            fields.append(
                MuDataCategoricalObsField(
                    REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=rna_mod, mod_required=True
                )
            )
        else:
            fields.append(
                MuDataCategoricalJointObsField(
                    REGISTRY_KEYS.CAT_COVS_KEY,
                    list(categorical_covariate_keys),
                    mod_key=rna_mod,
                    mod_required=True,
                )
            )
    return fields
