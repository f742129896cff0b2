"""Human gene identifier mapping (Ensembl gene ids <-> HGNC symbols)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._bundled import alias_table, gene_table
from ._io import GeneSets

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
    return gene_table().copy()


def gene_alias_table() -> pd.DataFrame:
    """Return the bundled table of previous and alternative human gene symbols.

    Returns
    -------
    pandas.DataFrame
        Columns ``alias``, ``entrez_id`` and ``symbol`` (the gene's current symbol), one row
        per alias and gene; an alias can name several genes (e.g. ``SEPT2``: ``SEPTIN2`` and
        ``SEPTIN6``). Aliases that are the current symbol of some gene are left out. Source:
        Bioconductor ``org.Hs.eg.db`` 3.16, the release of the bundled GO annotations.
    """
    genes = gene_table()[["entrez_id", "symbol"]].drop_duplicates()
    table = alias_table().merge(genes, on="entrez_id", how="left")
    return table[["alias", "entrez_id", "symbol"]].reset_index(drop=True)


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
    table = gene_table().dropna(subset=["ensembl_id"]).copy()
    table["entrez_num"] = pd.to_numeric(table["entrez_id"], errors="coerce")
    sym2ens = table.sort_values(["entrez_num", "ensembl_id"]).drop_duplicates("symbol")
    ens2sym = table.sort_values(["entrez_num", "symbol"]).drop_duplicates("ensembl_id")
    return (
        pd.Series(sym2ens["ensembl_id"].to_numpy(), index=sym2ens["symbol"].to_numpy()),
        pd.Series(ens2sym["symbol"].to_numpy(), index=ens2sym["ensembl_id"].to_numpy()),
    )


#: Status of an input gene in a :class:`GeneIdMapping`.
STATUSES: tuple[str, ...] = ("direct", "alias", "ambiguous", "unmapped")


@functools.lru_cache(maxsize=1)
def _alias_lookup() -> tuple[pd.Index, pd.Series, pd.Series]:
    """Current symbols; alias -> its one current symbol; alias -> its candidates (sorted).

    An alias naming one gene is in the second series, one naming several genes (e.g.
    ``SEPT2``: ``SEPTIN2`` and ``SEPTIN6``) in the third, as a tuple of current symbols.
    """
    genes = gene_table()[["entrez_id", "symbol"]].drop_duplicates()
    current = pd.Index(genes["symbol"].unique())
    pairs = alias_table().merge(genes, on="entrez_id")[["alias", "symbol"]]
    pairs = pairs.drop_duplicates().sort_values(["alias", "symbol"])
    n = pairs.groupby("alias")["symbol"].transform("size")
    single = pairs[n == 1]
    multi = pairs[n > 1].groupby("alias", sort=True)["symbol"].agg(tuple)
    return current, pd.Series(single["symbol"].to_numpy(), index=single["alias"].to_numpy()), multi


def _resolve_symbols(
    names: np.ndarray, aliases: bool = True
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, ...]]]:
    """Current symbol (``NaN`` if none), status and ambiguous candidates of each symbol."""
    current, single, multi = _alias_lookup()
    out = np.full(len(names), np.nan, dtype=object)
    status = np.full(len(names), "unmapped", dtype=object)
    candidates: list[tuple[str, ...]] = [()] * len(names)
    direct = pd.Index(names).isin(current)
    out[direct], status[direct] = names[direct], "direct"
    if aliases:
        rest = np.flatnonzero(~direct)
        target = single.reindex(names[rest]).to_numpy()
        hit = pd.notna(target)
        out[rest[hit]], status[rest[hit]] = target[hit], "alias"
        many = multi.reindex(names[rest]).to_numpy()
        for i, cands in zip(rest, many):
            if isinstance(cands, tuple):
                status[i], candidates[i] = "ambiguous", cands
    return out, status, candidates


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
        Input genes without a mapped id (ambiguous aliases included), in input order.
    to
        Target id type.
    status
        Index: the input genes; values: ``"direct"`` (a current symbol or an Ensembl id of
        the bundled table), ``"alias"`` (a previous or alternative symbol of exactly one
        gene, mapped through its current symbol), ``"ambiguous"`` (an alias of several
        genes, or one whose gene is already named by another input: not mapped) or
        ``"unmapped"`` (unknown, or without an id of the target type).
    candidates
        Ambiguous input -> the current symbols it could stand for.
    """

    mapping: pd.Series
    n_mapped: int
    n_total: int
    unmapped: list[str] = field(default_factory=list)
    to: str = "ensembl"
    status: pd.Series | None = None
    candidates: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is None:
            direct = np.where(self.mapping.notna().to_numpy(), "direct", "unmapped")
            self.status = pd.Series(direct, index=self.mapping.index, name="status")

    @property
    def fraction_mapped(self) -> float:
        """Share of input genes that were mapped (0 for an empty input)."""
        return self.n_mapped / self.n_total if self.n_total else 0.0

    def counts(self) -> dict[str, int]:
        """Number of input genes per status (``direct``, ``alias``, ``ambiguous``, ``unmapped``)."""
        values = self.status.value_counts()
        return {s: int(values.get(s, 0)) for s in STATUSES}

    @property
    def aliased(self) -> dict[str, str]:
        """Inputs mapped through an alias, as input -> current symbol (or target id)."""
        hit = (self.status == "alias").to_numpy()
        return dict(zip(self.mapping.index[hit], self.mapping.to_numpy()[hit]))

    @property
    def ambiguous(self) -> dict[str, list[str]]:
        """Ambiguous inputs (not mapped) -> the current symbols they could stand for."""
        return dict(self.candidates)

    def report(self) -> pd.DataFrame:
        """One row per input gene: ``status``, ``mapped`` id and ambiguous ``candidates``.

        Returns
        -------
        pandas.DataFrame
            Indexed by the input genes, in input order.
        """
        cands = [", ".join(self.candidates.get(g, [])) for g in self.mapping.index]
        return pd.DataFrame(
            {
                "status": self.status.to_numpy(),
                "mapped": self.mapping.to_numpy(),
                "candidates": cands,
            },
            index=self.mapping.index.copy(),
        )

    def summary(self) -> str:
        """One line: ``"mapped X of Y genes (Z%) to <id type>"``, then how, with examples."""
        c = self.counts()
        text = (
            f"mapped {self.n_mapped:,} of {self.n_total:,} genes "
            f"({100 * self.fraction_mapped:.1f}%) to {self.to}: {c['direct']:,} directly, "
            f"{c['alias']:,} through an alias"
        )
        if c["alias"]:
            text += f" ({_head(f'{a} -> {b}' for a, b in self.aliased.items())})"
        if c["ambiguous"]:
            amb = _head(f"{a}: {' or '.join(b)}" for a, b in self.candidates.items())
            text += f"; {c['ambiguous']:,} ambiguous, not mapped ({amb})"
        if c["unmapped"]:
            text += f"; {c['unmapped']:,} unknown"
        return text

    def __repr__(self) -> str:
        return f"GeneIdMapping({self.summary()})"

    def to_dict(self) -> dict[str, str]:
        """Return the mapped genes only, as input id -> target id."""
        mapped = self.mapping.dropna()
        return dict(zip(mapped.index, mapped.to_numpy()))


def _head(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _check_target(to: str) -> str:
    if to not in _TARGETS:
        raise ValueError(f"to must be one of {list(_TARGETS)}, got {to!r}")
    return to


def _map_array(
    genes: np.ndarray, to: str, aliases: bool = True
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, ...]]]:
    """Map an object array of gene ids: mapped ids (``NaN`` if none), status, candidates."""
    sym2ens, ens2sym = _lookup_tables()
    out = np.full(len(genes), np.nan, dtype=object)
    status = np.full(len(genes), "unmapped", dtype=object)
    candidates: list[tuple[str, ...]] = [()] * len(genes)
    is_ens = _is_ensembl(genes)
    if is_ens.any():
        ens = pd.Index(genes[is_ens]).str.replace(_ENSEMBL_VERSION, "", regex=True)
        out[is_ens] = ens.to_numpy() if to == "ensembl" else ens2sym.reindex(ens).to_numpy()
    sym = np.flatnonzero(~is_ens)
    if sym.size:
        current, sym_status, sym_cands = _resolve_symbols(genes[sym], aliases)
        out[sym] = current if to == "symbol" else sym2ens.reindex(current).to_numpy()
        status[sym] = sym_status
        for i, c in zip(sym, sym_cands):
            candidates[i] = c
    mapped = pd.notna(out)
    status[is_ens & mapped] = "direct"
    status[~mapped & (status != "ambiguous")] = "unmapped"
    return out, status, candidates


