"""Checks and gene-set mask shared by ``SENAVAE.setup_anndata`` and ``setup_mudata``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from scsena import gene_sets as gs
from scsena.data import check_expression, warn_constant_genes


def prepare_expression(
    adata: ad.AnnData,
    layer: str | None,
    where: str,
    allow_large_values: bool,
    setup_args: dict,
    mask_args: tuple,
    kwargs: dict,
) -> None:
    """Check names, layer and values of ``adata`` and build its gene-set mask.

    ``mask_args`` is ``(gene_sets, min_genes, mask_key, keep_terms)``. A gene-set
    argument that is not a name is kept out of the registry (``setup_args``): the mask
    itself is kept by the mask field.
    """
    gene_sets = mask_args[0]
    if not isinstance(gene_sets, (str, type(None))):
        setup_args["gene_sets"] = str(gene_sets) if isinstance(gene_sets, Path) else None
    check_names_and_layer(adata, layer)
    matrix = adata.X if layer is None else adata.layers[layer]
    check_expression(matrix, where, max_value=None if allow_large_values else LOG_MAX)
    warn_constant_genes(matrix)
    register_mask(adata, *mask_args, kwargs)


#: Largest value accepted as log-normalised expression without ``allow_large_values``
#: (log1p of counts per 10,000 stays below 10, of counts per million below 14).
LOG_MAX = 50.0


def check_gene_order(data_genes: pd.Index, model_genes: Sequence[str]) -> None:
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


def check_names_and_layer(adata: ad.AnnData, layer: str | None) -> None:
    """Unique gene and cell names, and an existing layer (else a clear error)."""
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


def register_mask(adata, gene_sets, min_genes, mask_key, keep_terms, kwargs) -> None:
    """Build the gene-set mask into ``adata.uns[mask_key]`` (or check the one there)."""
    source_registry = kwargs.get("source_registry")
    if mask_key in adata.uns and not (
        isinstance(adata.uns[mask_key], Mapping) and "format" in adata.uns[mask_key]
    ):
        raise ValueError(
            f"adata.uns[{mask_key!r}] exists and is not a scsena gene-set mask; pass "
            "another `mask_key`."
        )
    if gene_sets is not None and source_registry is None:
        mask = gs.build_mask(adata.var_names, gene_sets, min_genes=min_genes, keep_terms=keep_terms)
        adata.uns[mask_key] = mask.to_uns()
    elif gene_sets is None and mask_key not in adata.uns and source_registry is None:
        raise ValueError(
            f"gene_sets=None reuses adata.uns[{mask_key!r}], which is absent; pass "
            "gene sets (e.g. gene_sets='go_bp_sena')."
        )
