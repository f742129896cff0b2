"""The gene x gene-set mask of SENA's first layer."""

from __future__ import annotations

import itertools
import logging
import numbers
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._go import go_term_names
from ._idmap import GeneIdMapping, guess_id_type, map_gene_ids
from ._resolve import as_gene_sets

logger = logging.getLogger(__name__)
_UNS_FORMAT = "scsena.GeneSetMask"
_UNS_VERSION = 1


@dataclass(repr=False, eq=False)
class GeneSetMask:
    """Binary gene x term membership, with the fill value ``lambda_`` of SENA's mask.

    Attributes
    ----------
    membership
        ``G x T`` float32 CSR matrix, 1.0 where gene ``g`` belongs to term ``t``. Rows follow
        ``var_names``, columns ``terms``.
    terms
        Term ids of the columns, sorted.
    sizes
        ``(T,)`` int array: member genes among ``var_names`` per term (column sums).
    var_names
        Gene ids of the rows.
    lambda_
        Value of non-member entries in :meth:`to_dense` (SENA's ``λ``, reference 0).
    term_names
        Human-readable term names (GO names for GO ids, else the id itself).
    gene_ids
        How :func:`build_mask` matched symbol ``var_names`` to the gene sets (directly,
        through an alias, ambiguous, unmapped; see :class:`GeneIdMapping`), or ``None``.
        Not stored by :meth:`to_uns`.
    dropped_terms
        Terms :func:`build_mask` dropped for having fewer than ``min_genes`` (but at least
        one) member genes among ``var_names``: columns ``term``, ``name``, ``size``; ``None``
        when unknown (e.g. after :meth:`from_uns`). Not stored by :meth:`to_uns`.
    n_dropped
        Number of those terms (kept by :meth:`to_uns`), ``None`` when unknown.
    """

    membership: sp.csr_matrix
    terms: list[str]
    sizes: np.ndarray
    var_names: list[str]
    lambda_: float
    term_names: list[str]
    gene_ids: GeneIdMapping | None = field(default=None, compare=False)
    dropped_terms: pd.DataFrame | None = field(default=None, compare=False)
    n_dropped: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        shape = (len(self.var_names), len(self.terms))
        if self.membership.shape != shape:
            raise ValueError(
                f"membership has shape {self.membership.shape}, expected (len(var_names), "
                f"len(terms)) = {shape}"
            )
        if len(self.sizes) != len(self.terms) or len(self.term_names) != len(self.terms):
            raise ValueError("sizes and term_names must have one entry per term")

    @property
    def n_genes(self) -> int:
        """Number of genes (rows), G."""
        return len(self.var_names)

    @property
    def n_terms(self) -> int:
        """Number of terms (columns), T."""
        return len(self.terms)

    def __repr__(self) -> str:
        return (
            f"GeneSetMask(n_genes={self.n_genes}, n_terms={self.n_terms}, "
            f"n_pairs={self.membership.nnz}, lambda_={self.lambda_}"
            + ("" if self.n_dropped is None else f", n_dropped={self.n_dropped}")
            + ")"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneSetMask):
            return NotImplemented
        a, b = self.membership, other.membership
        return (
            self.terms == other.terms
            and self.var_names == other.var_names
            and self.term_names == other.term_names
            and self.lambda_ == other.lambda_
            and np.array_equal(self.sizes, other.sizes)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and (a != b).nnz == 0
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dense(self, dtype: Any = np.float32) -> np.ndarray:
        """Dense mask ``M`` (``G x T``): 1 for members, ``lambda_`` elsewhere.

        Parameters
        ----------
        dtype
            NumPy dtype of the result.

        Returns
        -------
        numpy.ndarray
            The mask.
        """
        out = np.full((self.n_genes, self.n_terms), self.lambda_, dtype=dtype)
        coo = self.membership.tocoo()
        out[coo.row, coo.col] = coo.data.astype(dtype)
        return out

    def gene_sets(self) -> dict[str, list[str]]:
        """Each term's measured member genes (``var_names`` order), as a collection.

        Returns
        -------
        dict
            Term ID -> member genes, in the order of :attr:`terms`.
        """
        member = sp.csc_matrix(self.membership)
        member.eliminate_zeros()
        var = np.asarray(self.var_names, dtype=object)
        return {
            str(term): var[member.indices[member.indptr[j] : member.indptr[j + 1]]].tolist()
            for j, term in enumerate(self.terms)
        }

    def to_uns(self) -> dict[str, Any]:
        """Plain content to store in ``adata.uns`` (survives ``write_h5ad``/``read_h5ad``).

        Returns
        -------
        dict
            NumPy arrays and scalars only; the membership as CSR ``data``/``indices``/
            ``indptr``/``shape`` arrays. Rebuild with :meth:`from_uns`.
        """
        m = self.membership.tocsr()
        return {
            "format": _UNS_FORMAT,
            "version": _UNS_VERSION,
            "shape": np.asarray(m.shape, dtype=np.int64),
            "data": np.asarray(m.data, dtype=np.float32),
            "indices": np.asarray(m.indices, dtype=np.int64),
            "indptr": np.asarray(m.indptr, dtype=np.int64),
            "terms": np.asarray(self.terms, dtype=str),
            "term_names": np.asarray(self.term_names, dtype=str),
            "var_names": np.asarray(self.var_names, dtype=str),
            "sizes": np.asarray(self.sizes, dtype=np.int64),
            "lambda_": float(self.lambda_),
            **({} if self.n_dropped is None else {"n_dropped": int(self.n_dropped)}),
        }

    @classmethod
    def from_uns(cls, d: Mapping[str, Any]) -> GeneSetMask:
        """Rebuild a mask from the output of :meth:`to_uns` (e.g. read back from h5ad).

        Parameters
        ----------
        d
            The stored dictionary.

        Returns
        -------
        GeneSetMask
            An exact copy of the stored mask.
        """
        if str(d.get("format", "")) != _UNS_FORMAT:
            raise ValueError(
                f"not a stored GeneSetMask (format {d.get('format')!r}); create one with "
                f"GeneSetMask.to_uns()"
            )
        shape = tuple(int(s) for s in np.asarray(d["shape"]))
        membership = sp.csr_matrix(
            (
                np.asarray(d["data"], dtype=np.float32),
                np.asarray(d["indices"], dtype=np.int32),
                np.asarray(d["indptr"], dtype=np.int64),
            ),
            shape=shape,
        )
        return cls(
            membership=membership,
            terms=_str_list(d["terms"]),
            sizes=np.asarray(d["sizes"], dtype=np.int64),
            var_names=_str_list(d["var_names"]),
            lambda_=float(d["lambda_"]),
            term_names=_str_list(d["term_names"]),
            n_dropped=int(d["n_dropped"]) if "n_dropped" in d else None,
        )


def _str_list(values: Any) -> list[str]:
    return [str(v) for v in np.asarray(values, dtype=object).ravel()]


def _examples(values: Iterable[str], n: int = 3) -> str:
    return ", ".join(repr(v) for v in itertools.islice(values, n))


def _no_overlap_error(var_names: pd.Index, genes: np.ndarray) -> ValueError:
    var_type = guess_id_type(var_names)
    set_type = guess_id_type(genes[:10000])
    head = (
        f"no gene of the gene sets is among var_names: var_names look like {var_type} ids "
        f"(e.g. {_examples(var_names)}) and the gene sets use {set_type} ids "
        f"(e.g. {_examples(genes)})."
    )
    versioned = pd.Index(var_names).astype(str).str.fullmatch(r"ENS[A-Z]*G\d+\.\d+")
    if versioned.mean() > 0.5:
        return ValueError(
            f"{head} var_names are versioned Ensembl IDs (e.g. {_examples(var_names)}); the "
            "gene sets use unversioned ones. Strip the version: "
            "`adata.var_names = adata.var_names.str.replace(r'\\.\\d+$', '', regex=True)` "
            "(then `adata.var_names_make_unique()`)."
        )
    if var_type != set_type:
        return ValueError(
            f"{head} Use the same id type for both: map the gene sets with "
            f"scsena.gene_sets.map_gene_sets(gene_sets, to={var_type!r}), or map var_names "
            f"with scsena.gene_sets.map_gene_ids(var_names, to={set_type!r}); for the bundled "
            f'GO presets pass id_type="{var_type}".'
        )
    return ValueError(f"{head} Check that both describe the same organism and id namespace.")


def _member_arrays(names: list[str], gene_sets: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """All member genes (object array) and the position of each one's gene set."""
    members = []
    for name, genes in zip(names, gene_sets.values()):
        if isinstance(genes, str | bytes) or not isinstance(genes, Iterable):
            raise TypeError(
                f"gene set {name!r} must be an iterable of gene ids, got {type(genes).__name__}"
            )
        members.append(genes if isinstance(genes, list | tuple | np.ndarray) else list(genes))
    lengths = np.fromiter((len(m) for m in members), dtype=np.int64, count=len(members))
    if lengths.sum() == 0:
        raise ValueError("the gene sets contain no genes at all")
    genes = np.fromiter(
        itertools.chain.from_iterable(members), dtype=object, count=int(lengths.sum())
    )
    if pd.api.types.infer_dtype(genes, skipna=False) != "string":
        genes = np.asarray([str(g) for g in genes], dtype=object)
    return genes, np.repeat(np.arange(len(names)), lengths)


def _alias_keys(
    index: pd.Index, genes: np.ndarray, aliases: bool
) -> tuple[pd.Index, GeneIdMapping | None]:
    """The names under which var_names are looked up in the gene sets, and the mapping report.

    A symbol var_name that is an outdated alias of exactly one gene is looked up under that
    gene's current symbol, unless the gene sets list the old name itself or the current
    symbol is already a var_name (or the target of another alias: then it is ambiguous).
    """
    if not aliases or guess_id_type(index) != "symbol":
        return index, None
    report = map_gene_ids(index, to="symbol")
    status = report.status.to_numpy().copy()
    mapped = report.mapping.to_numpy().copy()
    candidates = dict(report.candidates)
    keys = index.to_numpy(dtype=object).copy()
    pos = np.flatnonzero(status == "alias")
    target = pd.Index(mapped[pos])
    listed = pd.Index(keys[pos]).isin(genes)  # the gene sets use the old name themselves
    clash = target.isin(index) | target.duplicated(keep=False)
    use = ~listed & ~clash
    keys[pos[use]] = mapped[pos[use]]
    status[pos[listed]], mapped[pos[listed]] = "direct", keys[pos[listed]]
    bad = pos[~listed & clash]
    for p in bad:
        candidates[str(keys[p])] = [str(mapped[p])]
    status[bad], mapped[bad] = "ambiguous", np.nan
    missing = pd.isna(mapped)
    report = GeneIdMapping(
        mapping=pd.Series(mapped, index=report.mapping.index, name="symbol", dtype=object),
        n_mapped=int((~missing).sum()),
        n_total=len(keys),
        unmapped=index[missing].tolist(),
        to="symbol",
        status=pd.Series(status, index=report.mapping.index, name="status", dtype=object),
        candidates=candidates,
    )
    return pd.Index(keys), report


def _check_inputs(index: pd.Index, min_genes: Any, lambda_: Any) -> None:
    if len(index) == 0:
        raise ValueError("var_names is empty")
    if index.has_duplicates:
        dups = index[index.duplicated()].unique()
        raise ValueError(
            f"var_names has {len(dups)} duplicated gene id(s) (e.g. {_examples(dups)}); make "
            f"them unique first, e.g. adata.var_names_make_unique()"
        )
    if not isinstance(lambda_, numbers.Real) or not 0.0 <= float(lambda_) <= 1.0:
        raise ValueError(f"lambda_ must be a number in [0, 1], got {lambda_!r}")
    if isinstance(min_genes, bool) or not isinstance(min_genes, numbers.Integral):
        raise ValueError(f"min_genes must be an integer >= 0, got {min_genes!r}")
    if min_genes < 0:
        raise ValueError(f"min_genes must be >= 0, got {min_genes}")


def _overlap(
    index: pd.Index, gene_sets: Any, aliases: bool
) -> tuple[list[str], sp.csc_matrix, GeneIdMapping | None]:
    """Set names, the gene x set membership among ``index`` (all sets) and the alias report."""
    if not isinstance(gene_sets, Mapping):
        gene_sets = as_gene_sets(gene_sets, id_type=guess_id_type(index))
    names = [str(k) for k in gene_sets.keys()]
    if len(set(names)) != len(names):
        raise ValueError("gene set names must be unique (after conversion to str)")
    genes, term_pos = _member_arrays(names, gene_sets)
    keys, report = _alias_keys(index, genes, aliases)
    gene_pos = keys.get_indexer(genes)
    hit = gene_pos >= 0
    if not hit.any():
        raise _no_overlap_error(index, genes)
    pairs = sp.csc_matrix(
        (np.ones(int(hit.sum()), dtype=np.float32), (gene_pos[hit], term_pos[hit])),
        shape=(len(index), len(names)),
    )
    pairs.sum_duplicates()
    pairs.data[:] = 1.0  # a gene listed twice in a set counts once
    return names, pairs, report


def _term_table(terms: list[str], sizes: np.ndarray) -> pd.DataFrame:
    """``term``, ``name`` (GO name for GO ids, else the id) and ``size``, by size then id."""
    lookup = go_term_names([t for t in terms if t.startswith("GO:")]).dropna().to_dict()
    table = pd.DataFrame(
        {
            "term": pd.Series(terms, dtype=object),
            "name": pd.Series([str(lookup.get(t, t)) for t in terms], dtype=object),
            "size": np.asarray(sizes, dtype=np.int64),
        }
    )
    return table.sort_values(["size", "term"], ascending=[False, True], ignore_index=True)


def _keep_positions(
    names: list[str], sizes: np.ndarray, min_genes: int, keep_terms: Iterable[str] | str | None
) -> np.ndarray:
    """Positions of the kept sets: ``min_genes`` members, or named in ``keep_terms``."""
    keep = sizes >= min_genes
    if keep_terms is None:
        return keep
    wanted = [keep_terms] if isinstance(keep_terms, str) else [str(t) for t in keep_terms]
    pos = pd.Index(names).get_indexer(wanted)
    unknown = [t for t, p in zip(wanted, pos) if p < 0]
    if unknown:
        raise ValueError(
            f"keep_terms names {len(unknown)} term(s) that are not in the gene sets: "
            f"{unknown[:10]}; use term ids of the collection (e.g. 'GO:0071346')"
        )
    empty = [t for t, p in zip(wanted, pos) if sizes[p] == 0]
    if empty:
        raise ValueError(
            f"keep_terms names {len(empty)} term(s) without any member gene among var_names: "
            f"{empty[:10]}; a term needs at least one measured gene"
        )
    keep[pos] = True
    return keep


def _report_dropped(dropped: pd.DataFrame, n_kept: int, min_genes: int) -> None:
    if dropped.empty:
        return
    message = (
        f"build_mask: kept {n_kept:,} gene sets; {len(dropped):,} more have "
        f"{'1' if min_genes == 2 else f'1 to {min_genes - 1}'} member gene(s) among var_names "
        f"(fewer than min_genes={min_genes}) and were dropped. List them with "
        f"scsena.gene_sets.dropped_terms(var_names, gene_sets) (term, name, size) and keep "
        f"chosen ones with keep_terms=[...]."
    )
    logger.info(message)


def _report_aliases(report: GeneIdMapping | None) -> None:
    if report is None:
        return
    counts = report.counts()
    logger.info("build_mask: var_names %s", report.summary())
    if not (counts["alias"] or counts["ambiguous"]):
        return
    aliased = ", ".join(f"{a} -> {b}" for a, b in list(report.aliased.items())[:3])
    message = (
        f"build_mask: {counts['alias']:,} var_name(s) are previous or alternative gene symbols, "
        f"matched to the gene sets through their current symbol"
        + (f" ({aliased}{', ...' if counts['alias'] > 3 else ''})" if aliased else "")
    )
    if counts["ambiguous"]:
        amb = list(report.ambiguous.items())[:3]
        message += (
            f"; {counts['ambiguous']:,} ambiguous, in no gene set ("
            + ", ".join(f"{a}: {' or '.join(b)}" for a, b in amb)
            + "): rename them to the intended current symbol to include them"
        )
    message += (
        ". Full report: scsena.gene_sets.map_gene_ids(var_names, to='symbol').report(); "
        "aliases=False turns this off."
    )
    warnings.warn(message, UserWarning, stacklevel=3)


def _small_panel_error(
    index: pd.Index, names: list[str], sizes: np.ndarray, min_genes: int, gene_sets: Any
) -> ValueError:
    n_overlap, largest = int((sizes > 0).sum()), int(sizes.max())
    head = (
        f"no gene set has min_genes={min_genes} member genes among var_names: "
        f"{n_overlap} of {len(names)} sets overlap var_names, the largest with "
        f"{largest} gene(s)."
    )
    lower = f"lower min_genes (e.g. min_genes={max(largest, 1)})"
    if isinstance(gene_sets, str) and gene_sets == "go_bp_sena":
        full = _overlap(index, "go_bp", aliases=True)[1]
        n_full = int((np.diff(full.indptr) >= min_genes).sum())
        if n_full:
            return ValueError(
                f"{head} SENA's 1,424 GO terms are too few for these genes (a targeted panel?); "
                f'the full GO BP collection keeps {n_full:,} terms here: pass gene_sets="go_bp". '
                f"Otherwise {lower}."
            )
    return ValueError(f"{head} Use larger gene sets (e.g. gene_sets=\"go_bp\"), or {lower}.")


def build_mask(
    var_names: Iterable[str],
    gene_sets: Any,
    min_genes: int = 5,
    lambda_: float = 0.0,
    *,
    keep_terms: Iterable[str] | str | None = None,
    aliases: bool = True,
) -> GeneSetMask:
    """Build the gene x term mask of SENA's pathway layer.

    Keeps the gene-term pairs whose gene is in ``var_names`` and the terms with at least
    ``min_genes`` such genes (plus the terms named in ``keep_terms``), sorted by term id.
    Gene symbols in ``var_names`` that are previous or alternative symbols of exactly one
    gene (e.g. ``MARCH8``, now ``MARCHF8``) are matched to the gene sets through the current
    symbol; ambiguous ones (e.g. ``SEPT2``: ``SEPTIN2`` or ``SEPTIN6``) are not, and a
    warning names both kinds. How many terms ``min_genes`` dropped is logged (INFO) and
    kept as ``mask.n_dropped`` (a model's summary shows it); ``mask.dropped_terms`` or
    :func:`dropped_terms` lists them.

    Parameters
    ----------
    var_names
        Gene ids of the model's input features (``adata.var_names``), unique.
    gene_sets
        Term -> member genes mapping, or anything :func:`as_gene_sets` accepts (``"go_bp_sena"``,
        ``"go_bp"``, a ``.gmt`` path, a long DataFrame); for the GO presets the gene id type is
        guessed from ``var_names``.
    min_genes
        Minimum number of member genes among ``var_names`` for a term to be kept
        (reference 5).
    lambda_
        Value of non-member entries of the dense mask, in ``[0, 1]`` (reference 0).
    keep_terms
        Term ids kept whatever their size (each needs at least one member gene among
        ``var_names``), e.g. ``["GO:0071346", "GO:0060333"]``.
    aliases
        Match outdated symbols in ``var_names`` through the bundled human alias table
        (symbol ``var_names`` only); ``False`` uses ``var_names`` exactly as they are.

    Returns
    -------
    GeneSetMask
        The mask; ``mask.gene_ids`` is the alias report of the var_names
        (:class:`GeneIdMapping`, ``None`` for Ensembl ids or ``aliases=False``) and
        ``mask.dropped_terms`` the terms dropped by ``min_genes``.

    Raises
    ------
    ValueError
        If ``var_names`` is empty or has duplicates, ``lambda_`` is outside ``[0, 1]``,
        ``min_genes`` is negative, no gene of the sets is in ``var_names``, no term has
        ``min_genes`` genes (for ``"go_bp_sena"`` the message says how many terms the full
        ``"go_bp"`` collection keeps), or ``keep_terms`` names an unknown or empty term. The
        messages say how to fix the input.
    """
    index = pd.Index([str(v) for v in var_names])
    _check_inputs(index, min_genes, lambda_)
    names, pairs, report = _overlap(index, gene_sets, aliases)
    sizes = np.diff(pairs.indptr)
    keep = np.flatnonzero(_keep_positions(names, sizes, min_genes, keep_terms))
    if keep.size == 0:
        raise _small_panel_error(index, names, sizes, min_genes, gene_sets)
    dropped = _small_terms(names, sizes, min_genes, kept=keep)
    _report_aliases(report)
    _report_dropped(dropped, len(keep), min_genes)
    return _mask_of_terms(
        index,
        names,
        pairs,
        keep,
        lambda_,
        gene_ids=report,
        dropped_terms=dropped,
        n_dropped=len(dropped),
    )


def _small_terms(
    names: list[str], sizes: np.ndarray, min_genes: int, kept: np.ndarray | None = None
) -> pd.DataFrame:
    """Term table of the sets with 1 to ``min_genes - 1`` genes, other than ``kept``."""
    small = np.flatnonzero((sizes > 0) & (sizes < min_genes))
    if kept is not None:
        small = np.setdiff1d(small, kept)
    return _term_table([names[i] for i in small], sizes[small])


def _mask_of_terms(
    index: pd.Index,
    names: list[str],
    pairs: sp.csc_matrix,
    keep: np.ndarray,
    lambda_: float,
    **report: Any,
) -> GeneSetMask:
    """The mask of the sets at positions ``keep`` of ``pairs``, sorted by term id.

    ``report`` holds the mask's report fields (``gene_ids``, ``dropped_terms``,
    ``n_dropped``).
    """
    sizes = np.diff(pairs.indptr)
    kept_names = np.asarray(names, dtype=object)[keep]
    order = keep[np.argsort(kept_names.astype(str), kind="stable")]
    membership = pairs[:, order].tocsr()
    membership.sort_indices()
    terms = [names[i] for i in order]
    go_names = go_term_names([t for t in terms if t.startswith("GO:")])
    lookup = go_names.dropna().to_dict()
    return GeneSetMask(
        membership=membership.astype(np.float32),
        terms=terms,
        sizes=sizes[order].astype(np.int64),
        var_names=index.tolist(),
        lambda_=float(lambda_),
        term_names=[str(lookup.get(t, t)) for t in terms],
        **report,
    )


def dropped_terms(
    var_names: Iterable[str], gene_sets: Any, min_genes: int = 5, *, aliases: bool = True
) -> pd.DataFrame:
    """Gene sets that :func:`build_mask` drops for having too few genes among ``var_names``.

    Parameters
    ----------
    var_names
        Gene ids of the model's input features (``adata.var_names``).
    gene_sets
        As in :func:`build_mask` (``"go_bp_sena"``, ``"go_bp"``, a GMT path, a dict ...).
    min_genes
        The threshold of :func:`build_mask`.
    aliases
        As in :func:`build_mask`.

    Returns
    -------
    pandas.DataFrame
        Columns ``term``, ``name`` (GO name for GO ids, else the id) and ``size`` (member
        genes among ``var_names``, from 1 to ``min_genes - 1``), largest first. Pass chosen
        ``term`` values as ``keep_terms`` to keep them.

    Examples
    --------
    >>> from scsena import gene_sets as gs
    >>> table = gs.dropped_terms(adata.var_names, "go_bp")  # doctest: +SKIP
    >>> table[table["name"].str.contains("interferon-gamma")]  # doctest: +SKIP
    """
    index = pd.Index([str(v) for v in var_names])
    _check_inputs(index, min_genes, 0.0)
    names, pairs, _ = _overlap(index, gene_sets, aliases)
    return _small_terms(names, np.diff(pairs.indptr), min_genes)