def map_gene_ids(genes: Iterable[str], to: str = "ensembl", aliases: bool = True) -> GeneIdMapping:
    """Map human gene ids between Ensembl gene ids and HGNC symbols.

    Each gene is routed by its own form: Ensembl ids (version suffixes such as ``.17`` are
    stripped) are mapped through the bundled table to symbols, anything else is looked up
    as a symbol. A current symbol is used as it is; a previous or alternative symbol (e.g.
    ``MARCH8``, now ``MARCHF8``) is first replaced by the current symbol of its gene, from
    the bundled alias table (Bioconductor ``org.Hs.eg.db`` 3.16); an alias that names
    several genes (e.g. ``SEPT2``: ``SEPTIN2`` or ``SEPTIN6``) is never mapped and is
    reported as ambiguous. Ensembl ids already of the target type are returned without their
    version. When a gene has several candidates the choice is deterministic: the candidate
    of the lowest Entrez id, then the lowest target id. The result is logged at INFO level.

    Parameters
    ----------
    genes
        Gene ids, e.g. ``adata.var_names``.
    to
        Target id type, ``"ensembl"`` or ``"symbol"`` (``"symbol"`` maps outdated symbols
        to current ones).
    aliases
        Map previous and alternative symbols through the alias table; ``False`` maps
        current symbols only.

    Returns
    -------
    GeneIdMapping
        The mapping (a :class:`pandas.Series` indexed by the input genes), counts, the
        status of every gene (:meth:`GeneIdMapping.report`: mapped directly, through an
        alias, ambiguous or unmapped) and the unmapped genes; ``print`` it for
        ``"mapped X of Y genes (Z%) ..."``.

    Examples
    --------
    >>> from scsena import gene_sets as gs
    >>> gs.map_gene_ids(["TP53", "NOT_A_GENE"], to="ensembl").summary()
    'mapped 1 of 2 genes (50.0%) to ensembl: 1 directly, 0 through an alias; 1 unknown'
    >>> gs.map_gene_ids(["MARCH8", "SEPT2"], to="symbol").report()["status"].tolist()
    ['alias', 'ambiguous']
    """
    _check_target(to)
    arr = np.asarray([str(g) for g in genes], dtype=object)
    mapped, status, candidates = _map_array(arr, to, aliases)
    index = pd.Index(arr, name="input")
    series = pd.Series(mapped, index=index, name=to, dtype=object)
    missing = series.isna().to_numpy()
    result = GeneIdMapping(
        mapping=series,
        n_mapped=int((~missing).sum()),
        n_total=len(arr),
        unmapped=arr[missing].tolist(),
        to=to,
        status=pd.Series(status, index=index.copy(), name="status", dtype=object),
        candidates={g: list(c) for g, c in zip(arr, candidates) if c},
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
        Set name -> sorted unique mapped ids; outdated symbols are mapped through the alias
        table as in :func:`map_gene_ids`, unmapped and ambiguous members are dropped (a set
        may become empty). How many distinct member genes were mapped is logged at INFO level.
    """
    _check_target(to)
    names = list(gene_sets.keys())
    members = [list(gene_sets[n]) for n in names]
    universe = np.asarray(sorted({str(g) for m in members for g in m}), dtype=object)
    mapped = pd.Series(_map_array(universe, to)[0], index=universe, dtype=object)
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
