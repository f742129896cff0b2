"""GO biological-process gene sets from the bundled human annotation."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._bundled import (
    gene_table,
    go_direct_table,
    go_parents_table,
    go_terms_table,
    sena_terms_table,
)
from ._io import GeneSets

#: Relationship types of the GO BP DAG, all used by default for propagation. Together they
#: reproduce Bioconductor's ``org.Hs.egGO2ALLEGS`` (the true-path rule over ``GOBPANCESTOR``).
RELATIONSHIPS: tuple[str, ...] = (
    "isa",
    "part of",
    "regulates",
    "negatively regulates",
    "positively regulates",
)

#: GO evidence codes (https://geneontology.org/docs/guide-go-evidence-codes/).
EVIDENCE_CODES: frozenset[str] = frozenset(
    "EXP IDA IPI IMP IGI IEP HTP HDA HMP HGI HEP IBA IBD IKR IRD ISS ISO ISA ISM IGC RCA "
    "TAS NAS IC ND IEA".split()
)

_ID_TYPES = ("ensembl", "symbol", "entrez")

_REL_ALIASES = {
    "is a": "isa",
    "is_a": "isa",
    "isa": "isa",
    "part of": "part of",
    "part_of": "part of",
    "partof": "part of",
    "regulates": "regulates",
    "negatively regulates": "negatively regulates",
    "negatively_regulates": "negatively regulates",
    "positively regulates": "positively regulates",
    "positively_regulates": "positively regulates",
}


# --------------------------------------------------------------------------- argument checks


def _normalise_relationships(relationships: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(relationships, str):
        relationships = [relationships]
    out = set()
    for rel in relationships:
        key = str(rel).strip().lower()
        if key not in _REL_ALIASES:
            raise ValueError(f"unknown GO relationship {rel!r}; choose among {list(RELATIONSHIPS)}")
        out.add(_REL_ALIASES[key])
    return tuple(sorted(out))


def _normalise_evidence(codes: Iterable[str] | str | None, name: str) -> tuple[str, ...] | None:
    if codes is None:
        return None
    if isinstance(codes, str):
        codes = [codes]
    norm = tuple(sorted({str(c).strip().upper() for c in codes}))
    unknown = [c for c in norm if c not in EVIDENCE_CODES]
    if unknown:
        raise ValueError(
            f"{name}: unknown GO evidence code(s) {unknown}; valid codes are "
            f"{sorted(EVIDENCE_CODES)}"
        )
    return norm


def _check_id_type(id_type: str) -> str:
    if id_type not in _ID_TYPES:
        raise ValueError(f"id_type must be one of {list(_ID_TYPES)}, got {id_type!r}")
    return id_type


# --------------------------------------------------------------------------- cached matrices


@functools.lru_cache(maxsize=1)
def _term_index() -> pd.Index:
    """Index of all GO BP term ids of the bundled release, sorted."""
    return pd.Index(go_terms_table()["go_id"].to_numpy())


@functools.lru_cache(maxsize=8)
def _ancestor_closure(relationships: tuple[str, ...]) -> sp.csr_matrix:
    """Boolean T x T matrix, ``R[i, j]`` true iff term j is term i or one of its ancestors.

    Computed by repeated squaring of ``I + A`` (A: child -> parent edges of the chosen types),
    which converges after ``ceil(log2(depth))`` products.
    """
    terms = _term_index()
    n = len(terms)
    edges = go_parents_table()
    edges = edges[edges["relationship"].isin(relationships)]
    child = terms.get_indexer(edges["go_id"])
    parent = terms.get_indexer(edges["parent_id"])
    ok = (child >= 0) & (parent >= 0)  # drops the edge to the pseudo-root "all"
    adj = sp.csr_matrix((np.ones(int(ok.sum()), dtype=bool), (child[ok], parent[ok])), shape=(n, n))
    closure = (sp.identity(n, dtype=bool, format="csr") + adj).tocsr()
    for _ in range(64):  # 2**64 > any path length
        nxt = (closure @ closure).tocsr()
        if nxt.nnz == closure.nnz:
            break
        closure = nxt
    return closure


@functools.lru_cache(maxsize=1)
def _entrez_index() -> pd.Index:
    genes = pd.concat([gene_table()["entrez_id"], go_direct_table()["entrez_id"]])
    return pd.Index(np.sort(genes.unique()))


@functools.lru_cache(maxsize=16)
def _annotation_matrix(
    propagate: bool,
    relationships: tuple[str, ...],
    evidence: tuple[str, ...] | None,
    exclude_evidence: tuple[str, ...] | None,
) -> sp.csr_matrix:
    """Boolean entrez x term annotation matrix (optionally propagated to ancestors)."""
    direct = go_direct_table()
    keep = np.ones(len(direct), dtype=bool)
    if evidence is not None:
        keep &= direct["evidence"].isin(evidence).to_numpy()
    if exclude_evidence is not None:
        keep &= ~direct["evidence"].isin(exclude_evidence).to_numpy()
    direct = direct[keep]
    terms = _term_index()
    genes = _entrez_index()
    rows = genes.get_indexer(direct["entrez_id"])
    cols = terms.get_indexer(direct["go_id"])
    ok = cols >= 0
    mat = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=bool), (rows[ok], cols[ok])),
        shape=(len(genes), len(terms)),
    )
    if propagate:
        mat = (mat @ _ancestor_closure(relationships)).tocsr()
    return mat


@functools.lru_cache(maxsize=4)
def _id_map_matrix(id_type: str) -> tuple[pd.Index, sp.csr_matrix]:
    """Entrez -> ``id_type`` as a boolean matrix (all targets of an Entrez id are kept)."""
    entrez = _entrez_index()
    if id_type == "entrez":
        return entrez, sp.identity(len(entrez), dtype=bool, format="csr")
    column = "ensembl_id" if id_type == "ensembl" else "symbol"
    table = gene_table()[["entrez_id", column]].dropna().drop_duplicates()
    table = table[table[column] != ""]
    ids = pd.Index(np.sort(table[column].unique()))
    mat = sp.csr_matrix(
        (
            np.ones(len(table), dtype=bool),
            (entrez.get_indexer(table["entrez_id"]), ids.get_indexer(table[column])),
        ),
        shape=(len(entrez), len(ids)),
    )
    return ids, mat


@functools.lru_cache(maxsize=16)
def _term_gene_matrix(
    propagate: bool,
    relationships: tuple[str, ...],
    evidence: tuple[str, ...] | None,
    exclude_evidence: tuple[str, ...] | None,
    id_type: str,
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Term x gene boolean matrix (CSR with sorted indices) and the gene ids of its columns."""
    ann = _annotation_matrix(propagate, relationships, evidence, exclude_evidence)
    ids, idmap = _id_map_matrix(id_type)
    mat = (ann.T.tocsr() @ idmap).tocsr()
    mat.sort_indices()
    return ids.to_numpy(dtype=object), mat


