"""Human gene identifier mapping (Ensembl gene ids <-> HGNC symbols)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._io import GeneSets, _gene_table

logger = logging.getLogger(__name__)

_TARGETS = ("ensembl", "symbol")
_ENSEMBL_GENE = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_ENSEMBL_VERSION = re.compile(r"\.\d+$")


def gene_id_table() -> pd.DataFrame:
    """Return the bundled human gene identifier table.

    Returns
    -------
    pandas.DataFrame
        Columns ``entrez_id``, ``symbol``, ``ensembl_id`` (all str; ``NaN`` where an Entrez
        gene has no Ensembl id). An Entrez gene with several Ensembl ids has several rows.
        Source: Bioconductor ``org.Hs.eg.db`` 3.16 (Ensembl mapping of 2022-06-28).
    """
    return _gene_table().copy()


def _is_ensembl(genes: Iterable[str]) -> np.ndarray:
    return np.fromiter((bool(_ENSEMBL_GENE.match(str(g))) for g in genes), dtype=bool)


def guess_id_type(genes: Iterable[str]) -> str:
    """Guess whether gene ids are Ensembl gene ids or gene symbols.

    Parameters
    ----------
    genes
        Gene ids, e.g. ``adata.var_names``.

    Returns
    -------
    str
        ``"ensembl"`` if most ids look like Ensembl gene ids (``ENSG00000141510``, with or
        without a version suffix, any species prefix such as ``ENSMUSG``), else
        ``"symbol"``.

    Raises
    ------
    ValueError
        If ``genes`` is empty.
    """
    genes = list(genes)
    if not genes:
        raise ValueError("cannot guess the id type of an empty list of genes")
    return "ensembl" if _is_ensembl(genes).mean() >= 0.5 else "symbol"


@functools.lru_cache(maxsize=1)
def _lookup_tables() -> tuple[pd.Series, pd.Series]:
    """``symbol -> ensembl`` and ``ensembl -> symbol``, one deterministic target each.

    Among several candidates the one of the lowest Entrez id wins (the oldest, usually the
    canonical gene), ties broken by the lowest target id.
    """
    table = _gene_table().dropna(subset=["ensembl_id"]).copy()
    table["entrez_num"] = pd.to_numeric(table["entrez_id"], errors="coerce")
    sym2ens = table.sort_values(["entrez_num", "ensembl_id"]).drop_duplicates("symbol")
    ens2sym = table.sort_values(["entrez_num", "symbol"]).drop_duplicates("ensembl_id")
    return (
        pd.Series(sym2ens["ensembl_id"].to_numpy(), index=sym2ens["symbol"].to_numpy()),
        pd.Series(ens2sym["symbol"].to_numpy(), index=ens2sym["ensembl_id"].to_numpy()),
    )


@dataclass(repr=False, eq=False)
class GeneIdMapping:
    """Result of :func:`map_gene_ids`.

    Attributes
    ----------
    mapping
        Index: the input genes (in input order); values: the mapped id or ``NaN``.
    n_mapped
        Number of input genes that received an id.
    n_total
        Number of input genes.
    unmapped
        Input genes without a mapped id, in input order.
    to
        Target id type.
    """

    mapping: pd.Series
    n_mapped: int
    n_total: int
    unmapped: list[str] = field(default_factory=list)
    to: str = "ensembl"

    @property
    def fraction_mapped(self) -> float:
        """Share of input genes that were mapped (0 for an empty input)."""
        return self.n_mapped / self.n_total if self.n_total else 0.0

    def summary(self) -> str:
        """One line: ``"mapped X of Y genes (Z%) to <id type>"``."""
        return (
            f"mapped {self.n_mapped:,} of {self.n_total:,} genes "
            f"({100 * self.fraction_mapped:.1f}%) to {self.to}"
        )

    def __repr__(self) -> str:
        return f"GeneIdMapping({self.summary()})"

    def to_dict(self) -> dict[str, str]:
        """Return the mapped genes only, as input id -> target id."""
        mapped = self.mapping.dropna()
        return dict(zip(mapped.index, mapped.to_numpy()))


def _check_target(to: str) -> str:
    if to not in _TARGETS:
        raise ValueError(f"to must be one of {list(_TARGETS)}, got {to!r}")
    return to


def _map_array(genes: np.ndarray, to: str) -> np.ndarray:
    """Map an object array of gene ids; unmapped entries are ``NaN``."""
    sym2ens, ens2sym = _lookup_tables()
    out = np.full(len(genes), np.nan, dtype=object)
    is_ens = _is_ensembl(genes)
    if is_ens.any():
        ens = pd.Index(genes[is_ens]).str.replace(_ENSEMBL_VERSION, "", regex=True)
        out[is_ens] = ens.to_numpy() if to == "ensembl" else ens2sym.reindex(ens).to_numpy()
    sym = ~is_ens
    if sym.any():
        names = genes[sym]
        out[sym] = names if to == "symbol" else sym2ens.reindex(names).to_numpy()
    return out


def map_gene_ids(genes: Iterable[str], to: str = "ensembl") -> GeneIdMapping:
    """Map human gene ids between Ensembl gene ids and HGNC symbols.

    Each gene is routed by its own form: Ensembl ids (version suffixes such as ``.17`` are
    stripped) are mapped through the bundled table to symbols, anything else is looked up
    as a symbol. Ids already of the target type are returned as they are (Ensembl ids
    without their version). When a gene has several candidates the choice is deterministic:
    the candidate of the lowest Entrez id, then the lowest target id. The result is logged
    at INFO level.

    Parameters
    ----------
    genes
        Gene ids, e.g. ``adata.var_names``.
    to
        Target id type, ``"ensembl"`` or ``"symbol"``.

    Returns
    -------
    GeneIdMapping
        The mapping (a :class:`pandas.Series` indexed by the input genes), counts and the
        unmapped genes; ``print`` it for ``"mapped X of Y genes (Z%)"``.

    Examples
    --------
    >>> from scsena import gene_sets as gs
    >>> gs.map_gene_ids(["TP53", "NOT_A_GENE"], to="ensembl")
    GeneIdMapping(mapped 1 of 2 genes (50.0%) to ensembl)
    """
    _check_target(to)
    arr = np.asarray([str(g) for g in genes], dtype=object)
    mapped = _map_array(arr, to)
    series = pd.Series(mapped, index=pd.Index(arr, name="input"), name=to, dtype=object)
    missing = series.isna().to_numpy()
    result = GeneIdMapping(
        mapping=series,
        n_mapped=int((~missing).sum()),
        n_total=len(arr),
        unmapped=arr[missing].tolist(),
        to=to,
    )
    logger.info("map_gene_ids: %s", result.summary())
    return result


def map_gene_sets(gene_sets: Mapping[str, Iterable[str]], to: str = "ensembl") -> GeneSets:
    """Map the member ids of gene sets to another id type.

    Parameters
    ----------
    gene_sets
        Set name -> member gene ids (Ensembl ids or symbols).
    to
        Target id type, ``"ensembl"`` or ``"symbol"``.

    Returns
    -------
    dict
        Set name -> sorted unique mapped ids; unmapped members are dropped (a set may become
        empty). How many distinct member genes were mapped is logged at INFO level.
    """
    _check_target(to)
    names = list(gene_sets.keys())
    members = [list(gene_sets[n]) for n in names]
    universe = np.asarray(sorted({str(g) for m in members for g in m}), dtype=object)
    mapped = pd.Series(_map_array(universe, to), index=universe, dtype=object)
    n_mapped = int(mapped.notna().sum())
    pct = 100 * n_mapped / len(universe) if len(universe) else 0.0
    logger.info(
        "map_gene_sets: mapped %s of %s distinct member genes (%.1f%%) to %s",
        f"{n_mapped:,}",
        f"{len(universe):,}",
        pct,
        to,
    )
    lookup = mapped.dropna().to_dict()
    out: GeneSets = {}
    for name, genes in zip(names, members):
        out[str(name)] = sorted({lookup[g] for g in map(str, genes) if g in lookup})
    return out
