"""The gene x gene-set mask of SENA's first layer."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._go import go_term_names
from ._idmap import guess_id_type
from ._io import as_gene_sets

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
        Value of non-member entries in :meth:`to_dense` (SPEC's ``λ``, reference 0).
    term_names
        Human-readable term names (GO names for GO ids, else the id itself).
    """

    membership: sp.csr_matrix
    terms: list[str]
    sizes: np.ndarray
    var_names: list[str]
    lambda_: float
    term_names: list[str]

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
            f"n_pairs={self.membership.nnz}, lambda_={self.lambda_})"
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
    if var_type != set_type:
        return ValueError(
            f"{head} Use the same id type for both: map the gene sets with "
            f"scsena.gene_sets.map_gene_sets(gene_sets, to={var_type!r}), or map var_names "
            f"with scsena.gene_sets.map_gene_ids(var_names, to={set_type!r}); for the bundled "
            f'GO presets pass id_type="{var_type}".'
        )
    hint = ""
    if var_type == "ensembl" and pd.Index(var_names).str.contains(r"\.\d+$").any():
        hint = (
            " var_names carry Ensembl version suffixes (e.g. '.12'): strip them, e.g. "
            "adata.var_names = adata.var_names.str.replace(r'\\.\\d+$', '', regex=True)."
        )
    return ValueError(f"{head} Check that both describe the same organism and id namespace.{hint}")


def build_mask(
    var_names: Iterable[str],
    gene_sets: Any,
    min_genes: int = 5,
    lambda_: float = 0.0,
) -> GeneSetMask:
    """Build the gene x term mask of SENA's pathway layer.

    Keeps the gene-term pairs whose gene is in ``var_names`` and the terms with at least
    ``min_genes`` such genes, sorted by term id (SPEC section 2).

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

    Returns
    -------
    GeneSetMask
        The mask.

    Raises
    ------
    ValueError
        If ``var_names`` is empty or has duplicates, ``lambda_`` is outside ``[0, 1]``,
        ``min_genes`` is negative, no gene of the sets is in ``var_names``, or no term has
        ``min_genes`` genes. The messages say how to fix the input.
    """
    index = pd.Index([str(v) for v in var_names])
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

    if not isinstance(gene_sets, Mapping):
        gene_sets = as_gene_sets(gene_sets, id_type=guess_id_type(index))

    names = [str(k) for k in gene_sets.keys()]
    if len(set(names)) != len(names):
        raise ValueError("gene set names must be unique (after conversion to str)")
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
    gene_pos = index.get_indexer(genes)
    term_pos = np.repeat(np.arange(len(names)), lengths)
    hit = gene_pos >= 0
    if not hit.any():
        raise _no_overlap_error(index, genes)

    pairs = sp.csc_matrix(
        (np.ones(int(hit.sum()), dtype=np.float32), (gene_pos[hit], term_pos[hit])),
        shape=(len(index), len(names)),
    )
    pairs.sum_duplicates()
    pairs.data[:] = 1.0  # a gene listed twice in a set counts once
    sizes = np.diff(pairs.indptr)
    keep = np.flatnonzero(sizes >= min_genes)
    if keep.size == 0:
        n_overlap, largest = int((sizes > 0).sum()), int(sizes.max())
        raise ValueError(
            f"no gene set has min_genes={min_genes} member genes among var_names: "
            f"{n_overlap} of {len(names)} sets overlap var_names, the largest with "
            f"{largest} gene(s); lower min_genes (e.g. min_genes={max(largest, 1)}) "
            f"or use more genes / larger gene sets"
        )
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
    )
