"""Tables bundled with the package: GO BP terms, DAG and annotations, gene ids, SENA's terms.

Each table is read once (cached) from ``scsena/data``.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd


def data_file(*parts: str) -> Any:
    """Return a traversable handle on a file bundled in ``scsena/data``."""
    return resources.files("scsena").joinpath("data", *parts)


def read_bundled_tsv(*parts: str) -> pd.DataFrame:
    """Read a bundled tab-separated table (gzip if the name ends in ``.gz``), as strings."""
    handle = data_file(*parts)
    with handle.open("rb") as fh:
        compression = "gzip" if parts[-1].endswith(".gz") else None
        return pd.read_csv(fh, sep="\t", dtype=str, compression=compression, keep_default_na=False)


@functools.lru_cache(maxsize=1)
def go_terms_table() -> pd.DataFrame:
    """GO BP terms of the bundled release: columns ``go_id``, ``name``, sorted by id."""
    df = read_bundled_tsv("go", "go_bp_terms.tsv.gz")
    return df.sort_values("go_id", ignore_index=True)


@functools.lru_cache(maxsize=1)
def go_parents_table() -> pd.DataFrame:
    """Edges of the GO BP DAG: columns ``go_id``, ``parent_id``, ``relationship``."""
    return read_bundled_tsv("go", "go_bp_parents.tsv.gz")


@functools.lru_cache(maxsize=1)
def go_direct_table() -> pd.DataFrame:
    """Direct human GO BP annotations: columns ``entrez_id``, ``go_id``, ``evidence``."""
    return read_bundled_tsv("go", "hs_go_bp_direct.tsv.gz")


@functools.lru_cache(maxsize=1)
def gene_table() -> pd.DataFrame:
    """Human gene identifiers: columns ``entrez_id``, ``symbol``, ``ensembl_id`` (NaN if none)."""
    df = read_bundled_tsv("go", "hs_genes.tsv.gz")
    df["ensembl_id"] = df["ensembl_id"].replace("", np.nan)
    return df


@functools.lru_cache(maxsize=1)
def alias_table() -> pd.DataFrame:
    """Previous and alternative human gene symbols: columns ``entrez_id``, ``alias``.

    Aliases that are the current symbol of some gene are not in the table (a current symbol
    always names its own gene); an alias can name several genes.
    """
    return read_bundled_tsv("go", "hs_gene_aliases.tsv.gz")


@functools.lru_cache(maxsize=1)
def sena_terms_table() -> pd.DataFrame:
    """SENA's GO BP term list: columns ``PathwayID``, ``topGO``."""
    return read_bundled_tsv("sena", "sena_go_terms.tsv")