# --------------------------------------------------------------------------- public API


def sena_terms() -> list[str]:
    """GO BP term ids that SENA-discrepancy-VAE uses as gene sets.

    Returns
    -------
    list of str
        The 1,424 GO ids (column ``PathwayID`` of SENA's ``topGO_uhler.tsv``), sorted.
    """
    return sorted(set(sena_terms_table()["PathwayID"]))


def go_term_names(term_ids: Iterable[str] | str | None = None) -> pd.Series:
    """Names of GO biological-process terms (bundled GO release 2022-07-01).

    Parameters
    ----------
    term_ids
        GO ids to look up; ``None`` for all 28,140 BP terms.

    Returns
    -------
    pandas.Series
        Index ``go_id``, values the term names; ``NaN`` for ids that are not BP terms.
    """
    names = go_terms_table().set_index("go_id")["name"].rename("name")
    if term_ids is None:
        return names.copy()
    if isinstance(term_ids, str):
        term_ids = [term_ids]
    out = names.reindex(pd.Index([str(t) for t in term_ids], name="go_id"))
    return out


def _select_terms(terms: Iterable[str] | str | None) -> np.ndarray:
    """Row positions (in ``_term_index``) of the requested terms, sorted by id."""
    index = _term_index()
    if terms is None:
        return np.arange(len(index))
    if isinstance(terms, str):
        if terms == "sena":
            wanted = sena_terms()
        elif terms.startswith("GO:"):
            wanted = [terms]
        else:
            raise ValueError(
                f"terms must be None (all GO BP terms), 'sena' or a list of GO ids, got {terms!r}"
            )
    else:
        wanted = sorted({str(t) for t in terms})
    pos = index.get_indexer(wanted)
    if (pos < 0).any():
        unknown = [t for t, p in zip(wanted, pos) if p < 0]
        raise ValueError(
            f"{len(unknown)} term id(s) are not GO biological-process terms of the bundled "
            f"release (2022-07-01): {unknown[:10]}{' ...' if len(unknown) > 10 else ''}; "
            f"see scsena.gene_sets.go_term_names() for the known ids"
        )
    return np.sort(pos)


