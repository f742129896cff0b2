"""MuData input: a perturbation column or a guide modality next to the RNA modality."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Guide targets that mark non-targeting guides (case-insensitive).
NON_TARGETING = ("non-targeting", "nontargeting", "nt", "control", "ctrl", "safe-targeting")

#: Column of the RNA modality that registration fills when labels come from a guide
#: modality (private, as scvi-tools' own ``_scvi_*`` columns).
GUIDE_LABEL_KEY = "_scsena_guide_labels"


def labels_from_guides(
    guides,
    obs_names: pd.Index,
    target_key: str | None = None,
    non_targeting: Sequence[str] = NON_TARGETING,
    min_count: float = 1,
) -> pd.Series:
    """Perturbation labels from a cells x guides modality.

    A cell carries every guide with at least ``min_count`` counts; its label joins
    the sorted distinct targets of its guides with ``","`` (``""`` when it has none,
    or only non-targeting guides).

    Parameters
    ----------
    guides
        AnnData of guide counts (or a binary assignment).
    obs_names
        Cells to label (the RNA modality's).
    target_key
        Column of ``guides.var`` with each guide's target gene; ``None`` uses the
        guide names.
    non_targeting
        Targets that mark non-targeting guides.
    min_count
        Count threshold for assigning a guide.

    Returns
    -------
    Labels indexed by ``obs_names``.
    """
    missing = obs_names.difference(guides.obs_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} RNA cells (e.g. {list(missing[:3])}) are absent from the guide "
            "modality; subset the MuData to cells present in both (`mu.pp.intersect_obs(mdata)`)."
        )
    if target_key is None:
        targets = np.asarray(guides.var_names, dtype=object)
    elif target_key in guides.var:
        targets = guides.var[target_key].astype(str).to_numpy(dtype=object)
    else:
        raise KeyError(
            f"{target_key!r} is not a column of the guide modality's var; columns: "
            f"{list(guides.var.columns)}."
        )
    nt = {t.lower() for t in non_targeting}
    keep = np.array([str(t).lower() not in nt for t in targets])
    x = guides[obs_names].X
    x = sp.csr_matrix(x) if sp.issparse(x) else sp.csr_matrix(np.asarray(x))
    hit = (x >= min_count).astype(np.int8).tocsr()
    hit = hit[:, np.flatnonzero(keep)].tocsr()
    kept = targets[keep]
    labels = []
    for i in range(hit.shape[0]):
        cols = hit.indices[hit.indptr[i] : hit.indptr[i + 1]]
        labels.append(",".join(sorted(set(kept[cols].tolist()))))
    return pd.Series(labels, index=obs_names, name=GUIDE_LABEL_KEY)


def rna_modality(data, rna_mod: str | None = None):
    """The RNA modality of a MuData; an AnnData as is.

    Parameters
    ----------
    data
        AnnData, or MuData registered with ``SENAVAE.setup_mudata``.
    rna_mod
        Name of the RNA modality (a model knows it: ``model.registry_["setup_args"]``).

    Raises
    ------
    ValueError
        For a MuData without ``rna_mod``, or a modality it does not have.
    """
    mod = getattr(data, "mod", None)
    if mod is None:
        return data
    if rna_mod is None or rna_mod not in mod:
        raise ValueError(
            f"Name the RNA modality of this MuData (modalities: {list(mod)}), or go "
            "through the model: `model.data_splitter(mdata).adata` is the RNA modality it reads."
        )
    return mod[rna_mod]


def check_aligned_cells(mdata, rna_mod: str) -> None:
    """The RNA modality's cells are the MuData's, in the same order.

    Raises
    ------
    ValueError
        Naming the fix (``mu.pp.intersect_obs(mdata)``).
    """
    rna = mdata.mod[rna_mod]
    if not rna.obs_names.equals(mdata.obs_names):
        raise ValueError(
            f"The cells of mdata[{rna_mod!r}] are not the MuData's cells ({rna.n_obs} vs "
            f"{mdata.n_obs}); keep the cells present in every modality first: "
            "`mu.pp.intersect_obs(mdata)`."
        )
