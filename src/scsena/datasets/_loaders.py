"""Readers for the real data sets used by SENA, normalised to the package's schema.

Every reader returns an :class:`~anndata.AnnData` whose ``obs["guide_ids"]`` follows
the canonical perturbation schema (``""`` control, ``"A"`` single, ``"A,B"`` double),
whose ``var["gene_symbols"]`` holds gene symbols, and whose
``uns["scsena_dataset"]`` records the data set's name and its reference held-out
single perturbations.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from scsena._constants import ADATA_KEYS, NORMAN_HELDOUT
from scsena.data import normalise_labels
from scsena.gene_sets import map_gene_ids

from ._download import CPA_BINARIES_URL, NORMAN2019_MEMBER, fetch_tar_member

logger = logging.getLogger(__name__)

#: Canonical perturbation column written by every reader.
LABEL_KEY = "guide_ids"
#: Key of the data-set description in ``adata.uns``.
DATASET_UNS_KEY = ADATA_KEYS.DATASET
#: Reference held-out single perturbations of the Wessel 2023 HEK293FT screen.
WESSEL_HELDOUT = ("CD46", "CD55", "CD71")

# Known layouts of the label column: column -> (layout name, control value, delimiter).
_NORMAN_LAYOUTS = {
    "guide_ids": ("cpa", "", ","),
    "perturbation_name": ("pertpy", "control", "+"),
}
_ENSEMBL_COLUMNS = ("ensembl_id", "ensembl_ids", "ensemble_id", "gene_ids", "gene_id")
_COUNTS_MAX = 20.0


def _to_canonical(labels: pd.Series, control_value: str, delimiter: str, **kwargs) -> pd.Series:
    """Convert labels to the canonical schema (single place to change the convention)."""
    out = normalise_labels(labels, control_value=control_value, delimiter=delimiter, **kwargs)
    return pd.Series(pd.Categorical(out.to_numpy(dtype=object)), index=labels.index, name=LABEL_KEY)


def _read_h5ad(path: str | os.PathLike, what: str, hint: str) -> ad.AnnData:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {str(path)!r}. {hint}")
    return ad.read_h5ad(path)


def _missing_columns_error(adata: ad.AnnData, what: str, expected: str) -> ValueError:
    found = ", ".join(map(repr, adata.obs.columns)) or "none"
    return ValueError(
        f"{what}: cannot find the perturbation labels. Expected {expected}; "
        f"found obs columns: {found}."
    )


def _looks_ensembl(names: pd.Index) -> bool:
    names = pd.Index(names).astype(str)
    if len(names) == 0:
        return False
    return float(np.mean(names.str.match(r"^ENS[A-Z]*G\d+"))) > 0.9


def _annotate_genes(adata: ad.AnnData, info: dict) -> None:
    """Add ``var["gene_symbols"]`` and, for symbol var_names, ``var["ensembl_id"]``."""
    names = adata.var_names.astype(str)
    if _looks_ensembl(names):
        info["var_names"] = "ensembl"
        if "gene_symbols" not in adata.var.columns:
            symbols = map_gene_ids(names, to="symbol").mapping.to_numpy(dtype=object)
            missing = pd.isna(symbols)
            symbols[missing] = np.asarray(names, dtype=object)[missing]
            adata.var["gene_symbols"] = symbols
        return
    info["var_names"] = "symbol"
    if "gene_symbols" not in adata.var.columns:
        adata.var["gene_symbols"] = np.asarray(names, dtype=object)
    ens = None
    for col in _ENSEMBL_COLUMNS:
        if col in adata.var.columns and _looks_ensembl(pd.Index(adata.var[col].astype(str))):
            ens = adata.var[col].astype(str).str.replace(r"\.\d+$", "", regex=True)
            ens = ens.where(ens.str.match(r"^ENS[A-Z]*G\d+$"), "").to_numpy(dtype=object)
            source = f"var[{col!r}]"
            break
    if ens is None:
        ens = map_gene_ids(names, to="ensembl").mapping.fillna("").to_numpy(dtype=object)
        source = "the bundled gene table"
    adata.var["ensembl_id"] = ens
    n_mapped = int((ens != "").sum())
    info["n_genes_ensembl"] = n_mapped
    logger.info(
        "%d of %d gene symbols have an Ensembl id (from %s), in var['ensembl_id']; the %d "
        "others ('') belong to no GO gene set.",
        n_mapped,
        adata.n_vars,
        source,
        adata.n_vars - n_mapped,
    )


def _warn_if_counts(adata: ad.AnnData, what: str, n_rows: int = 2000) -> None:
    """Warn when ``X`` looks like raw counts rather than log-normalised expression."""
    X = adata.X
    if X is None or adata.n_obs == 0 or adata.n_vars == 0:
        return
    block = X[: min(n_rows, adata.n_obs)]
    if sparse.issparse(block):
        values = np.asarray(block.data)
    else:
        values = np.asarray(block).ravel()
    if values.size == 0:
        return
    vmax = float(values.max())
    integer = bool(np.all(np.mod(values, 1) == 0))
    if (integer and vmax > 0) or vmax > _COUNTS_MAX:
        kind = "raw counts" if integer else "not log-transformed"
        warnings.warn(
            f"{what}: adata.X looks {kind} (values up to {vmax:g}), while SENA models "
            "log-normalised expression. Normalise it first, e.g. "
            "`adata.layers['counts'] = adata.X.copy(); "
            "sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata)`.",
            UserWarning,
            stacklevel=3,
        )


def norman2019(
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    url: str = CPA_BINARIES_URL,
    progress: bool = True,
) -> ad.AnnData:
    """Norman et al. (2019) K562 CRISPRa Perturb-seq screen, single and double perturbations.

    Reads either layout of the data:

    - CPA's preprocessed ``Norman2019_raw.h5ad`` (``obs["guide_ids"]`` with ``""``
      for control cells and ``"A,B"`` for doubles, Ensembl ``var_names``, 5,000
      highly variable genes, log-normalised ``X``), the file SENA uses;
    - pertpy's ``norman_2019`` (``obs["perturbation_name"]`` with ``"control"`` and
      ``"A+B"``, gene-symbol ``var_names``). Symbols are kept as ``var_names`` and
      mapped to Ensembl ids in ``var["ensembl_id"]`` (``""`` when unmapped).

    The layout is detected from the obs columns. Labels are normalised to the
    canonical schema in ``obs["guide_ids"]`` (original columns are kept).

    Parameters
    ----------
    path
        Local ``.h5ad`` file. ``None`` uses the cached copy of CPA's file, downloading
        it on first use from ``url`` (only ``datasets/Norman2019_raw.h5ad`` is
        extracted from the archive).
    cache_dir
        Download cache; default ``$SCSENA_CACHE_DIR`` or ``~/.cache/scsena``.
    url
        Address of CPA's data archive.
    progress
        Show a progress bar while downloading.

    Returns
    -------
    The data, with ``obs["guide_ids"]``, ``var["gene_symbols"]`` and
    ``uns["scsena_dataset"]`` (``name``, ``layout``, ``heldout``: the reference
    held-out single perturbations ETS2, SGK1, POU3F2, TBX2, CBL, MAPK1, CDKN1C,
    S1PR2, PTPN1, MAP2K6, COL1A1).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ConnectionError
        When no path is given, the file is not cached and cannot be downloaded.
    ValueError
        When the file has none of the expected label columns.

    Warns
    -----
    UserWarning
        When ``X`` looks like raw counts (pertpy's layout stores counts).
    """
    what = "Norman 2019"
    if path is None:
        path = _cached_norman_file(url, cache_dir, progress)
    adata = _read_h5ad(
        path,
        what,
        "Pass the path of CPA's Norman2019_raw.h5ad or of pertpy's norman_2019 file, or "
        "call `norman2019()` without a path to use the download cache.",
    )
    column = _norman_label_column(adata, what)
    layout, control_value, delimiter = _NORMAN_LAYOUTS[column]
    adata.obs[LABEL_KEY] = _to_canonical(adata.obs[column], control_value, delimiter)
    info: dict = {"name": "norman2019", "layout": layout, "label_key": column}
    _annotate_genes(adata, info)
    info["heldout"] = list(NORMAN_HELDOUT)
    adata.uns[DATASET_UNS_KEY] = info
    _warn_if_counts(adata, what)
    return adata


def _cached_norman_file(
    url: str, cache_dir: str | os.PathLike | None, progress: bool
) -> Path:
    """CPA's Norman 2019 file from the cache, downloaded on first use."""
    return fetch_tar_member(
        url,
        NORMAN2019_MEMBER,
        Path(NORMAN2019_MEMBER).name,
        cache_dir=cache_dir,
        progress=progress,
        how_to_offline=(
            "Download the archive on a connected machine, extract "
            f"{NORMAN2019_MEMBER} and pass it with `norman2019(path=...)` (or copy it "
            "into the cache directory, set by `cache_dir` or $SCSENA_CACHE_DIR)."
        ),
    )


def _norman_label_column(adata: ad.AnnData, what: str) -> str:
    """The label column of a known Norman 2019 layout (see ``_NORMAN_LAYOUTS``)."""
    column = next((c for c in _NORMAN_LAYOUTS if c in adata.obs.columns), None)
    if column is None:
        raise _missing_columns_error(
            adata,
            what,
            "obs['guide_ids'] (CPA layout: '' control, 'A,B') or obs['perturbation_name'] "
            "(pertpy layout: 'control', 'A+B')",
        )
    return column


def wessel2023_hek293(path: str | os.PathLike) -> ad.AnnData:
    """Wessel et al. (2023) HEK293FT CRISPR-Cas13 "carpool" screen.

    Expects ``obs["TargetGenes"]``, where ``"_"`` separates the targets of a
    combination and ``"NT"`` marks a non-targeting guide. Labels are normalised to
    the canonical schema in ``obs["guide_ids"]``: cells whose guides are all
    non-targeting become controls (``""``), and ``NT`` positions inside a
    combination are dropped (``"CD46_NT"`` becomes ``"CD46"``). Combinations of more
    than two targets are kept (they are neither singles nor doubles for SENA).

    Parameters
    ----------
    path
        Local ``.h5ad`` file (e.g. ``HEK293FT_carpool_processed.h5ad``).

    Returns
    -------
    The data, with ``obs["guide_ids"]``, ``var["gene_symbols"]`` (and
    ``var["ensembl_id"]`` when ``var_names`` are symbols) and
    ``uns["scsena_dataset"]`` (``heldout``: CD46, CD55, CD71).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When ``obs["TargetGenes"]`` is missing.

    Warns
    -----
    UserWarning
        When ``X`` looks like raw counts.
    """
    what = "Wessel 2023 HEK293FT"
    adata = _read_h5ad(path, what, "The file is not downloadable automatically; pass a local path.")
    if "TargetGenes" not in adata.obs.columns:
        raise _missing_columns_error(
            adata, what, "obs['TargetGenes'] ('NT' non-targeting, '_' between targets)"
        )
    adata.obs[LABEL_KEY] = _to_canonical(adata.obs["TargetGenes"], "NT", "_", max_targets=None)
    info: dict = {"name": "wessel2023_hek293", "layout": "carpool", "label_key": "TargetGenes"}
    _annotate_genes(adata, info)
    info["heldout"] = list(WESSEL_HELDOUT)
    adata.uns[DATASET_UNS_KEY] = info
    _warn_if_counts(adata, what)
    return adata