def go_bp(
    terms: Iterable[str] | str | None = None,
    *,
    propagate: bool = True,
    relationships: Iterable[str] | str = RELATIONSHIPS,
    evidence: Iterable[str] | str | None = None,
    exclude_evidence: Iterable[str] | str | None = None,
    min_size: int = 1,
    max_size: int | None = None,
    id_type: str = "ensembl",
) -> GeneSets:
    """Human GO biological-process gene sets.

    Built from the bundled direct annotations (Entrez Gene ``gene2go`` via Bioconductor's
    ``org.Hs.eg.db``, 2022; ``ND`` annotations dropped) and the GO BP DAG (release
    2022-07-01). With the defaults the result equals Bioconductor's ``org.Hs.egGO2ALLEGS``
    mapped to Ensembl gene ids, the table SENA uses.

    Parameters
    ----------
    terms
        ``None`` for all BP terms, ``"sena"`` for SENA's 1,424 terms (see
        :func:`sena_terms`), a single GO id or a list of GO ids. Unknown ids raise.
    propagate
        Apply the true-path rule: a gene annotated to a term is also a member of all its
        ancestors (over the ``relationships`` edges). ``False`` gives direct annotations only.
    relationships
        DAG edge types followed when propagating; any of ``"isa"``, ``"part of"``,
        ``"regulates"``, ``"negatively regulates"``, ``"positively regulates"``. The default,
        all five, reproduces Bioconductor's propagated table exactly.
    evidence
        Keep only direct annotations with these evidence codes (e.g. ``["EXP", "IDA"]``),
        before propagating.
    exclude_evidence
        Drop direct annotations with these evidence codes (e.g. ``"IEA"``), before
        propagating.
    min_size
        Keep terms with at least this many member genes (counted as ``id_type`` ids). The
        default 1 drops terms without genes: ``go_bp(terms="sena")`` has fewer than 1,424
        terms only if some have no annotated gene; pass ``min_size=0`` to keep every
        requested term, empty ones included.
    max_size
        Keep terms with at most this many member genes; ``None`` for no limit.
    id_type
        ``"ensembl"`` (Ensembl gene ids; an Entrez gene with several Ensembl ids contributes
        all of them), ``"symbol"`` (HGNC symbols) or ``"entrez"``.

    Returns
    -------
    dict
        GO id -> sorted unique gene ids, ordered by GO id.

    Examples
    --------
    >>> from scsena import gene_sets as gs
    >>> sets = gs.go_bp(terms="sena", min_size=0)
    >>> len(sets)
    1424
    """
    _check_sizes(min_size, max_size)
    ids, mat = _term_gene_matrix(
        bool(propagate),
        _normalise_relationships(relationships),
        _normalise_evidence(evidence, "evidence"),
        _normalise_evidence(exclude_evidence, "exclude_evidence"),
        _check_id_type(id_type),
    )
    rows = _select_terms(terms)
    sizes = np.diff(mat.indptr)[rows]
    keep = sizes >= min_size
    if max_size is not None:
        keep &= sizes <= max_size
    return _sets_of_rows(ids, mat, rows[keep])


def _check_sizes(min_size: int, max_size: int | None) -> None:
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if max_size is not None and max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")


def _sets_of_rows(ids: np.ndarray, mat: sp.csr_matrix, rows: np.ndarray) -> GeneSets:
    """GO id -> gene ids of the given rows of a term x gene matrix."""
    term_ids = _term_index().to_numpy()[rows]
    indptr = mat.indptr
    return {
        str(t): ids[mat.indices[indptr[r] : indptr[r + 1]]].tolist() for t, r in zip(term_ids, rows)
    }
